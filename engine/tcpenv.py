"""tcp-env: qmail's tcp-env(1) (tcp-env.c), run from inetd in front of qmail-smtpd and friends.

`tcp-env [-rR] [-t timeout] program [arg ...]` reads the TCP connection on
fd 0 and sets the variables of tcp-environ(5) before it execs `program`:
PROTO=TCP, TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST, TCPREMOTEIP,
TCPREMOTEPORT, TCPREMOTEHOST and TCPREMOTEINFO.

  * The host names come from the addresses' PTR records, lower-cased; no
    name leaves the variable unset, a temporary DNS failure sets it to
    "softdnserror" (dns.c's dns_ptr; $QMAIL_DNS_SERVER picks the resolver
    as for every qmail program here).
  * TCPREMOTEINFO is the RFC 1413 answer of the remote host (-r, the
    default; -R turns it off), each step given `timeout` seconds (default
    30); it is unset when there is no answer (engine/ident.py).
  * When PROTO is already TCP (tcpserver set everything up), nothing is
    looked at and the program runs with the environment as it is.

As in qmail, every failure (no program, fd 0 not a socket) exits 111 without
a message, unknown options are ignored, and the program is searched in $PATH.
Beyond qmail (IPv4 only), an IPv6 connection gives IPv6 addresses; an
IPv4-mapped one gives the IPv4 address.
"""

import asyncio
import ipaddress
import os
import signal
import socket
import sys

from engine import ident, qdns
from engine.sgetopt import getopt

EXIT_FAIL = 111
DEFAULT_TIMEOUT = 30
SOFT_DNS_NAME = "softdnserror"
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


class _Quiet:
    """subgetopt: an unknown option is passed over silently, not reported."""

    def write(self, data):
        pass

    def flush(self):
        pass


def scan_ulong(text):
    """qmail's scan_ulong: the leading decimal digits of `text` (bytes), 0 when there are none."""
    digits = len(text) - len(text.lstrip(b"0123456789"))
    return int(text[:digits] or b"0")


def parse_args(argv):
    """(look up remote info?, timeout, program argv) from tcp-env's command line (bytes)."""
    remoteinfo, timeout = True, DEFAULT_TIMEOUT
    opts = getopt(argv, b"rRt:", "tcp-env", stderr=_Quiet())
    for opt, arg in opts:
        if opt == b"r":
            remoteinfo = True
        elif opt == b"R":
            remoteinfo = False
        elif opt == b"t":
            timeout = scan_ulong(arg)
    return remoteinfo, timeout, opts.rest()


def _plain_ip(sockaddr):
    """(ip text, port) of a socket address; an IPv4-mapped IPv6 address becomes IPv4."""
    ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), sockaddr[1]


def connection_ends():
    """((local ip, port), (remote ip, port)) of the TCP socket on fd 0; OSError when it is none."""
    with socket.socket(fileno=os.dup(0)) as s:
        if s.family not in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"fd 0 is not a TCP socket (family {s.family})")
        return _plain_ip(s.getsockname()), _plain_ip(s.getpeername())


async def _host_names(ips):
    resolver = qdns.make_resolver()
    return await asyncio.gather(*(qdns.dns_ptr(resolver, ip) for ip in ips))


def host_names(local_ip, remote_ip):
    """The TCPLOCALHOST and TCPREMOTEHOST values (None = unset), looked up together."""
    return [_host_value(status, name) for status, name in asyncio.run(_host_names([local_ip, remote_ip]))]


def _host_value(status, name):
    if status == qdns.DNS_SOFT:
        return SOFT_DNS_NAME
    if status:
        return None
    return name.encode("utf-8", "surrogateescape").translate(_ASCII_LOWER).decode("utf-8", "surrogateescape")


def _set(env, name, value):
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value


def tcp_environment(env, remoteinfo, timeout):
    """Fill `env` (a dict) with the tcp-environ(5) variables of the connection on fd 0."""
    (local_ip, local_port), (remote_ip, remote_port) = connection_ends()
    env["PROTO"] = "TCP"
    env["TCPLOCALPORT"], env["TCPLOCALIP"] = str(local_port), local_ip
    env["TCPREMOTEPORT"], env["TCPREMOTEIP"] = str(remote_port), remote_ip
    local_host, remote_host = host_names(local_ip, remote_ip)
    _set(env, "TCPLOCALHOST", local_host)
    _set(env, "TCPREMOTEHOST", remote_host)
    info = ident.remoteinfo(remote_ip, remote_port, local_ip, local_port, timeout) if remoteinfo else None
    _set(env, "TCPREMOTEINFO", info)


def main(argv=None):
    argv = [os.fsencode(a) for a in (sys.argv if argv is None else argv)]
    remoteinfo, timeout, program = parse_args(argv)
    if not program:
        return EXIT_FAIL
    env = dict(os.environ)
    if env.get("PROTO") != "TCP":
        try:
            tcp_environment(env, remoteinfo, timeout)
        except OSError:
            return EXIT_FAIL
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the program gets the default, as sig_pipedefault()
    try:
        os.execvpe(program[0], program, env)
    except OSError:
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
