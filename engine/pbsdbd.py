"""pbsdbd: the POP-before-SMTP database daemon (qmail-ldap's pbsdbd.c; spec 2.2, 5.8).

    pbsdbd

Listens on UDP control/pbsip (0.0.0.0) port control/pbsport (2821). An add
packet (engine.pbs) carrying control/pbssecret records the client address
with its environment block for control/pbstimeout seconds (600); a query is
answered with R (may relay, plus the stored environment) or N. Adds with
another secret and malformed packets are dropped with a warning on stderr
(pbsdbd.c's texts, spelling included, so existing log filters still match).

The cache holds control/pbscachesize bytes (1048576) of entries, each
counted as pbsdbd.c stores it (13 bytes + address + environment), in
insertion order: when a new entry does not fit, the oldest entries are
dropped, live or not, as pbsdbd.c's ring buffer overwrites them. Re-adding
an address replaces its entry (the old one still occupies its bytes until
it is dropped, as in the ring). pbsdbd.c also keeps its hash table in the
same memory: the bytes left for entries are the same here.

Run it under supervise as an unprivileged user (it needs no privilege unless
control/pbsport is below 1024), e.g. a run script
`exec setuidgid qmaild pbsdbd 2>&1`.

SECURITY: the secret only proves that an add came from one of our auth
programs; anyone who can reach the port may ask about any address.
"""

import collections
import ipaddress
import socket
import sys
import time

from engine import control, pbs

ENTRY_OVERHEAD = 13  # link, expiry, environment size (4 bytes each) and the address length byte


def fatal(text):
    sys.stderr.write(f"pbsdbd: fatal: {text}\n")
    sys.stderr.flush()
    return 111


def warn(text):
    sys.stderr.write(f"pbsdbd: warning: {text}\n")
    sys.stderr.flush()


def hash_table_size(cachesize):
    """pbsdbd.c's hash table size: the smallest power of two from 4 above cachesize/32."""
    size = 4
    while size <= cachesize >> 5:
        size <<= 1
    return size


class Cache:
    """Addresses with their expiry and environment block, bounded by bytes like pbsdbd.c's ring."""

    def __init__(self, cachesize, timeout):
        self.capacity = max(cachesize - hash_table_size(cachesize), 0)
        self.timeout = timeout
        self.used = 0
        self.entries = {}                 # address -> (expiry, env block, token)
        self.ring = collections.deque()   # (address, size, token) oldest first
        self.tokens = 0

    def add(self, addr, env, now):
        size = ENTRY_OVERHEAD + len(addr) + len(env)
        if size > self.capacity or len(addr) > 255:
            return
        self.entries.pop(addr, None)
        while self.used + size > self.capacity:
            self._drop_oldest()
        self.tokens += 1
        self.entries[addr] = (now + self.timeout, env, self.tokens)
        self.ring.append((addr, size, self.tokens))
        self.used += size

    def _drop_oldest(self):
        addr, size, token = self.ring.popleft()
        self.used -= size
        current = self.entries.get(addr)
        if current is not None and current[2] == token:
            del self.entries[addr]

    def lookup(self, addr, now):
        """The environment block of a live entry, else None (an entry is live up to its expiry second)."""
        found = self.entries.get(addr)
        if found is None or found[0] < now:
            return None
        return found[1]


class Daemon:
    """pbsdbd.c's doit: one datagram in, at most one reply out."""

    def __init__(self, secret, cache):
        self.secret = secret
        self.cache = cache

    def handle(self, packet, now=None):
        """The reply datagram for `packet`, or None."""
        now = int(time.time()) if now is None else now
        if len(packet) < 2 or packet[1] + 2 >= len(packet):
            warn("bad packet")
            return None
        kind = packet[:1]
        if kind == pbs.QUERY:
            return self.query(packet, now)
        if kind == pbs.ADD:
            self.add(packet, now)
            return None
        warn("response recived" if kind == pbs.REPLY else "bad packet")
        return None

    def query(self, packet, now):
        addr = packet[2:2 + packet[1]]
        env = self.cache.lookup(addr, now)
        reply = pbs.header(pbs.REPLY, addr)
        if env is None:
            return reply + pbs.NORELAY
        if len(reply) + 1 + len(env) > pbs.MAX_PACKET:
            warn("environment would exceed package size, dropped")
            return None
        return reply + pbs.RELAY + env

    def add(self, packet, now):
        alen = packet[1]
        addr = packet[2:2 + alen]
        slen = packet[2 + alen]
        start = 3 + alen
        if start + slen > len(packet):
            warn("bad packet")
            return
        if packet[start:start + slen] != self.secret:
            warn("no authorized add packet")
            return
        env = packet[start + slen:]
        end = _env_block_end(env)
        if end is None:
            warn("environment would exceed package size, dropped")
            return
        if end != len(env):
            warn("trailing garbadge at end of packet, dropped")
            return
        self.cache.add(addr, env, now)


def _env_block_end(env):
    """Where the environment block at the start of `env` ends; None when it runs past the packet."""
    if not env:
        return None
    pos = 1
    for _ in range(env[0]):
        if pos >= len(env):
            return None
        pos += env[pos] + 1
        if pos > len(env):
            return None
    return pos


def load(home=None):
    """(bind address, port, Daemon) from control/; ConfigError when a file is missing or bad."""
    try:
        ip = control.read_line("pbsip", "0.0.0.0", home)
        address = str(ipaddress.IPv4Address(ip.strip()))
        cachesize = control.read_ulong("pbscachesize", 1048576, home)
        timeout = control.read_int("pbstimeout", 600, home)
    except (control.ControlError, OSError, ValueError) as e:
        raise pbs.ConfigError(str(e)) from e
    return address, pbs.port(home), Daemon(pbs.secret(home), Cache(cachesize, timeout))


def bind(address, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    return s


def serve(sock, daemon):
    while True:
        try:
            packet, peer = sock.recvfrom(pbs.MAX_PACKET)
        except InterruptedError:
            continue
        reply = daemon.handle(packet)
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError:
                pass  # pbsdbd.c: "if it fails, too bad"; the client asks again or gives up


def main(argv=None):
    try:
        address, port, daemon = load()
    except pbs.ConfigError as e:
        return fatal(f"unable to read controls ({e})")
    try:
        sock = bind(address, port)
    except OSError as e:
        return fatal(f"unable to bind UDP socket: {e.strerror}")
    serve(sock, daemon)


if __name__ == "__main__":
    sys.exit(main())
