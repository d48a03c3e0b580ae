"""qmail-ldaplookup: the administrator's view of one directory lookup (qmail-ldaplookup.c).

usage:  qmail-ldaplookup [-d level] [-D binddn -w passwd] -u uid [-p passwd]
        qmail-ldaplookup [-d level] [-D binddn -w passwd] -m mail
        qmail-ldaplookup [-d level] [-D binddn -w passwd] -f ldapfilter

-m runs the same rounds as qmail-lspawn (exact address, dash-extension
catchalls, catchall@domain, aliasdomains applied) and prints each filter; -u
searches (uid=...) like the POP/IMAP/SMTP-AUTH tools; -f takes a raw filter.
For every entry found it prints the attributes as qmail-ldaplookup.c does
(in its order, with the derived values: resolved home and aliasEmpty, default
uid/gid/dot mode/quotas applied, the forward-only block), which round matched,
and the delivery qmail-lspawn would run (qmail-local's user, uid/gid, home,
default delivery, dash/ext and environment, then the mailbox, forwards,
programs and auto-reply that result) or the report it would give instead.
When no round matches it says what qmail-lspawn does then. -p (root only) checks a password against userPassword,
or by re-binding as the entry when control/ldaprebind is 1.

-d takes qmail-ldap's LOGLEVEL bit mask ($LOGLEVEL or $DEBUGLEVEL when -d is
not given); this tool logs to stderr with
  64  the LDAP control files as read, failed searches,
  128 connect/bind steps and every successful search,
  256 password debugging: the bind password and the stored/compared passwords.

Exit codes: 0 done (also when nothing is found), 1 usage, 111 control files
unreadable, directory unreachable or bind refused (one line on stderr).
"""

import getopt
import os
import sys

from engine import conf, control, lspawn, passwd, qldap

PROG = "qmail-ldaplookup"
FATAL = PROG + ": fatal: "
WARN = PROG + ": warning: "
RULE = "-------------------------------------------------------"
LOG_LDAP, LOG_LDAP2, LOG_PASSWD = 64, 128, 256  # qldap-debug.c's LOGLEVEL bits
DISPLAY_ATTRS = ["mail", "mailAlternateAddress", *qldap.DELIVERY_ATTRS]
USAGE = (f"usage:\t{PROG} [-d level] [-D binddn -w passwd] -u uid [-p passwd]\n"
         f"\t{PROG} [-d level] [-D binddn -w passwd] -m mail\n"
         f"\t{PROG} [-d level] [-D binddn -w passwd] -f ldapfilter\n"
         "options:\n"
         "\t-d level \tsets log-level to level\n"
         "\t-u uid   \tsearch for user id uid (pop3/imap lookup)\n"
         "\t-p passwd\tpassword for user id lookups (only by root)\n"
         "\t-m mail  \tlookup the mailaddress\n"
         "\t-D binddn\tbind DN\n"
         "\t-w passwd\tbind password\n")


class Usage(Exception):
    pass


class Fatal(Exception):
    """A one-line error; exit 111 (1 for a refused option)."""

    def __init__(self, message, code=111):
        super().__init__(message)
        self.code = code


def parse_args(argv):
    """{'mode': 'uid'|'mail'|'filter', 'value', 'password', 'binddn', 'bindpw', 'level'}."""
    try:
        opts, rest = getopt.getopt(argv, "d:D:u:m:p:f:w:")
    except getopt.GetoptError as e:
        raise Usage(str(e)) from e
    a = {"mode": None, "value": None, "password": None, "binddn": None, "bindpw": None,
         "level": _ulong_prefix(os.environ.get("LOGLEVEL") or os.environ.get("DEBUGLEVEL") or "")}
    for opt, val in opts:
        if opt in ("-u", "-m", "-f"):
            if a["mode"] is not None:
                raise Usage("only one of -u, -m, -f")
            a["mode"], a["value"] = {"-u": "uid", "-m": "mail", "-f": "filter"}[opt], val
        elif opt == "-p":
            if os.geteuid() != 0:
                raise Fatal("only the superuser may compare passwords", 1)
            a["password"] = val
        elif opt == "-d":
            a["level"] = _ulong_prefix(val)
        elif opt == "-D":
            a["binddn"] = val
        elif opt == "-w":
            a["bindpw"] = val
    if rest or a["mode"] is None or (a["bindpw"] is not None and a["binddn"] is None):
        raise Usage("bad arguments")
    return a


