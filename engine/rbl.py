"""DNS checks of qmail-smtpd: RBL lists (rbl.c) and RETURNMXCHECK.

control/rbllist lines are `basedomain action matchon message...`. For an
IPv4 client a.b.c.d each list is asked for the A record of
d.c.b.a.<basedomain>, in file order: a temporary DNS error is ignored; an
answer matches when matchon is `any` or one returned address equals it.
A match with action `addheader` (or with RBLONLYHEADER set) adds an
`X-RBL:` header line and goes on; any other action rejects at MAIL FROM
with the list's message. IPv6 clients are not checked, as in qmail-ldap.
RETURNMXCHECK asks for the sender domain's MX hosts and their addresses.
"""

import re

from engine import qdns


_RBL_LINE = re.compile(r"[ \t]*([^ \t]+)[ \t]+([^ \t]+)[ \t]+([^ \t]+)[ \t]+(.*)", re.S)


def parse_rbllist(lines):
    """[(base, action, matchon, message)], the message verbatim (tabs kept); None when a line has
    fewer than four fields (rblinit()'s parse error: qmail-smtpd then cannot read its controls)."""
    out = []
    for line in lines:
        fields = _RBL_LINE.fullmatch(line)
        if fields is None:
            return None
        out.append(fields.groups())
    return out


def reversed_ipv4(ip):
    if ":" in ip:
        return None
    return ".".join(reversed(ip.split("."))) + "."


def x_rbl(base, matchon, message):
    middle = "" if matchon == "any" else f"matches with {matchon} and "
    return f"X-RBL: ({base}) {middle}tells us {message}\n".encode()


async def listed(base, matchon, rev, resolver):
    """1 listed, 0 not, 2 temporary DNS trouble (rbl_lookup)."""
    if not base:
        return 2
    status, answer = await qdns.query(resolver, rev + base, "A")  # A records only, as dns_ip() in rbl.c
    if status == qdns.DNS_SOFT:
        return 2
    if status != 0:
        return 0
    return 1 if matchon == "any" or any(r.address == matchon for r in answer) else 0


async def check(session, ip, lists):
    """The message of the first rejecting list, or None; tagging lists add to session.rbl_headers.

    lists: parse_rbllist()'s result."""
    rev = reversed_ipv4(ip)
    if rev is None:
        return None
    resolver = qdns.make_resolver()
    only_header = session.env.flag("RBLONLYHEADER")
    for base, action, matchon, message in lists:
        if await listed(base, matchon, rev, resolver) != 1:
            continue
        if only_header or action == "addheader":
            session.rbl_headers.append(x_rbl(base, matchon, message))
            continue
        session.rbl_headers = []
        return message
    return None


async def mx_exists(domain):
    """RETURNMXCHECK as badmxcheck(): True when the domain's MX hosts (or the domain itself when it has
    no MX) have an address, False when not (also a null MX or no domain), None on DNS trouble."""
    if not domain:
        return False
    status, ips = await qdns.dns_mxip(qdns.make_resolver(), domain)
    if status == qdns.DNS_SOFT or (status == 1 and not ips):
        return None
    return status == 0 and bool(ips)
