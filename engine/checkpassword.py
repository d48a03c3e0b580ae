"""The checkpassword core shared by auth_pop, auth_imap and auth_dovecot
(qmail-ldap's auth_mod.c main, checkpassword.c, locallookup.c, dirmaker.c,
mailmaker.c, pbsexec.c; spec 3.5, 3.8, 3.9, 4.5, 5.7).

`authenticate(login, password)` finds the login — LDAP `(uid=<login>)`
first; when the directory has no such entry and control/ldaplocaldelivery
is 1, the local passwd/shadow user — checks accountStatus before the
password, reads uid/gid, home, mail store and quota, compares the password
(engine.passwd, or a re-bind as the entry's DN with control/ldaprebind) and
returns `Credentials`. A user whose mailHost is another cluster host
(control/ldapcluster) comes back with `forwarder` set; the caller relays
the session there. Every failure is an `AuthError` whose `code` is
auth_pop's exit code (1 config, 2 directory unreachable, 3 bad password or
unknown user, 25 broken entry, 4 account disabled, 5 cluster problem, 6
Maildir corrupt, 61 Maildir creation failed, 62 home missing, 7 cannot run
the next program, 8 out of memory, 111 anything else); qmail-popup turns
the code into its -ERR text.

After a success the caller, in auth_mod.c's order: `drop_privileges`
(the user's gid then uid; never root), `Credentials.env()` into the
environment, `prepare_home` (chdir home, control/dirmaker when it is
missing, then the Maildir created), `run_pbstool`, exec. A forwarded
session drops to qmaild/nofiles instead and opens `connect_mailhost`.

SECURITY: the login goes into the filter escaped (engine.qldap.uid_filter).
Unknown login and wrong password give the same code (3). A wrong password
in LDAP never falls through to passwd. The password is never logged.
"""

import os
import pwd
import socket
import subprocess
import warnings
from dataclasses import dataclass

from engine import conf, control, passwd, qldap, sgetopt

# auth_pop's exit codes (auth_pop.c auth_error; qmail-popup.c's table)
CONF, UNREACHABLE, BADPASS, BADENTRY, DISABLED, BADCLUSTER = 1, 2, 3, 25, 4, 5
MAILDIR_CORRUPT, MAILDIR_FAILED, MAILDIR_NONEXIST, EXEC, NOMEM, TEMPORARY = 6, 61, 62, 7, 8, 111

LOGIN_ATTRS = ["uid", "qmailUID", "qmailGID", "accountStatus", "mailHost", "mailMessageStore",
               "homeDirectory", "mailQuotaSize", "mailQuotaCount", "mailSizeMax"]
PASSWORD_ATTR = "userPassword"
CONNECT_TIMEOUT = 30  # forward_establish's connect timeout


class AuthError(Exception):
    """Authentication or session setup failed; `code` is the auth_pop exit code."""

    def __init__(self, code, detail=""):
        super().__init__(detail or f"auth error {code}")
        self.code = code
        self.detail = detail


class NoSuchUser(AuthError):
    """Neither backend knows the login: code 3 like a wrong password, but auth_imap hands such a login
    on to the next courier module (check()'s NOSUCH)."""

    def __init__(self, login):
        super().__init__(BADPASS, f"{login}: no such user")


class _NoSuch(Exception):
    """This backend does not know the login (the next backend may)."""