def _ulong_prefix(text):
    """scan_ulong: the leading decimal digits, 0 when none (as -d and $LOGLEVEL are read)."""
    digits = len(text) - len(text.lstrip("0123456789"))
    return int(text[:digits]) if digits else 0


class Printer:
    """say(...) writes result lines to stdout; log(bit, text) writes debug lines to stderr when
    `bit` is in the -d mask."""

    def __init__(self, out, level=0, err=None):
        self.out, self.level, self.err = out, level, err or sys.stderr

    def __call__(self, *lines):
        for line in lines:
            self.out.write(line + "\n")

    def log(self, bit, text):
        if self.level & bit:
            self.err.write(f"{PROG}: {text}\n")


def filters(args, cfg):
    """[(filter, Round or None)] to try in order."""
    if args["mode"] == "mail":
        return [(qldap.address_filter(r.address, cfg.objectclass), r)
                for r in qldap.mail_rounds(args["value"], cfg.aliasdomains, cfg.dash_ext)]
    if args["mode"] == "uid":
        return [(qldap.uid_filter(args["value"], cfg.objectclass), None)]
    return [(args["value"], None)]


def search_rounds(d, args, cfg, say):
    """Run the rounds until one finds something; (entries, Round)."""
    attrs = list(DISPLAY_ATTRS)
    if args["password"] is not None and args["mode"] == "uid" and not cfg.rebind:
        attrs.append("userPassword")
    todo = filters(args, cfg)
    if not todo:
        say(f"{args['value']}: not an address with a local part and '@domain'; "
            "qmail-lspawn does no LDAP lookup for it.")
    for filt, rnd in todo:
        say(f"Searching ldap for: {filt}", f"under dn: {cfg.basedn}")
        try:
            entries = d.search(filt, attrs)
        except qldap.QldapError as e:
            say.log(LOG_LDAP, f"qldap_filter: search for {filt} failed ({e.detail or e.text})")
            raise
        say.log(LOG_LDAP2, f"qldap_filter: search for {filt} succeeded ({len(entries)} found)")
        if not entries:
            say("No entries found.", "")
            continue
        say(f"Found {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}:")
        if len(entries) > 1 and args["mode"] in ("mail", "uid"):
            say("Uh-oh: multiple entries found but should be unique!")
        say("")
        return entries, rnd
    return [], None


