"""qmail-group: the LDAP mail-group expander (qmail-ldap's qmail-group.c; spec 4.9).

    qmail-group maildir

qmail-local runs it for an entry with objectClass qmailGroup (QLDAPGROUP =
the entry's DN), with the message on fd 0 and qmail-command's environment.
It binds with control/ldapgrouplogin / ldapgrouppassword (else ldaplogin /
ldappassword), reads the group entry (base scope) and then:

  * the first dash field of EXT is an action: confirm, approve, reject ->
    qmail-secretary; moderators -> the moderators; return -> bounceadmin;
    bounce-<hash> -> bounceadmin, or qmail-secretary without one; anything
    else is "Sorry, no mailbox here by that name. (#5.1.1)";
  * a new post: membersonly -> the sender must be listed (rfc822member, or
    the sender attributes when any exists) or its own entry (found with the
    qmail-lspawn lookup) be listed by DN or match a member/sender filter;
    senderconfirm or moderators -> qmail-secretary holds the message;
  * the members (rfc822member, mail of each dnmember entry, mail of every
    entry a filtermember matches) get one message through qmail-queue with
    `Delivered-To: <list>@<host>` and `Precedence: bulk`; the envelope
    sender is the poster's, or `<list>-return-@<host>-@[]` (VERP) when the
    group has a bounceadmin.

Exit 0 with `qmail-group: ok <time> qp <pid>.`, 100 for a refusal, 111 for
anything temporary: a directory that is down or slow defers, never bounces.
Texts go to stderr, which qmail-local puts in the delivery report.
"""

import dataclasses
import os
import subprocess
import sys
import time

import ldap

from engine import conf, control, qldap, qq

FATAL = "qmail-group: fatal: "
PERMANENT_EXITS = {100, 64, 65, 70, 76, 77, 78, 112}
NOT_ALLOWED = "You are not allowed to post to this list. (#5.7.2)"

GROUP_ATTRS = ["senderconfirm", "membersonly", "confirmtext", "moderatortext", "dnmoderator",
               "rfc822moderator", "dnmember", "rfc822member", "filtermember", "dnsender",
               "rfc822sender", "filtersender", "bounceadmin"]
MAIL_ATTRS = ["mail"]


