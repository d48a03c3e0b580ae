"""pbscheck: lets a recent POP/IMAP client relay (qmail-ldap's pbscheck.c; spec 2.2, 5.8).

    pbscheck qmail-smtpd [args...]

Run between tcpserver and qmail-smtpd. Asks a pbsdbd (control/pbsservers,
port control/pbsport) about $TCPREMOTEIP: first a pseudo-random server,
then, after each second without an answer, every server in list order;
after the last one has had its second it gives up. Only a reply (type R)
for the same address counts. If it says R, RELAYCLIENT is set (empty); the
environment entries of the reply are set, renamed or prefixed by
control/pbsenv (`NAME=NEW` renames, `NAME=NEW=prefix` renames and puts
prefix before the value). Then qmail-smtpd is exec'd — also when the
daemons do not answer or anything else goes wrong at run time.

Misconfiguration is answered on stdout in SMTP form and exits 1, so the
client sees why (pbscheck.c's texts): no program → `554 pop before smtp
subprogram uncorrectly installed (#5.3.5)`; no or bad $TCPREMOTEIP → `554
unable to read $TCPREMOTEIP (#5.3.5)`; bad control files → `554 unable to
read controls (#5.3.5)`; more than 255 pbsenv lines → `554 to many
additional environments defined (#5.3.5)`; out of memory → `421 out of
memory (#4.3.0)`; the program cannot be run → `554 unable to start smtp
daemon (#5.3.5)`. With NOPBS set it execs the program at once.

SECURITY: UDP replies are not authenticated (as in pbscheck.c), so only the
variables named in our own control/pbsenv are taken from a reply; pbscheck.c
set whatever the reply carried (PATH, LD_PRELOAD ...). pbscheck.c also
answered `421 chdir failed (#4.3.0)` when its working directory could not
be opened; this one never changes directory, so that cannot happen.
"""

import os
import select
import socket
import sys
import time

from engine import pbs

WAIT = 1.0  # seconds for each server's answer


class Refused(Exception):
    """A configuration problem: `reply` goes to the client, `text` to the log."""

    def __init__(self, reply, text):
        super().__init__(text)
        self.reply = reply
        self.text = text


def settings(home=None):
    try:
        servers, port, lines = pbs.servers(home), pbs.port(home), pbs.envs(home)
    except pbs.ConfigError:
        raise Refused("554 unable to read controls (#5.3.5)", "pbscheck unable to read controls") from None
    if len(lines) > pbs.MAX_ENVS:
        raise Refused("554 to many additional environments defined (#5.3.5)",
                      "pbscheck control/pbsenvs has to many entries")
    return servers, port, [line.encode("utf-8", "surrogateescape") for line in lines]


def remote_ip(environ):
    try:
        return pbs.ipv4(environ[b"TCPREMOTEIP"].decode("ascii"))
    except (KeyError, UnicodeError, ValueError):
        raise Refused("554 unable to read $TCPREMOTEIP (#5.3.5)", "pbscheck: unable to read $TCPREMOTEIP") from None


def ask(sock, servers, port, query, wait=WAIT):
    """The first datagram answering `query`: one pseudo-random server, then each in order; None on silence."""
    order = [servers[(int(time.time()) ^ os.getpid()) % len(servers)]] + servers
    for server in order:
        try:
            sock.sendto(query, (server, port))
        except OSError:
            return None
        if select.select([sock], [], [], wait)[0]:
            try:
                return sock.recv(pbs.MAX_PACKET)
            except OSError:
                return None
    sys.stderr.write("pbscheck: no response from server\n")
    return None


def rewrite(name, value, lines):
    """control/pbsenv's rename/prefix for one variable: the first line `NAME=...` decides."""
    for line in lines:
        if line.startswith(name + b"="):
            new, has_prefix, prefix = line[len(name) + 1:].partition(b"=")
            return new, (prefix + value if has_prefix else value)
    return name, value


def wanted(name, lines):
    """Whether control/pbsenv names the variable (a line `NAME`, `NAME=...`)."""
    return any(line.split(b"=", 1)[0] == name for line in lines)


def apply_reply(reply, ip, lines, environ):
    """Set RELAYCLIENT and the carried variables when `reply` says R for `ip`; anything else changes nothing."""
    head = pbs.header(pbs.REPLY, ip)
    if not reply.startswith(head) or reply[len(head):len(head) + 1] != pbs.RELAY:
        return
    environ[b"RELAYCLIENT"] = b""
    for name, value in pbs.parse_env_block(reply[len(head) + 1:]):
        if not wanted(name, lines):
            continue
        name, value = rewrite(name, value, lines)
        if name and b"\0" not in name + value and b"=" not in name:
            environ[name] = value


def check(environ, home=None, wait=WAIT):
    """Ask the daemons about $TCPREMOTEIP and update `environ`; Refused on misconfiguration."""
    servers, port, lines = settings(home)
    ip = remote_ip(environ)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return
    with sock:
        reply = ask(sock, servers, port, pbs.header(pbs.QUERY, ip) + b"\0", wait)
    if reply is not None:
        apply_reply(reply, ip, lines, environ)


def enabled(home=None):
    """POP-before-SMTP is configured for the master's SMTP listener: control/pbsservers lists a server."""
    try:
        return bool(pbs.servers(home))
    except pbs.ConfigError:
        return False


def relay_env(env, home=None):
    """The master's SMTP listener's pbscheck: the variables to add to a session's environment (str)
    when a pbsdbd says its $TCPREMOTEIP logged in, else {}. Misconfiguration is logged, not answered:
    the session goes on without relaying, as pbscheck's exec of qmail-smtpd does on any trouble."""
    environ = {b"TCPREMOTEIP": env.get("TCPREMOTEIP", "").encode()}
    try:
        check(environ, home)
    except Refused as e:
        sys.stderr.write(f"{e.text}\n")
        return {}
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in environ.items() if k != b"TCPREMOTEIP"}


def refuse(reply, text):
    sys.stdout.write(reply + "\r\n")
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return 1


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return refuse("554 pop before smtp subprogram uncorrectly installed (#5.3.5)",
                      "usage: pbscheck subprogram ...")
    if b"NOPBS" not in os.environb:
        try:
            check(os.environb)
        except Refused as e:
            return refuse(e.reply, e.text)
        except MemoryError:
            return refuse("421 out of memory (#4.3.0)", "pbscheck out of memory")
    try:
        os.execvp(args[0], args)
    except OSError:
        return refuse("554 unable to start smtp daemon (#5.3.5)", "pbscheck: unable to start smtp daemon")


if __name__ == "__main__":
    sys.exit(main())
