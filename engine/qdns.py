"""qmail's dns.c and ipme.c: address lookups and this host's own addresses, for every client of DNS.

A dnspython async resolver (QMAIL_DNS_SERVER=ip[:port][,...] replaces
/etc/resolv.conf's nameservers, for tests and special setups); failures are
classified as dns.c does: DNS_HARD (no such name / no such record) or
DNS_SOFT (try again later). Used by qmail-remote, qmail-smtpd's RBL and
RETURNMXCHECK, the localiphost rewrite and tcp-env.
"""

import asyncio
import ipaddress
import os
import random
import socket
import time

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename
import psutil


DNS_SOFT, DNS_HARD = "soft", "hard"
_default_resolver = {}


def make_resolver():
    """A dnspython async resolver: QMAIL_DNS_SERVER (ip[:port],...) if set, else /etc/resolv.conf."""
    spec = os.environ.get("QMAIL_DNS_SERVER", "")
    if spec not in _default_resolver:
        if spec:
            r = dns.asyncresolver.Resolver(configure=False)
            servers = [s.strip() for s in spec.split(",") if s.strip()]
            r.nameservers = [s.rsplit(":", 1)[0] if s.count(":") == 1 else s for s in servers]
            r.port = int(servers[0].rsplit(":", 1)[1]) if servers[0].count(":") == 1 else 53
        else:
            r = dns.asyncresolver.Resolver()
        _default_resolver[spec] = r
    return _default_resolver[spec]


def ip_literal(name):
    """An IPv4 address written bare or as [a.b.c.d], else None (dns.c's ip_scan / ip_scanbracket)."""
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        return None


async def query(resolver, name, rdtype):
    """(status, answer): status 0, DNS_SOFT or DNS_HARD as dns.c's resolve() classifies failures."""
    try:
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError):
        return DNS_HARD, None  # not a valid domain name: no such host
    try:
        return 0, await resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=True)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return DNS_HARD, None
    except (dns.exception.DNSException, OSError):
        return DNS_SOFT, None


async def dns_ip(resolver, name, pref=0):
    """(status, [(ip, pref)]) for a host: literal, else A records, else (beyond qmail) AAAA records."""
    literal = ip_literal(name)
    if literal:
        return 0, [(literal, pref)]
    if not name:
        return DNS_HARD, []
    status, answer = await query(resolver, name, "A")
    if status == 0:
        return 0, [(r.address, pref) for r in answer]
    if status == DNS_HARD:
        status6, answer6 = await query(resolver, name, "AAAA")
        if status6 == 0:
            return 0, [(r.address, pref) for r in answer6]
    return status, []


async def dns_mxip(resolver, name):
    """dns.c's dns_mxip: MX hosts by preference (random among equal) and their addresses.

    Status 1 means some MX host failed temporarily (use what was found)."""
    literal = ip_literal(name)
    if literal:
        return 0, [(literal, 0)]
    status, answer = await query(resolver, name, "MX")
    if status == DNS_SOFT:
        return DNS_SOFT, []
    if status == DNS_HARD or not answer:
        return await dns_ip(resolver, name)
    mxs = [(r.preference, "" if r.exchange == dns.name.root else r.exchange.to_text(omit_final_dot=True))
           for r in answer]
    random.shuffle(mxs)
    mxs.sort(key=lambda m: m[0])  # stable: equal preferences stay in random order
    results = await asyncio.gather(*(dns_ip(resolver, host, pref) for pref, host in mxs))
    ips, flagsoft = [], 0
    for st, found in results:
        if st == DNS_SOFT:
            flagsoft = 1
        ips.extend(found)
    return flagsoft, ips


async def dns_ptr(resolver, ip):
    """dns.c's dns_ptr: (status, name) of an address's first PTR record, without the final dot."""
    status, answer = await query(resolver, dns.reversename.from_address(ip).to_text(), "PTR")
    if status:
        return status, None
    return 0, answer[0].target.to_text(omit_final_dot=True)


_ipme_cache = [0.0, frozenset()]
IPME_REFRESH = 30  # seconds; qmail-remote learns them once per process, our pool lives long


def local_ips():
    """ipme.c: 0.0.0.0 plus every address of an interface that is up (cached for IPME_REFRESH seconds)."""
    now = time.monotonic()
    if now - _ipme_cache[0] > IPME_REFRESH:
        _ipme_cache[:] = [now, _scan_local_ips()]
    return _ipme_cache[1]


def _scan_local_ips():
    stats = psutil.net_if_stats()
    ips = {"0.0.0.0"}
    for ifname, addrs in psutil.net_if_addrs().items():
        if ifname in stats and stats[ifname].isup:
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    ips.add(str(ipaddress.ip_address(a.address.split("%")[0])))
    return frozenset(ips)
