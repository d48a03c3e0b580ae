"""qmail-ldaplookup: the administrator's view of one directory lookup (qmail-ldaplookup.c).

usage:  qmail-ldaplookup [-d level] [-D binddn -w passwd] -u uid [-p passwd]
        qmail-ldaplookup [-d level] [-D binddn -w passwd] -m mail
        qmail-ldaplookup [-d level] [-D binddn -w passwd] -f ldapfilter

-m runs the same rounds as qmail-lspawn (exact address, dash-extension
catchalls, catchall@domain, aliasdomains applied) and prints each filter; -u
searches (uid=...) like the POP/IMAP/SMTP-AUTH tools; -f takes a raw filter.
For every entry found it prints the attributes as qmail-ldap interprets them,
which round matched, and the delivery qmail-lspawn would run (qmail-local's
user, uid/gid, home, default delivery, dash/ext and environment) or the report
it would give instead. -p (root only) checks a password against userPassword,
or by re-binding as the entry when control/ldaprebind is 1.

Exit codes: 0 done (also when nothing is found), 1 usage, 111 control files
unreadable, directory unreachable or bind refused (one line on stderr).
"""

import getopt
import os
import sys

from engine import control, passwd, qldap

PROG = "qmail-ldaplookup"
FATAL = PROG + ": fatal: "
WARN = PROG + ": warning: "
RULE = "-------------------------------------------------------"
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
    a = {"mode": None, "value": None, "password": None, "binddn": None, "bindpw": None, "level": 0}
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
            a["level"] = int(val) if val.isdigit() else 0
        elif opt == "-D":
            a["binddn"] = val
        elif opt == "-w":
            a["bindpw"] = val
    if rest or a["mode"] is None or (a["bindpw"] is not None and a["binddn"] is None):
        raise Usage("bad arguments")
    return a


class Printer:
    def __init__(self, out):
        self.out = out

    def __call__(self, *lines):
        for line in lines:
            self.out.write(line + "\n")


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
        entries = d.search(filt, attrs)
        if not entries:
            say("No entries found.", "")
            continue
        say(f"Found {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}:")
        if len(entries) > 1 and args["mode"] in ("mail", "uid"):
            say("Uh-oh: multiple entries found but should be unique!")
        say("")
        return entries, rnd
    return [], None


def show_entry(e, say):
    say(f"dn: {e.dn}", RULE)
    for name in ("objectClass", "mail", "mailAlternateAddress"):
        for v in e.values(name) or ():
            say(f"{name}: {v}")
    uid = e.values("uid")
    say(f"uid: {', '.join(uid)}" if uid else "uid: undefined (forward only account required)")
    try:
        st = e.status()
        say(f"accountStatus: {st}" if st else "accountStatus: undefined -> active")
    except qldap.QldapError as err:
        say(f"accountStatus: {err}")
    for name in ("mailHost", "homeDirectory", "mailMessageStore", "qmailUID", "qmailGID",
                 "qmailDotMode", "mailQuotaSize", "mailQuotaCount", "mailSizeMax"):
        vals = e.values(name)
        say(f"{name}: {', '.join(vals) if vals else 'undefined'}")
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
        say("delivery: forward only via alias user", f"alias user: {dl.user}",
            f"alias user aliasempty: {dl.aliasempty}")
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


def compare_password(d, e, args, cfg, say):
    pw = args["password"]
    if cfg.rebind:
        ok, why = d.check_bind(e.dn, pw), "authorization failed, wrong password"
    else:
        stored = e.values("userPassword")
        if not stored:
            ok, why = False, "no such object"
        else:
            ok, why = passwd.check(pw, stored[0]), "authorization failed, wrong password"
    say("", f"PASSWORD COMPARE was {'successful' if ok else 'NOT successful'}.")
    if not ok:
        say(f"\terror was: {why}")


def run(args, out):
    say = Printer(out)
    try:
        cfg = qldap.Config.load(login_fallback=True)
    except control.ControlError as e:
        raise Fatal(f"unable to read controls: {e}") from e
    if args["level"]:
        sys.stderr.write(f"{PROG}: ldapserver {cfg.servers} basedn '{cfg.basedn}' "
                         f"timeout {cfg.timeout} rebind {int(cfg.rebind)}\n")
    d = qldap.Directory(cfg)
    try:
        d.connect(args["binddn"], args["bindpw"] or "") if args["binddn"] else d.connect()
        entries, rnd = search_rounds(d, args, cfg, say)
        check_pw = args["password"] is not None and args["mode"] == "uid" and len(entries) == 1
        for e in entries:
            show_entry(e, say)
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
    except Usage:
        sys.stderr.write(USAGE)
        return 1
    except Fatal as e:
        sys.stdout.flush()
        sys.stderr.write(f"{FATAL}{e}\n")
        return e.code


if __name__ == "__main__":
    sys.exit(main())
