"""auth_imap: a courier-imap authentication module (qmail-ldap's auth_imap.c, auth_mod.c; spec 3.8, 3.9, 5.7).

    auth_imap [-d pbstool] next-program [args...]

The module interface of courier-imap's older authlib: the login program
runs a chain of modules, each with the rest of the chain as arguments.

* AUTHENTICATED already set (an earlier module accepted the login): exec
  the next program at once.
* Otherwise read `service\\nlogin\\n<user>\\n<password>\\n` from fd 3
  (less than 1024 bytes). Only the type `login` is handled; another type,
  or a user that neither LDAP nor passwd knows, is handed on: AUTHENTICATED
  is unset and the next program is exec'd with the same data on a new fd 3.
* A correct password: become the user (gid, then uid; never root), set
  USER, AUTHENTICATED, HOME, MAILDIR, MAILDIRQUOTA, DATASIZE, enter HOME
  (control/dirmaker makes a missing one) and create the Maildir ($MAILDIR,
  else the last argument), run the pbs tool (-d), exec the next program.
* Every other failure (wrong password, disabled account, missing fields,
  directory unreachable, configuration) execs courier's fallback, the
  command line in AUTHARGC/AUTHARGV0..n-1, which tells the client NO; exit
  111 when that is not set.

A user whose mailHost is another cluster host (control/ldapcluster) is
relayed: as qmaild/nofiles, connect to mailHost port 143 ($QMAIL_PORT_IMAP
in tests), wait for the untagged `*` greeting (OK, else a cluster failure),
send `<IMAPLOGINTAG> login <user> <password>` unquoted, then copy bytes both
ways; the backend's answer to the login reaches the client. auth_imap.c
lost the connected socket here (spec 3.9); this one uses it.

SECURITY: the fd 3 data, the password included, is re-fed only to the next
module of the chain the administrator configured.
"""

import os
import sys

from engine import authpop
from engine import checkpassword as cp

UP_LEN = 1024          # auth_up: the data on fd 3 must be shorter
PORT_IMAP = 143
GET_OK_TIMEOUT = 10
GET_OK_LEN = 8192


class HandOn(Exception):
    """Not ours (another type, unknown user): the next module gets the data."""


def _fields(data, count):
    """The first `count` fields, each ended by a newline (or a NUL, as auth_imap.c's scan stops there)."""
    fields, pos = [], 0
    for _ in range(count):
        end = next((i for i in range(pos, len(data)) if data[i] in b"\n\0"), len(data))
        if end >= len(data):
            raise cp.AuthError(cp.BADENTRY, "authentication data incomplete")
        fields.append(data[pos:end])
        pos = end + 1
    return fields


def parse(data):
    """(login, password) from `service\\ntype\\nlogin\\npassword\\n`; HandOn for a type other than login."""
    if _fields(data, 2)[1] != b"login":
        raise HandOn("authentication type is not login")
    _, _, user, password = _fields(data, 4)
    return user, password


def hand_on(data, args):
    """auth_fail for NOSUCH/AUTH_TYPE: the next module runs with the same data on fd 3.

    The data (under 1024 bytes) fits in a pipe's buffer, so it is written
    before the exec instead of by a child as auth_imap.c does.
    """
    os.environ.pop("AUTHENTICATED", None)
    r, w = os.pipe()
    os.write(w, data.replace(b"\0", b"\n"))
    os.close(w)
    if r != 3:
        os.dup2(r, 3)
        os.close(r)
    os.set_inheritable(3, True)
    cp.exec_next(args)


def fallback():
    """auth_error: exec courier's AUTHARGC/AUTHARGV<n> command; 111 when it is missing or cannot run."""
    count = os.environ.get("AUTHARGC")
    if count is None:
        return cp.TEMPORARY
    digits = count[:len(count) - len(count.lstrip("0123456789"))]
    try:
        argv = [os.environ[f"AUTHARGV{i}"] for i in range(int(digits or "0"))]
    except KeyError:
        return cp.TEMPORARY
    if argv:
        try:
            os.execv(argv[0], argv)
        except OSError:
            pass
    return cp.TEMPORARY


def imap_port():
    return int(os.environ.get("QMAIL_PORT_IMAP") or PORT_IMAP)


def _get_ok(sock, tag):
    """get_ok: read until a reply starting with `tag`; it must say OK, else a cluster problem (5)."""
    sock.settimeout(GET_OK_TIMEOUT)
    while True:
        try:
            text = sock.recv(GET_OK_LEN)
        except OSError as e:
            raise cp.AuthError(cp.TEMPORARY, f"mailhost: {e}") from e
        if not text:
            raise cp.AuthError(cp.TEMPORARY, "mailhost closed the connection")
        if text.upper().startswith(tag):
            break
    if not text[len(tag):].lstrip(b" \t").upper().startswith(b"OK"):
        raise cp.AuthError(cp.BADCLUSTER, f"mailhost answered {text[:60]!r}")


def forward_login(host, user, password, port=None):
    """auth_forward: a socket to mailHost once the login command is sent (its answer is not read)."""
    tag = os.environb.get(b"IMAPLOGINTAG")
    if not tag:
        raise cp.AuthError(cp.TEMPORARY, "IMAPLOGINTAG is not set")
    sock = cp.connect_mailhost(host, port or imap_port())
    _get_ok(sock, b"*")
    sock.sendall(tag + b" login " + user + b" " + password + b"\r\n")
    sock.setblocking(True)
    return sock


def forward(creds, user, password, pbstool):
    cp.drop_privileges(*cp.forwarding_ids())
    cp.apply_env(os.environ, creds.env())
    cp.run_pbstool(pbstool)
    sock = forward_login(creds.forwarder, user, password)
    authpop.relay(0, 1, sock)
    return 0


def parse_args(argv):
    pbstool, args = cp.parse_pbstool_args("auth_imap", argv, "usage: auth_imap [-d pbstool] program ...")
    if not args:
        raise cp.AuthError(cp.CONF, "no next program")
    return pbstool, args


def login(argv, fd=3):
    """Everything up to an exec; returns the exit code when a forwarded session ends."""
    settings = cp.Settings.load()
    pbstool, args = parse_args(argv)
    if os.environ.get("AUTHENTICATED"):
        cp.exec_next(args)
    reap_children()
    data = cp.read_fd(fd, UP_LEN)
    try:
        user, password = parse(data)
        creds = cp.authenticate(user.decode("utf-8", "surrogateescape"), password, settings)
    except (HandOn, cp.NoSuchUser):
        return hand_on(data, args)  # execs the next module or raises
    if creds.forwarder:
        return forward(creds, user, password, pbstool)
    cp.drop_privileges(creds.uid, creds.gid)
    cp.apply_env(os.environ, creds.env())
    cp.prepare_home(creds, args[-1], settings.dirmaker)
    cp.run_pbstool(pbstool)
    cp.exec_next(args)


def reap_children():
    """Courier leaves zombies behind in the process we replace (auth_imap.c collects them too)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return login(argv)
    except cp.AuthError as e:
        if os.environ.get("LOGLEVEL"):
            sys.stderr.write(f"auth_imap: warning: auth_error: authorization failed ({e.detail or e})\n")
        return fallback()
    except MemoryError:
        return fallback()


if __name__ == "__main__":
    sys.exit(main())
