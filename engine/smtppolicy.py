"""qmail-smtpd's policy: the control files and environment it obeys, and the address checks.

Kept apart from the protocol (engine.smtpd). Controls are the ones
qmail-smtpd's setup() reads (qmail-smtpd.c, rcpthosts.c); the environment
switches (RELAYCLIENT, SANITYCHECK, RCPTCHECK, ...) come per connection from
tcprules or tcpserver. A worker keeps one Controls snapshot and re-reads it
when a file in control/ changed (checked at every connection) or on SIGHUP, so
an administrator's edit applies to the next connection, as with qmail-smtpd.
"""

import os
import time

from engine import cdb, control, rbl

CATCHALL = "catchall"
DASH_EXT_LEVELS = 4


def _map(name, home):
    items = control.read_list(name, None, home)
    return None if items is None else control.ConstMap(items)


def in_address_list(cmap, addr):
    """badmailfrom-style match: the full address, `@domain`, or `user@` (ASCII case-insensitive)."""
    if cmap is None:
        return False
    if addr in cmap:
        return True
    at = addr.rfind("@")
    return at >= 0 and (addr[at:] in cmap or addr[:at + 1] in cmap)


def in_relaymailfrom(cmap, addr):
    """relaymailfrom: the full address or `@domain` only."""
    if cmap is None:
        return False
    at = addr.rfind("@")
    return addr in cmap or (at >= 0 and addr[at:] in cmap)


def in_goodmailaddr(cmap, addr):
    """goodmailaddr: full, `@domain`, `user@`, `prefix-catchall@domain` (DASH_EXT), `catchall@domain`."""
    if cmap is None:
        return False
    if in_address_list(cmap, addr):
        return True
    at = addr.rfind("@")
    if at < 0:
        return False
    domain = addr[at:]
    dashes = [i for i, ch in enumerate(addr[:at]) if ch == "-"][:DASH_EXT_LEVELS]
    for i in reversed(dashes):
        if f"{addr[:i + 1]}{CATCHALL}{domain}" in cmap:
            return True
    return f"{CATCHALL}{domain}" in cmap


def relay_probe(addr):
    """BLOCKRELAYPROBE: `@`, `%` or `!` before the last `@`."""
    at = addr.rfind("@")
    return at > 0 and any(ch in "@%!" for ch in addr[:at])


def sanity_error(addr):
    """SANITYCHECK's rejection text for a non-bounce sender, or None."""
    at = addr.rfind("@")
    if at < 0:
        return "mailfrom without @ is administratively denied"
    if at == 0 or at == len(addr) - 1:
        return "mailfrom without user or domain part is administratively denied"
    if "." not in addr[at:]:
        return "mailfrom without . in domain part is administratively denied"
    return None


class RcptHosts:
    """rcpthosts.c: locals (or locals.cdb), rcpthosts with `.suffix` entries (or rcpthosts.cdb), morercpthosts.cdb."""

    def __init__(self, home, me):
        self.home = home
        self.locals_cdb = self._cdb("locals.cdb")
        self.locals = None if self.locals_cdb else control.ConstMap(
            control.read_list("locals", [me] if me else [], home))
        self.rcpthosts_cdb = self._cdb("rcpthosts.cdb")
        self.rcpthosts = None if self.rcpthosts_cdb else control.ConstMap(
            control.read_list("rcpthosts", [], home))
        self.more_cdb = None if self.rcpthosts_cdb else self._cdb("morercpthosts.cdb")

    def _cdb(self, name):
        try:
            return cdb.Cdb(control.path(name, self.home))
        except FileNotFoundError:
            return None

    def is_local(self, addr):
        """localhosts(): the domain is one of ours (an address without `@` is not)."""
        at = addr.rfind("@")
        if at < 0:
            return False
        host = addr[at + 1:].lower()
        if self.locals_cdb is not None:
            return self.locals_cdb.get(host.encode("utf-8", "surrogateescape")) is not None
        return host in self.locals

    def allowed(self, addr, nolocal=False):
        """rcpthosts(): may we accept mail for this address without RELAYCLIENT?"""
        at = addr.rfind("@")
        if at < 0:
            return True  # envnoathost makes it local
        host = addr[at + 1:].lower()
        if not nolocal and self.is_local(addr):
            return True
        suffixes = [host[i:] for i in range(len(host)) if i == 0 or host[i] == "."]
        if self.rcpthosts_cdb is not None:
            return any(self.rcpthosts_cdb.get(s.encode("utf-8", "surrogateescape")) is not None
                       for s in suffixes)
        if any(s in self.rcpthosts for s in suffixes):
            return True
        if self.more_cdb is not None:
            return any(self.more_cdb.get(s.encode("utf-8", "surrogateescape")) is not None
                       for s in suffixes)
        return False


class Controls:
    """Everything qmail-smtpd reads from control/ at connection setup."""

    def __init__(self, home):
        self.home = home
        self.me = control.read_line("me", None, home)
        if self.me is None:
            raise control.ControlError("control/me is missing")
        self.greeting = control.read_line("smtpgreeting", "", home)
        self.cookie = control.read_line("smtpclustercookie", "", home)[:32]
        self.localiphost = control.read_line("localiphost", self.me, home)
        self.timeout = max(1, control.read_int("timeoutsmtpd", 120, home))
        self.databytes = control.read_ulong("databytes", 0, home)
        self.dataz = control.read_int("smtpdataz", 0, home) != 0
        self.smtpcert = control.read_line("smtpcert", "", home)
        self.tlsciphers = control.read_line("tlsciphers", "compat", home)
        self.tlsdheparams = control.read_line("tlsdheparams", "none", home)
        self.goodmailfrom = _map("goodmailfrom", home)
        self.badmailfrom = _map("badmailfrom", home)
        self.badmailfrom_unknown = _map("badmailfrom-unknown", home)
        self.relaymailfrom = _map("relaymailfrom", home)
        self.badrcptto = _map("badrcptto", home)
        self.goodmailaddr = _map("goodmailaddr", home)
        self.rbllist = rbl.parse_rbllist(control.read_list("rbllist", [], home))  # None: a malformed line
        self.signatures = control.read_list("signatures", None, home)
        self.rcpthosts = RcptHosts(home, self.me)


class ControlCache:
    """One Controls per worker, re-read when a file in control/ changed: checked at every connection
    (a directory listing and a stat per file), as qmail-smtpd reads its controls per connection."""

    RACY_NS = 50_000_000  # file times tick coarsely: a file changed this close to our read may change unseen

    def __init__(self, home):
        self.home = home
        self.current = None
        self.stamp = None
        self.read_at = 0

    def _stamp(self):
        d = control.control_dir(self.home)
        stamp = []
        for n in sorted(os.listdir(d)):
            try:
                st = os.stat(os.path.join(d, n))
            except FileNotFoundError:
                continue  # removed meanwhile
            stamp.append((n, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamp)

    def get(self):
        stamp = self._stamp()
        racy = any(mtime >= self.read_at - self.RACY_NS for _, mtime, _, _ in stamp)
        if stamp != self.stamp or self.current is None or racy:
            self.read_at = time.time_ns()
            self.current = Controls(self.home)
            self.stamp = stamp
        return self.current

    def invalidate(self):
        self.current = None
