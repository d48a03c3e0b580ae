"""auth_dovecot: Dovecot's checkpassword program (qmail-ldap's auth_dovecot.c, auth_mod.c; spec 3.8, 3.9, 5.7).

    auth_dovecot [-a aliasempty] [-d pbstool] [-D loglevel] reply-program [args...]

Dovecot runs it as a checkpassword passdb (`passdb { driver = checkpassword
args = /var/qmail/bin/auth_dovecot }`, `userdb { driver = prefetch }`) with
`login\\0password\\0` on fd 3 and its reply program (checkpassword-reply) as
arguments. The login is checked by engine.checkpassword (LDAP `(uid=)`,
then passwd when control/ldaplocaldelivery is 1). On success it sets USER,
AUTHENTICATED, HOME, MAILDIR, MAILDIRQUOTA, DATASIZE and Dovecot's userdb
fields, names them in EXTRA and execs the reply program, which hands them
to Dovecot:

    userdb_uid, userdb_gid      the entry's qmailUID/qmailGID
    userdb_quota_rule           maildir:storage=<mailQuotaSize>:messages=<mailQuotaCount>
                                (each part only when set; storage in bytes, as auth_dovecot.c emits it)
    userdb_mail                 maildir:<mail store>, when the entry has homeDirectory and mailMessageStore
    EXTRA                       "userdb_uid userdb_gid[ userdb_quota_rule][ userdb_mail]"

It never changes uid, directory or creates anything: Dovecot does that
with the userdb fields, and checkpassword-reply refuses to run under
another uid than Dovecot's. A user whose mailHost is another cluster host
(control/ldapcluster) gets `proxy=1`, `host=<mailHost>` and `EXTRA=proxy
host` instead, and Dovecot proxies the session there. -d runs the pbs tool
(pbsadd) before the exec; -a (aliasempty) is accepted for auth_pop's
command line and not used; -D turns on failure logging on stderr.

Failures exit with auth_pop's codes (engine.checkpassword; Dovecot itself
treats every code but 1 as an internal failure).
"""

import os
import sys

from engine import authpop, sgetopt
from engine import checkpassword as cp

PASSWORDS_LOGGED = 256  # the debug bit auth_mod.c masks off so passwords never reach a log


def parse_args(argv):
    """(pbs tool, loglevel, reply program argv); a bad option or no program is a configuration error (1)."""
    g = sgetopt.getopt([b"auth_dovecot"] + [os.fsencode(a) for a in argv], b"a:d:D:", "auth_dovecot")
    pbstool, loglevel = None, 0
    for opt, arg in g:
        if opt == b"?":
            raise cp.AuthError(cp.CONF, "usage: auth_dovecot [-a aliasempty] [-d pbstool] [-D loglevel] program")
        if opt == b"d":
            pbstool = os.fsdecode(arg)
        elif opt == b"D":
            digits = arg[:len(arg) - len(arg.lstrip(b"0123456789"))]
            loglevel = int(digits or b"0") & ~PASSWORDS_LOGGED
    args = [os.fsdecode(a) for a in g.rest()]
    if not args:
        raise cp.AuthError(cp.CONF, "no reply program")
    return pbstool, loglevel, args


def userdb_env(creds):
    """auth_setup: Dovecot's userdb fields and EXTRA naming them, in auth_dovecot.c's order."""
    env = {"userdb_uid": str(creds.uid), "userdb_gid": str(creds.gid)}
    if creds.quota_size or creds.quota_count:
        rule = "maildir"
        if creds.quota_size:
            rule += f":storage={creds.quota_size}"
        if creds.quota_count:
            rule += f":messages={creds.quota_count}"
        env["userdb_quota_rule"] = rule
    if creds.maildir:
        env["userdb_mail"] = f"maildir:{creds.maildir}"
    env["EXTRA"] = " ".join(env)
    return env


def proxy_env(creds):
    """auth_forward: let Dovecot proxy to the user's mailHost (the names are not userdb_ fields)."""
    return {"proxy": "1", "host": creds.forwarder, "EXTRA": "proxy host"}


def login(pbstool, args, settings=None, fd=3):
    """Everything up to the exec of the reply program `args`."""
    settings = settings or cp.Settings.load()
    user, password = authpop.read_auth_data(fd)
    creds = cp.authenticate(user.decode("utf-8", "surrogateescape"), password, settings)
    cp.apply_env(os.environ, creds.env())
    cp.apply_env(os.environ, proxy_env(creds) if creds.forwarder else userdb_env(creds))
    cp.run_pbstool(pbstool)
    cp.exec_next(args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    loglevel = 0
    try:
        pbstool, loglevel, args = parse_args(argv)
        return login(pbstool, args)
    except cp.AuthError as e:
        if loglevel or os.environ.get("LOGLEVEL"):
            sys.stderr.write(f"auth_dovecot: warning: auth_error: authorization failed ({e.detail or e})\n")
        return e.code
    except MemoryError:
        return cp.NOMEM


if __name__ == "__main__":
    sys.exit(main())
