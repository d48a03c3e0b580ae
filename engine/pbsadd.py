"""pbsadd: registers a POP/IMAP client with the POP-before-SMTP daemons (qmail-ldap's pbsadd.c;
spec 2.2, 5.8).

    pbsadd [program args...]

Sends an add packet (engine.pbs) for $TCPREMOTEIP, signed with
control/pbssecret, to every pbsdbd in control/pbsservers on
control/pbsport, carrying the variables named in control/pbsenv (the part of
each line before its first `=`; an unset variable goes as `NAME=`). No
answer is awaited. Then it execs its arguments, or exits 0 without any —
the form auth_pop/auth_imap/auth_dovecot run with `-d pbsadd`.

With NOPBS set it sends nothing. A missing or bad control file or
$TCPREMOTEIP is logged on stderr and exits 1 without running the program
(pbsadd.c's texts). A variable too long for an entry (name=value over 255
bytes) or for the packet is logged and the address is registered without
environment; pbsadd.c sent a packet pbsdbd then dropped, so the client got
no relaying at all.
"""

import os
import socket
import sys

from engine import pbs


class Refused(Exception):
    """pbsadd.c's die_*: a logged reason to exit 1."""


def log(text):
    sys.stderr.write(f"pbsadd {text}\n")
    sys.stderr.flush()


def env_entries(names, environ):
    """`NAME=value` entries for the pbsenv lines; None when one does not fit (logged)."""
    entries, size = [], 0
    for line in names:
        name = line.split("=", 1)[0].encode("utf-8", "surrogateescape")
        entry = name + b"=" + environ.get(name, b"")
        if len(entry) > pbs.MAX_ENTRY:
            log(f"environment {name.decode('utf-8', 'surrogateescape')} is to big")
            return None
        size += 1 + len(entry)
        entries.append(entry)
    return entries, size


def add_packet(ip, secret, names, environ):
    """The add packet for address bytes `ip`; the environment is left out when it does not fit."""
    head = pbs.header(pbs.ADD, ip) + bytes([len(secret)]) + secret
    found = env_entries(names, environ)
    if found is not None and len(head) + 1 + found[1] > pbs.MAX_PACKET:
        log("to many environment entries (pkg to small)")
        found = None
    return head + pbs.env_block(found[0] if found else [])


def settings(home=None):
    """(servers, port, secret, pbsenv lines); Refused with pbsadd.c's text."""
    try:
        servers, port, secret, names = pbs.servers(home), pbs.port(home), pbs.secret(home), pbs.envs(home)
    except pbs.ConfigError:
        raise Refused("unable to read controls") from None
    if len(secret) > pbs.MAX_SECRET:
        raise Refused("control/pbssecret is to long")
    if len(names) > pbs.MAX_ENVS:
        raise Refused("control/pbsenvs has to many entries")
    return servers, port, secret, names


def remote_ip(environ):
    try:
        return pbs.ipv4(environ[b"TCPREMOTEIP"].decode("ascii"))
    except (KeyError, UnicodeError, ValueError):
        raise Refused("unable to read $TCPREMOTEIP") from None


def register(environ, home=None):
    """Send the add packet to every server (Refused on bad configuration)."""
    servers, port, secret, names = settings(home)
    packet = add_packet(remote_ip(environ), secret, names, environ)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        log("socket syscall failed")
        return
    with sock:
        for server in servers:
            try:
                sock.sendto(packet, (server, port))
            except OSError:
                pass  # UDP: pbsadd.c does not look at sendto's result either


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if b"NOPBS" not in os.environb:
        try:
            register(os.environb)
        except Refused as e:
            log(str(e))
            return 1
    if not args:
        return 0
    try:
        os.execvp(args[0], args)
    except OSError:
        log("unable to start pop3 daemon")
        return 1


if __name__ == "__main__":
    sys.exit(main())
