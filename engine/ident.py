"""The RFC 1413 (ident) client of qmail's remoteinfo.c, for tcp-env's TCPREMOTEINFO.

remoteinfo() connects from the connection's local address to port 113 of its
remote address, asks "<remote port> , <local port>" and keeps what follows
the third colon of the answer line, with every space, tab and CR left out
(so "... : USERID : UNIX : joe" gives "joe" and an ERROR answer, having only
two colons, gives ""). The timeout bounds the connect and each read and
write, as remoteinfo.c's timeoutconn/timeoutread/timeoutwrite do. No answer
line at all (refused, timed out, closed early) is None.

$QMAIL_IDENT_PORT replaces port 113 (for tests: an identd on a free port).
"""

import os
import socket

IDENT_PORT = 113
MAX_INFO = 998  # remoteinfo.c keeps at most sizeof(line) - 1 bytes


def ident_port():
    return int(os.environ.get("QMAIL_IDENT_PORT") or IDENT_PORT)


def remoteinfo(remote_ip, remote_port, local_ip, local_port, timeout):
    """The remote user's connection info as a str (bytes kept with surrogateescape), or None."""
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.bind((local_ip, 0))
            s.connect((remote_ip, ident_port()))
            s.sendall(b"%d , %d\r\n" % (remote_port, local_port))
            info = _read_info(s)
    except OSError:  # refused, unreachable, timed out (socket.timeout is an OSError)
        return None
    return None if info is None else info.decode("utf-8", "surrogateescape")


def _read_info(s):
    """The part of the answer line after its third colon, blanks removed; None without a newline."""
    info = bytearray()
    colons = 0
    while True:
        block = s.recv(512)
        if not block:
            return None
        for ch in block:
            if ch in b" \t\r":
                continue
            if ch == ord("\n"):
                return bytes(info)
            if colons < 3:
                colons += ch == ord(":")
                continue
            info.append(ch)
            if len(info) == MAX_INFO:
                return bytes(info)
