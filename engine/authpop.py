"""auth_pop: the checkpassword program of the POP3 chain (auth_pop.c, auth_mod.c; spec 3.8, 3.9, 5.7).

    auth_pop [-d pbstool] subprogram [args...]

Reads `login\\0password\\0timestamp\\0` (at most 512 bytes) from fd 3,
authenticates with engine.checkpassword (LDAP `(uid=login)`, then passwd
when control/ldaplocaldelivery is 1) and on success becomes the user
(gid, then uid; never root), sets USER, AUTHENTICATED, HOME, MAILDIR,
MAILDIRQUOTA, DATASIZE, enters HOME (control/dirmaker makes a missing one)
and creates the Maildir — $MAILDIR, else the last argument of the chain —
runs the pbs tool, and execs the subprogram (qmail-pop3d). A user whose
mailHost is another cluster host is relayed instead: as qmaild/nofiles it
connects to mailHost port 110 ($QMAIL_PORT_POP3 in tests, qmail-ldap's
PORT_POP3), logs in with USER/PASS and copies bytes both ways until one
side ends (31 minutes idle at most); the backend's reply to PASS reaches
the client. Failures exit with the codes qmail-popup translates
(engine.checkpassword).
"""

import errno
import os
import select
import socket
import sys

from engine import checkpassword as cp

UP_LEN = 513          # auth_up: login, password and timestamp together must be shorter
PORT_POP3 = 110
GET_OK_TIMEOUT = 10   # seconds for each answer of the backend while logging in
GET_OK_LEN = 512
RELAY_TIMEOUT = 31 * 60
COPY_SIZE = 8192


def read_auth_data(fd=3):
    """(login, password) from the checkpassword fd; AuthError 25 when either is missing, 111 when too long."""
    data = cp.read_fd(fd, UP_LEN)
    fields = data.split(b"\0")
    if len(fields) < 3:
        raise cp.AuthError(cp.BADENTRY, "login or password missing on fd 3")
    return fields[0], fields[1]


def pop3_port():
    return int(os.environ.get("QMAIL_PORT_POP3") or PORT_POP3)


def _get_ok(sock):
    """auth_pop.c get_ok: the backend must answer +OK; anything else is a cluster problem (5)."""
    sock.settimeout(GET_OK_TIMEOUT)
    try:
        line = sock.recv(GET_OK_LEN)
    except OSError as e:
        raise cp.AuthError(cp.TEMPORARY, f"mailhost: {e}") from e
    if not line.startswith(b"+OK"):
        raise cp.AuthError(cp.BADCLUSTER, f"mailhost answered {line[:60]!r}")


def forward_login(host, login, password, port=None):
    """auth_forward: a socket to mailHost after USER and PASS were sent (the PASS answer is not read)."""
    sock = cp.connect_mailhost(host, port or pop3_port())
    _get_ok(sock)
    sock.sendall(b"user " + login + b"\r\n")
    _get_ok(sock)
    sock.sendall(b"pass " + password + b"\r\n")
    sock.setblocking(True)
    return sock


def relay(fd_in, fd_out, sock, timeout=RELAY_TIMEOUT):
    """copyloop: client (fd_in/fd_out) <-> sock until the backend is done or `timeout` seconds idle."""
    sfd = sock.fileno()
    to_server, to_client = b"", b""
    client_open = server_open = True
    while True:
        rlist = ([fd_in] if client_open and len(to_server) < COPY_SIZE else []) + \
                ([sfd] if server_open and len(to_client) < COPY_SIZE else [])
        wlist = ([fd_out] if to_client else []) + ([sfd] if to_server else [])
        if not rlist and not wlist:
            break
        try:
            r, w, _ = select.select(rlist, wlist, [], timeout)
        except InterruptedError:
            continue
        if not r and not w:
            break
        try:
            if fd_in in r:
                data = os.read(fd_in, COPY_SIZE)
                client_open = bool(data)
                to_server += data
                if not data and not to_server:
                    sock.shutdown(socket.SHUT_WR)
            if sfd in r:
                data = sock.recv(COPY_SIZE)
                server_open = bool(data)
                to_client += data
            if fd_out in w:
                to_client = to_client[os.write(fd_out, to_client):]
            if sfd in w:
                to_server = to_server[sock.send(to_server):]
                if not client_open and not to_server:
                    sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                continue
            break
        if not server_open and not to_client:
            break
    sock.close()


def forward(creds, password, pbstool):
    """The cluster case: unprivileged, register the client with pbsadd, relay to mailHost; exit 0."""
    if os.geteuid() == 0:  # change_uid(-1, -1): a non-root auth_pop stays who it is
        cp.drop_privileges(*cp.forwarding_ids())
    cp.apply_env(os.environ, creds.env())
    cp.run_pbstool(pbstool)
    sock = forward_login(creds.forwarder, creds.login.encode("utf-8", "surrogateescape"), password)
    relay(0, 1, sock)
    return 0


def parse_args(argv):
    """(pbs tool or None, the subprogram's argv); a bad option is a configuration error (1)."""
    return cp.parse_pbstool_args("auth_pop", argv, "usage: auth_pop [-d pbstool] subprogram ...")


def login(argv, settings=None, fd=3):
    """Everything up to the exec; returns the exit code when the session ends here (forwarding)."""
    pbstool, args = parse_args(argv)
    settings = settings or cp.Settings.load()
    if not args:
        raise cp.AuthError(cp.CONF, "no subprogram")
    user, password = read_auth_data(fd)
    name = user.decode("utf-8", "surrogateescape")
    creds = cp.authenticate(name, password, settings)
    if creds.forwarder:
        return forward(creds, password, pbstool)
    cp.drop_privileges(creds.uid, creds.gid)
    cp.apply_env(os.environ, creds.env())
    cp.prepare_home(creds, args[-1], settings.dirmaker)
    cp.run_pbstool(pbstool)
    cp.exec_next(args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return login(argv)
    except cp.AuthError as e:
        if os.environ.get("LOGLEVEL"):
            sys.stderr.write(f"auth_pop: warning: {e.detail or e}\n")
        return e.code
    except MemoryError:
        return cp.NOMEM


if __name__ == "__main__":
    sys.exit(main())