def show_entry(e, cfg, say):
    """The entry as qmail-ldaplookup.c prints it: attributes in its order, with the values qmail-ldap
    derives (defaults applied, quotas with '(unlimited)'); where the C tool would stop on a broken
    attribute this line names the problem and the listing goes on."""
    say(f"dn: {e.dn}", RULE)
    for name in ("objectClass", "mail", "mailAlternateAddress"):
        for v in e.values(name) or ():
            say(f"{name}: {v}")
    uid = e.values("uid")
    say(f"uid: {', '.join(uid)}" if uid else "uid: undefined (forward only account required)")
    derived(say, "accountStatus", lambda: e.status() or "undefined -> active")
    derived(say, "mailHost", lambda: e.single("mailHost") or "undefined")
    try:
        home, aliasempty = e.mailstore(cfg)
    except qldap.Needed:
        show_forward_only(e, say)
        return
    except qldap.QldapError as err:
        say(f"homeDirectory: {problem(err)}")
    else:
        say(f"homeDirectory: {home}", f"aliasEmpty: {aliasempty or 'using default'}")
    derived(say, "qmailDotMode", lambda: e.dotmode(cfg))
    derived(say, "qmailUID", lambda: e.qmail_uid(cfg))
    derived(say, "qmailGID", lambda: e.qmail_gid(cfg))
    try:
        size, count, size_max = e.quota(cfg)
    except qldap.QldapError as err:
        say(f"mailQuotaSize: {problem(err)}")
    else:
        for name, n in (("mailQuotaSize", size), ("mailQuotaCount", count), ("mailSizeMax", size_max)):
            say(f"{name}: {n}{' (unlimited)' if not n else ''}")
    for name in ("deliveryMode", "mailForwardingAddress", "deliveryProgramPath"):
        for v in e.values(name) or ():
            say(f"{name}: {v}")
            if name == "deliveryMode" and v.lower() not in qldap.KNOWN_MODES:
                sys.stderr.write(f"{WARN}undefined mail delivery mode: {v} (ignored).\n")
    text = e.values("mailReplyText")
    if text:
        say("mailReplyText:", "=== begin ===", text[0], "=== end ===")
    else:
        say("mailReplyText: undefined")


def problem(err):
    """A broken attribute as one line: qmail-lspawn's report and what is wrong."""
    return f"{err.detail} -> qmail-lspawn: {err.text}" if err.detail else err.text


def derived(say, name, value):
    """`name: <value()>`, or the problem when the attribute is broken."""
    try:
        say(f"{name}: {value()}")
    except qldap.QldapError as err:
        say(f"{name}: {problem(err)}")


def show_forward_only(e, say):
    """No mail store: qmail-lspawn delivers as the alias user, forwards only."""
    say("forward only delivery via alias user")
    try:
        user, uid, gid, home = lspawn.alias_account(conf.qmailhome())
    except lspawn.Refusal:
        say(f"alias user: {conf.USER_ALIAS} not found: qmail-lspawn answers Unable to find alias user!")
    else:
        say(f"alias user: {user}", f"alias user uid: {uid}", f"alias user gid: {gid}",
            f"alias user home: {home}")
    say(f"alias user aliasempty: {qldap.ALIASDEVNULL}")
    forwards = e.values("mailForwardingAddress")
    if not forwards:
        say(f"mailForwardingAddress: undefined -> qmail-lspawn: {qldap.Needed.report[1:]}")
    for v in forwards or ():
        say(f"mailForwardingAddress: {v}")


def show_round(rnd, say):
    if rnd is None:
        return
    kind = "exact address" if rnd.exact else "catchall"
    say(f"matched round {rnd.index + 1}: {rnd.address} ({kind}; dash '{rnd.dash}', ext '{rnd.ext}')")


def show_delivery(e, cfg, address, rnd, say):
    """What qmail-lspawn would do with this entry."""
    try:
        dl = qldap.resolve(e, cfg, address, rnd)
    except qldap.QldapError as err:
        say(f"delivery: qmail-lspawn answers {err.report} ({err.detail})")
        return
    if dl.kind == "cluster":
        say(f"delivery: cluster forward to {dl.mailhost} with qmail-forward")
        return
    if dl.kind == "forwardonly":
        say("delivery: forward only via alias user (see above)")
    else:
        say(f"delivery: qmail-local as {dl.user} uid {dl.uid} gid {dl.gid}",
            f"home: {dl.home}",
            f"aliasempty: {dl.aliasempty if dl.aliasempty else 'using default'}",
            f"qmailDotMode: {dl.dotmode}")
    say(f"dash: '{dl.dash}' ext: '{dl.ext}'",
        f"quota: size {dl.quota_size}{' (unlimited)' if not dl.quota_size else ''}, "
        f"count {dl.quota_count}{' (unlimited)' if not dl.quota_count else ''}, "
        f"max message size {dl.size_max}{' (unlimited)' if not dl.size_max else ''}")
    for name, value in dl.local_env().items():
        say(f"env {name}={value}" if value is not None else f"env {name} unset")
    say(*resolved(dl))