@dataclass
class Credentials:
    """What a successful login resolved to (checkpassword.h's struct credentials)."""

    login: str
    uid: int
    gid: int
    home: str
    maildir: str = ""       # LDAP: mailMessageStore when homeDirectory is set too; passwd: from ~/.qmail
    forwarder: str = None   # mailHost of another cluster host: relay the session there
    quota_size: int = 0
    quota_count: int = 0
    size_max: int = 0
    source: str = "ldap"    # "ldap" or "passwd"
    dn: str = None

    @property
    def maildirquota(self):
        """MAILDIRQUOTA `<n>S,<n>C` (zero parts left out), None when there is no quota."""
        parts = ([f"{self.quota_size}S"] if self.quota_size else []) + \
                ([f"{self.quota_count}C"] if self.quota_count else [])
        return ",".join(parts) or None

    def env(self):
        """setup_env: the variables for the next program; a None value means unset it."""
        return {
            "USER": self.login,
            "AUTHENTICATED": self.login,
            "HOME": self.home or None,
            "MAILDIR": self.maildir or None,
            "MAILDIRQUOTA": self.maildirquota,
            "DATASIZE": str(self.size_max) if self.size_max else None,
        }


@dataclass
class Settings:
    """The control files auth_* read at start (qldap_ctrl_*, localdelivery_init, cluster_init, dirmaker_init)."""

    ldap: qldap.Config
    dirmaker: str = None
    home: str = None

    @classmethod
    def load(cls, home=None):
        """Read ~/control; a missing ldapserver or control/me, or an unreadable file -> AuthError(1)."""
        try:
            cfg = qldap.Config.load(home)
            dirmaker = control.read_line("dirmaker", None, home)
        except (control.ControlError, OSError) as e:
            raise AuthError(CONF, str(e)) from e
        if not cfg.me:
            raise AuthError(CONF, "control/me is missing")
        return cls(ldap=cfg, dirmaker=dirmaker or None, home=home)


def apply_env(environ, variables):
    """Set or unset (None) `variables` in the mapping `environ`."""
    for name, value in variables.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


# -- authentication -------------------------------------------------------------------------

def authenticate(login, password, settings=None, directory=None):
    """Credentials for a correct login/password; AuthError otherwise (see the module docstring).

    `directory` is an open engine.qldap.Directory to reuse (one is made and
    closed otherwise). `password` is str or bytes.
    """
    if isinstance(password, bytes):
        password = password.decode("utf-8", "surrogateescape")
    if settings is None:
        settings = Settings.load()
    if not password:
        raise AuthError(BADPASS, "null password")
    try:
        return _check_ldap(login, password, settings, directory)
    except _NoSuch:
        pass
    if not settings.ldap.localdelivery:
        raise NoSuchUser(login)
    try:
        return _check_passwd(login, password)
    except _NoSuch:
        raise NoSuchUser(login) from None


def _ldap_error(e):
    """qldap errors as auth_pop codes: unreachable/timeout 2, broken entry 25, the rest 111."""
    if isinstance(e, (qldap.BindTimeout, qldap.SearchTimeout)):
        return AuthError(UNREACHABLE, str(e))
    if isinstance(e, (qldap.Needed, qldap.IllVal)):
        return AuthError(BADENTRY, str(e))
    return AuthError(TEMPORARY, str(e))


def _check_ldap(login, password, settings, directory):
    cfg = settings.ldap
    own = directory is None
    if own:
        directory = qldap.Directory(cfg)
    try:
        attrs = LOGIN_ATTRS + ([] if cfg.rebind else [PASSWORD_ATTR])
        entry = directory.lookup_uid(login, attrs)
        if entry is None:
            raise _NoSuch()
        if entry.status() in ("noaccess", "disabled", "deleted"):
            raise AuthError(DISABLED, f"{login}: account {entry.status()}")
        creds = _ldap_credentials(login, entry, cfg)
        if cfg.rebind:
            ok = directory.check_bind(entry.dn, password)
        else:
            stored = entry.single(PASSWORD_ATTR)
            if stored is None:
                raise _NoSuch()  # check_ldap returns NOSUCH: the passwd backend is asked
            if passwd.malformed(stored):  # cmp_passwd's BADVAL: a broken entry, not a wrong password
                raise AuthError(BADENTRY, f"{login}: unusable userPassword value")
            ok = passwd.check(password, stored)
    except qldap.QldapError as e:
        raise _ldap_error(e) from e
    finally:
        if own:
            directory.close()
    if not ok:
        raise AuthError(BADPASS, f"{login}: wrong password")
    return creds