class Fatal(Exception):
    """Stop with exit `code`; `text` is printed as is (callers add FATAL where qmail-group does)."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text


def err_str(e):
    """qldap_err_str() for our directory errors."""
    if isinstance(e, qldap.BindTimeout):
        return "ldap server down or unreachable"
    if isinstance(e, qldap.LdapAuth):
        return "wrong bind password for ldap server"
    if isinstance(e, qldap.SearchTimeout):
        return "operation timed out"
    if isinstance(e, qldap.TooMany):
        return "too many objects"
    if isinstance(e, (qldap.IllVal, BadValue)):
        return "bad value"
    return "unspecified error"


class BadValue(qldap.QldapError):
    """A boolean attribute that is not TRUE/1/FALSE/0."""


class NoSuchGroup(qldap.QldapError):
    """The QLDAPGROUP entry is gone."""


def ldap_trouble(what, e):
    text = "no such object" if isinstance(e, NoSuchGroup) else err_str(e)
    return Fatal(111, f"{FATAL}{what}{text}")


# -- the group entry ------------------------------------------------------------

def boolean(entry, name):
    """qldap_get_bool: TRUE/1/FALSE/0 in any case; absent is False."""
    v = entry.single(name)
    if v is None:
        return False
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise BadValue(f"{name}: {v!r}")


@dataclasses.dataclass
class Group:
    entry: qldap.Entry
    confirm: bool
    membersonly: bool
    bounceadmin: list
    moderators: list

    def values(self, name):
        return self.entry.values(name) or []

    @property
    def sender_attrs(self):
        """membersonly with any sender attribute: only the sender attributes count (flagS)."""
        return self.membersonly and any(self.entry.values(a) for a in ("dnsender", "rfc822sender", "filtersender"))


def read_group(directory, dn):
    """The group entry by base search; NoSuchGroup when it is gone."""
    found = directory.search("(objectClass=*)", GROUP_ATTRS, base=dn, scope=ldap.SCOPE_BASE)
    if len(found) != 1:
        raise NoSuchGroup(dn) if not found else qldap.TooMany(dn)
    return found[0]


def mail_of_dns(directory, dns):
    """`mail` of each entry named by DN (missing entries and entries without mail are skipped)."""
    out = []
    for dn in dns:
        found = directory.search("(objectClass=*)", MAIL_ATTRS, base=dn, scope=ldap.SCOPE_BASE)
        if found and found[0].single("mail") is not None:
            out.append(found[0].single("mail"))
    return out


def mail_of_filters(directory, filters):
    """`mail` of every entry under ldapbasedn matching each administrator-written filter."""
    out = []
    for filt in filters:
        for entry in directory.search(filt, MAIL_ATTRS):
            if entry.single("mail") is not None:
                out.append(entry.single("mail"))
    return out


def load_group(directory, dn, env):
    """ldapgroup(): the flags, texts (CONFIRMMESS/APPROVEMESS for qmail-secretary) and moderators."""
    try:
        entry = read_group(directory, dn)
        confirm, membersonly = boolean(entry, "senderconfirm"), boolean(entry, "membersonly")
        for attr, var in (("confirmtext", "CONFIRMMESS"), ("moderatortext", "APPROVEMESS")):
            text = entry.single(attr)
            if text is None:
                env.pop(var, None)
            else:
                env[var] = text
    except qldap.QldapError as e:
        raise ldap_trouble("get ldap group entry: ", e) from None
    try:
        moderators = (entry.values("rfc822moderator") or []) + mail_of_dns(directory, entry.values("dnmoderator") or [])
    except qldap.QldapError as e:
        raise ldap_trouble("expand group: moderators: ", e) from None
    return Group(entry, confirm, membersonly, entry.values("bounceadmin") or [], moderators)


def members(directory, group):
    """explode(): every member address, each once (case-insensitive), in attribute order."""
    try:
        addrs = (group.values("rfc822member") + mail_of_dns(directory, group.values("dnmember"))
                 + mail_of_filters(directory, group.values("filtermember")))
    except qldap.QldapError as e:
        raise ldap_trouble("expand group: members: ", e) from None
    seen, out = set(), []
    for a in addrs:
        if a.lower() not in seen:
            seen.add(a.lower())
            out.append(a)
    return out


def same_dn(a, b):
    try:
        return ldap.dn.str2dn(a.lower()) == ldap.dn.str2dn(b.lower())
    except ldap.DECODING_ERROR:
        return a.lower() == b.lower()


def check_sender(directory, group, sender):
    """subscribed(): may `sender` post to a membersonly group? Fatal 100 when not."""
    kind = "sender" if group.sender_attrs else "member"
    if any(sender.lower() == a.lower() for a in group.values("rfc822" + kind)):
        return
    try:
        # the qmail-lspawn lookup: the sender address is escaped, so it cannot widen the search
        hit = directory.lookup(sender, MAIL_ATTRS)
        if hit is None:
            raise Fatal(100, FATAL + NOT_ALLOWED)
        dn = hit[0].dn
        if any(same_dn(dn, listed) for listed in group.values("dn" + kind)):
            return
        for filt in group.values("filter" + kind):
            if directory.search(filt, MAIL_ATTRS, base=dn, scope=ldap.SCOPE_BASE):
                return
    except qldap.QldapError as e:
        raise Fatal(111, f"{FATAL}sender {sender} verification failed: {err_str(e)}") from None
    raise Fatal(100, FATAL + NOT_ALLOWED)


# -- the message -------------------------------------------------------------------

class Message:
    """The message on fd 0 (or a held one), with the poster's address."""

    def __init__(self, data, sender):
        self.data, self.sender = data, sender

    def header_lines(self):
        for line in self.data.split(b"\n"):
            if not line:
                return
            yield line + b"\n"


def read_fd(fd):
    """The whole message; fd 0 stays at its start for qmail-secretary."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise Fatal(111, FATAL + "Unable to read message. (#4.3.0)") from None
    return b"".join(chunks)


def check_loop(message, dtline):
    """bouncefx(): our own Delivered-To line in the header means a loop."""
    if dtline in message.header_lines():
        raise Fatal(100, FATAL + "this message is looping: it already has my Delivered-To line. (#5.4.6)")


def held_message(path):
    """reopen() + reset_sender(): a message qmail-secretary released, its poster from Return-Path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Fatal(111, f"{FATAL}Unable to reopen old message: {e.strerror}") from None
    msg = Message(data, None)
    for line in msg.header_lines():
        if line[:12].lower() == b"return-path:":
            lt, gt = line.find(b"<"), line.rfind(b">")
            if lt >= 0 and gt > lt:
                msg.sender = line[lt + 1:gt].decode("utf-8", "surrogateescape")
                break
    return msg


# -- qmail-secretary ---------------------------------------------------------------

def secretary(maildir, confirm, moderators, env):
    """Run qmail-secretary on fd 0; the path of a released message, or None (held: exit 0 here)."""
    args = ["qmail-secretary", "-Zc" if confirm else "-ZC"]
    for m in moderators:
        args += ["-m", m]
    args.append(maildir)
    os.lseek(0, 0, os.SEEK_SET)
    try:
        proc = subprocess.run(args, stdin=0, stdout=subprocess.PIPE, env=env)
    except OSError as e:
        raise Fatal(111, f"Unable to run secretary: {e.strerror}. (#4.3.0)") from None
    if proc.returncode < 0:
        raise Fatal(111, FATAL + "Aack, child crashed.")
    if proc.returncode in PERMANENT_EXITS:
        raise Fatal(100, "")
    if proc.returncode not in (0, 99):
        raise Fatal(111, "")
    if not proc.stdout:
        raise Fatal(0, "")  # held for confirmation or moderation
    if proc.stdout[:1] != b"K":
        raise Fatal(111, FATAL + "Strange secretary dialect")
    return os.fsdecode(proc.stdout[1:].split(b"\0", 1)[0])