def default_delivery():
    """qmail-start's aliasempty as a run script takes it: control/defaultdelivery, else ./Maildir/."""
    text = control.read_raw("defaultdelivery", b"./Maildir/\n").decode("utf-8", "surrogateescape")
    return text.split("\n", 1)[0] or "./Maildir/"


def mailbox_line(home, instruction):
    """The Maildir or mbox a default-delivery line writes to, as qmail-local would (relative to HOME)."""
    if instruction[:1] not in (".", "/"):
        return f"mailbox: none (default delivery '{instruction}')"
    path = os.path.normpath(os.path.join(home, instruction))
    return f"mailbox: {path}/ (Maildir)" if instruction.endswith("/") else f"mailbox: {path} (mbox)"


def resolved(dl):
    """The delivery qmail-local makes of it: mailbox, forwards, programs, reply (spec 4.1, 3.7)."""
    if dl.kind == "forwardonly":
        return ["resolved: forwards only", f"forwards: {', '.join(dl.forwards)}"]
    if dl.group_dn:
        return [f"resolved: qmailGroup entry, qmail-group expands {dl.group_dn}"]
    if dl.dotmode not in ("ldaponly", "ldapwithprog", "dotonly", "both"):
        return [f"resolved: qmail-local bounces: Error: Non valid dot-mode found: {dl.dotmode}. (#5.3.5)"]
    dotfile = f"{dl.home.rstrip('/')}/.qmail{dl.dash}{dl.ext.lower().replace('.', ':')}"
    if dl.dotmode == "dotonly":
        return [f"resolved: {dotfile} (or a -default file) decides; LDAP forwards, programs and modes ignored",
                mailbox_line(dl.home, dl.aliasempty or default_delivery()) + " when there is no .qmail file"]
    modes = {m.lower() for m in dl.modes or ()}
    lines = []
    if modes & {"nolocal", "nombox"}:
        lines.append("mailbox: none (deliveryMode nolocal)")
    else:
        lines.append(mailbox_line(dl.home, dl.aliasempty or default_delivery()))
    fwd = ", ".join(dl.forwards or ()) or "none"
    lines.append(f"forwards: none (deliveryMode noforward drops {fwd})" if "noforward" in modes and dl.forwards
                 else f"forwards: {fwd}")
    progs = ", ".join(dl.programs or ()) or "none"
    if dl.programs and dl.dotmode == "ldaponly":
        lines.append(f"programs: none (qmailDotMode ldaponly does not run {progs})")
    elif dl.programs and "noprogram" in modes:
        lines.append(f"programs: none (deliveryMode noprogram drops {progs})")
    else:
        lines.append(f"programs: {progs}")
    reply = "reply" in modes and dl.reply_text
    lines.append("auto-reply: " + ("yes, with qmail-reply (not to <> or junk senders)" if reply else "no"))
    if dl.dotmode == "both":
        lines.append(f"then: {dotfile} (or a -default file) is processed too")
    return lines


def compare_password(d, e, args, cfg, say):
    pw = args["password"]
    if cfg.rebind:
        ok, why = d.check_bind(e.dn, pw), "authorization failed, wrong password"
    else:
        stored = e.values("userPassword")
        if not stored:
            ok, why = False, "no such object"
        else:
            say.log(LOG_PASSWD, f"cmp_passwd: clear '{pw}' stored '{stored[0]}'")
            ok, why = passwd.check(pw, stored[0]), "authorization failed, wrong password"
    say("", f"PASSWORD COMPARE was {'successful' if ok else 'NOT successful'}.")
    if not ok:
        say(f"\terror was: {why}")