def _ldap_credentials(login, entry, cfg):
    """check_ldap's reads, in its order: mailHost, qmailUID, qmailGID, mail store, quota."""
    mailhost = entry.single("mailHost")
    forwarder = mailhost if cfg.cluster and mailhost is not None and not cfg.is_me(mailhost) else None
    uid, gid = entry.qmail_uid(cfg), entry.qmail_gid(cfg)
    home, store = entry.mailstore(cfg)
    size, count, size_max = entry.quota(cfg)
    return Credentials(login=login, uid=uid, gid=gid, home=home, maildir=store or "",
                       forwarder=forwarder, quota_size=size, quota_count=count, size_max=size_max,
                       source="ldap", dn=entry.dn)


def _shadow_password(login, pw):
    """The hash from shadow when passwd says 'x' (qmail-ldap's PW_SHADOW build)."""
    if pw.pw_passwd not in ("x", "*x*"):
        return pw.pw_passwd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import spwd
    try:
        return spwd.getspnam(login).sp_pwdp
    except (KeyError, PermissionError) as e:
        raise AuthError(TEMPORARY, f"{login}: no shadow entry") from e


def local_maildir(home):
    """get_local_maildir: the first Maildir line (starts with . or /, ends with /) of ~/.qmail, or ""."""
    try:
        with open(os.path.join(home, ".qmail"), "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise AuthError(TEMPORARY, f"{home}/.qmail: {e.strerror}") from e
    for line in lines:
        if line[:1] in (b".", b"/") and line.endswith(b"/"):
            return line.decode("utf-8", "surrogateescape")
    return ""


def _check_passwd(login, password):
    """check_passwd: the local passwd user (ldaplocaldelivery=1 and no LDAP entry)."""
    try:
        pw = pwd.getpwnam(login)
    except (KeyError, ValueError):
        raise _NoSuch() from None
    creds = Credentials(login=login, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir,
                        maildir=local_maildir(pw.pw_dir), source="passwd")
    if not passwd.check(password, _shadow_password(login, pw)):
        raise AuthError(BADPASS, f"{login}: wrong password")
    return creds


# -- after the check ---------------------------------------------------------------------------

def drop_privileges(uid, gid):
    """change_uid: become gid then uid; already running as that uid (or not root) -> nothing to do.

    Ending up as root is refused (111), so root can never log in.
    """
    euid = os.geteuid()
    if euid != 0 and euid == uid:
        return
    try:
        os.setgroups([gid])
    except PermissionError:
        pass  # not root: setgid below fails for a foreign group anyway
    try:
        os.setgid(gid)
        os.setuid(uid)
    except OSError as e:
        raise AuthError(TEMPORARY, f"cannot become {uid}/{gid}: {e.strerror}") from e
    if os.getuid() == 0:
        raise AuthError(TEMPORARY, "refusing to run as root")


def forwarding_ids():
    """qmaild's uid and nofiles' gid: a forwarded session runs unprivileged."""
    try:
        return pwd.getpwnam(conf.USER_DAEMON).pw_uid, _gid(conf.GROUP_NOFILES)
    except KeyError as e:
        raise AuthError(TEMPORARY, f"no user {conf.USER_DAEMON} or group {conf.GROUP_NOFILES}") from e


def _gid(name):
    import grp
    return grp.getgrnam(name).gr_gid


def _run_dirmaker(dirmaker, home, md):
    """dirmaker_make: control/dirmaker <home> <maildir>; True when it exited 0."""
    try:
        proc = subprocess.run([dirmaker, home, md], stdin=subprocess.DEVNULL)
    except OSError:
        return False
    return proc.returncode == 0


def _makedir(path):
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise AuthError(MAILDIR_CORRUPT, f"{path} is not a directory") from None
    except OSError as e:
        raise AuthError(MAILDIR_FAILED, f"cannot make {path}: {e.strerror}") from e


def make_maildir(md):
    """maildir_make (AUTOMAILDIRMAKE): md, md/tmp, md/cur, md/new with mode 0700, relative to the cwd."""
    old = os.umask(0o077)
    try:
        _makedir(md)
        for sub in ("tmp", "cur", "new"):
            _makedir(os.path.join(md, sub))
    finally:
        os.umask(old)


def prepare_home(creds, aliasempty, dirmaker=None):
    """chdir_or_make: chdir to HOME, made by control/dirmaker when missing (62 without one, 61 when it
    fails), then the Maildir (the user's, else `aliasempty`) created there when missing (6, 61)."""
    md = creds.maildir or aliasempty
    try:
        os.chdir(creds.home)
    except OSError:
        if not dirmaker:
            raise AuthError(MAILDIR_NONEXIST, f"{creds.home} does not exist") from None
        if not _run_dirmaker(dirmaker, creds.home, md or ""):
            raise AuthError(MAILDIR_FAILED, f"{dirmaker} could not make {creds.home}") from None
        try:
            os.chdir(creds.home)
        except OSError as e:
            raise AuthError(MAILDIR_FAILED, f"{creds.home}: {e.strerror}") from e
    if md:
        make_maildir(md)


def run_pbstool(tool, environ=None):
    """pbsexec: run the POP-before-SMTP tool (normally pbsadd) with stdin/stdout on /dev/null and
    fd 3 closed; skipped when NOPBS is set. Its failure does not stop the login."""
    environ = os.environ if environ is None else environ
    if not tool or "NOPBS" in environ:
        return None
    try:
        return subprocess.run([tool], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              env=dict(environ), close_fds=True).returncode
    except OSError:
        return 111


# -- cluster ---------------------------------------------------------------------------------

def connect_mailhost(host, port, my_ips=None):
    """forward_establish: a socket connected to the first IPv4 address of `host`.

    A name that does not resolve, or whose address is one of ours (a loop), is
    BADCLUSTER (5); a failed connect is 111. 30 s connect timeout.
    """
    from engine import qdns
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise AuthError(BADCLUSTER, f"{host}: {e}") from e
    if not infos:
        raise AuthError(BADCLUSTER, f"{host}: no address")
    ip = infos[0][4][0]
    if ip in (qdns.local_ips() if my_ips is None else my_ips):
        raise AuthError(BADCLUSTER, f"{host} ({ip}) is this host")
    try:
        return socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise AuthError(TEMPORARY, f"{host} ({ip}:{port}): {e}") from e


def read_fd(fd, limit):
    """All the authentication data on `fd` (closed afterwards); AuthError 111 when it reaches `limit` bytes."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, limit - len(data))
        except InterruptedError:
            continue
        except OSError as e:
            raise AuthError(TEMPORARY, f"fd {fd}: {e.strerror}") from e
        if not chunk:
            break
        data += chunk
        if len(data) >= limit:
            raise AuthError(TEMPORARY, "authentication data too long")
    os.close(fd)
    return data


def exec_next(args):
    """Exec the next program of the chain; AuthError 7 when it cannot run."""
    try:
        os.execvp(args[0], args)
    except OSError as e:
        raise AuthError(EXEC, f"{args[0]}: {e.strerror}") from e


def parse_pbstool_args(program, argv, usage):
    """auth_mod.c's command line: `-d pbstool`, then the next program's argv; (pbstool or None, argv).
    A bad option is a configuration error (1)."""
    g = sgetopt.getopt([program.encode()] + [os.fsencode(a) for a in argv], b"d:", program)
    pbstool = None
    for opt, arg in g:
        if opt == b"?":
            raise AuthError(CONF, usage)
        pbstool = os.fsdecode(arg)
    return pbstool, [os.fsdecode(a) for a in g.rest()]