# -- sending -------------------------------------------------------------------------

def blast(recipients, message, dtline, envelope_sender, env):
    """One message to every recipient; Fatal(0, "qmail-group: ok ...") on success."""
    if not recipients:
        raise Fatal(100, FATAL + "no recipients found in this group.")
    enc = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731
    try:
        result, qp = qq.submit_with_qp([dtline + b"Precedence: bulk\n", message.data], enc(envelope_sender),
                                       [enc(r) for r in recipients], env=env)
    except OSError as e:
        raise Fatal(111, f"{FATAL}Unable to fork: {e.strerror}") from None
    if result:
        raise Fatal(100 if result[:1] == "D" else 111, f"Unable to blast message: {result[1:]}.")
    return f"qmail-group: ok {int(time.time())} qp {qp}."


# -- setup -------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
    sender: str
    host: str
    base: str      # the list's local part
    action: str    # first dash field of EXT ("" for a new post)
    ext: str       # the rest of EXT after the action (a hash)
    dn: str

    @property
    def dtline(self):
        return f"Delivered-To: {self.base}@{self.host}".replace("\n", "_").encode("utf-8", "surrogateescape") + b"\n"

    @property
    def verp_sender(self):
        return f"{self.base}-return-@{self.host}-@[]"


def context(env):
    for name in ("SENDER", "LOCAL", "HOST", "QLDAPGROUP"):
        if name not in env:
            raise Fatal(100, f"{FATAL}{name} not set")
    local, ext = env["LOCAL"], env.get("EXT", "")
    if ext:
        base = local[:len(local) - len(ext) - 1]
        action, _, rest = ext.partition(conf.BREAK)
    else:
        base, action, rest = local, "", ""
    return Context(env["SENDER"], env["HOST"], base, action, rest, env["QLDAPGROUP"])


def group_directory(home):
    """A Directory bound with the group credentials (ldapgrouplogin, else ldaplogin)."""
    try:
        cfg = qldap.Config.load(home, login_fallback=True)
        if os.path.exists(control.path("ldapgrouplogin", home)):
            login = control.read_line("ldapgrouplogin", "", home)
            password = control.read_line("ldapgrouppassword", "", home)
            cfg = dataclasses.replace(cfg, login=login, password=password)
    except control.ControlError as e:
        raise Fatal(111, f"{FATAL}unable to read controls: {e}") from None
    return qldap.Directory(cfg)


def run(argv, env):
    if len(argv) != 1:
        raise Fatal(100, "qmail-group: usage: qmail-group Maildir")
    maildir = argv[0]
    ctx = context(env)
    message = Message(read_fd(0), ctx.sender)
    check_loop(message, ctx.dtline)
    with group_directory(env.get("QMAILHOME")) as directory:
        group = load_group(directory, ctx.dn, env)
        released = dispatch(ctx, group, message, maildir, directory, env)
        if released:
            message = held_message(released)
        recipients = members(directory, group)
    sender = ctx.verp_sender if group.bounceadmin else message.sender
    ok = blast(recipients, message, ctx.dtline, sender, env)
    if released:
        try:
            os.unlink(released)
        except OSError:
            pass
    return ok


def dispatch(ctx, group, message, maildir, directory, env):
    """The action of the address, or the new-post checks; a released message path or None.

    Actions that end the run raise Fatal (exit 0 included)."""
    action = ctx.action.lower()
    if not ctx.action:
        if group.membersonly:
            check_sender(directory, group, ctx.sender)
        if group.confirm or group.moderators:
            return secretary(maildir, group.confirm, group.moderators, env)
        return None
    if action in ("confirm", "approve", "reject"):
        return secretary(maildir, group.confirm, group.moderators, env)
    if action == "moderators" and group.moderators and not ctx.ext:
        raise Fatal(0, blast(group.moderators, message, ctx.dtline, message.sender, env))
    if action == "return":
        raise Fatal(0, blast(group.bounceadmin, message, ctx.dtline, message.sender, env))
    if action == "bounce" and ctx.ext:
        if group.bounceadmin:
            raise Fatal(0, blast(group.bounceadmin, message, ctx.dtline, message.sender, env))
        return secretary(maildir, group.confirm, group.moderators, env)
    raise Fatal(100, FATAL + "Sorry, no mailbox here by that name. (#5.1.1)")


def main(argv=None):
    env = dict(os.environ)
    try:
        text, code = run(sys.argv[1:] if argv is None else argv, env), 0
    except Fatal as e:
        text, code = e.text, e.code
    if text:
        sys.stderr.write(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