def log_controls(cfg, say):
    """-d 64: the LDAP control files as read (qldap.c init_ldap); the password only with -d 256."""
    for name, value in (("ldapserver", "'" + " ".join(cfg.servers) + "'"), ("ldapbasedn", cfg.basedn),
                        ("ldapobjectclass", cfg.objectclass), ("ldaptimeout", cfg.timeout),
                        ("ldaprebind", int(cfg.rebind)), ("ldapuid", cfg.default_uid),
                        ("ldapgid", cfg.default_gid), ("ldapmessagestore", cfg.messagestore),
                        ("ldapdefaultdotmode", cfg.default_dotmode), ("defaultquotasize", cfg.quota_size),
                        ("defaultquotacount", cfg.quota_count),
                        ("ldaplocaldelivery", int(cfg.localdelivery)), ("ldaplogin", cfg.login)):
        say.log(LOG_LDAP, f"init_ldap: control/{name}: {value}")
    if len(cfg.aliasdomains):
        say.log(LOG_LDAP, "init_ldap: control/aliasdomains mapped")
    say.log(LOG_PASSWD, f"init_ldap: control/ldappassword: {cfg.password}")


def connect(d, args, say):
    """Bind with -D/-w or control/ldaplogin; -d 128 logs the steps."""
    binddn, bindpw = (args["binddn"], args["bindpw"] or "") if args["binddn"] else (None, None)
    who = binddn if binddn is not None else (d.cfg.login or "anonymous")
    say.log(LOG_LDAP2, f"qldap_open: trying {' '.join(d.cfg.servers)} in order")
    say.log(LOG_PASSWD, f"qldap_bind: password '{bindpw if binddn is not None else d.cfg.password}'")
    try:
        d.connect(binddn, bindpw)
    except qldap.QldapError as e:
        say.log(LOG_LDAP2, f"qldap_bind: failed ({e.detail or e.text})")
        raise
    say.log(LOG_LDAP2, f"qldap_bind: successful on {d.server} as {who}")


def show_no_entry(args, cfg, say):
    """What qmail-lspawn does when no round found an entry (spec 3.4 step 7)."""
    at = args["value"].rfind("@")
    local = args["value"][:at] if at > 0 else args["value"]
    if cfg.localdelivery:
        say(f"no entry: qmail-lspawn delivers {local} as stock qmail does (control/ldaplocaldelivery 1):",
            "users/cdb, then a passwd user, else the alias user", "")
    else:
        say(f"no entry: qmail-lspawn delivers to the alias user with ext '{local}' "
            f"(~alias/.qmail-{local.lower().replace('.', ':')} or .qmail-default; control/ldaplocaldelivery 0)",
            "")


def run(args, out):
    say = Printer(out, args["level"])
    try:
        cfg = qldap.Config.load(login_fallback=True)
    except control.ControlError as e:
        raise Fatal(f"unable to read controls: {e}") from e
    log_controls(cfg, say)
    d = qldap.Directory(cfg)
    try:
        connect(d, args, say)
        entries, rnd = search_rounds(d, args, cfg, say)
        if not entries and args["mode"] == "mail":
            show_no_entry(args, cfg, say)
        check_pw = args["password"] is not None and args["mode"] == "uid" and len(entries) == 1
        for e in entries:
            show_entry(e, cfg, say)
            if args["mode"] == "mail":
                show_round(rnd, say)
                show_delivery(e, cfg, args["value"], rnd, say)
            elif args["mode"] == "uid":
                show_delivery(e, cfg, (e.values("mail") or [""])[0], qldap.Round(0, "", "", ""), say)
            if check_pw:
                compare_password(d, e, args, cfg, say)
            say("", "")
    except qldap.QldapError as e:
        raise Fatal(f"{e.text} ({e.detail})" if e.detail else e.text) from e
    finally:
        d.close()
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(parse_args(argv), sys.stdout)
    except BrokenPipeError:  # `qmail-ldaplookup ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Usage:
        sys.stderr.write(USAGE)
        return 1
    except Fatal as e:
        sys.stdout.flush()
        sys.stderr.write(f"{FATAL}{e}\n")
        return e.code


if __name__ == "__main__":
    sys.exit(main())
