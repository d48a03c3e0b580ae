"""POP-before-SMTP packets and controls shared by pbsdbd, pbsadd and pbscheck
(qmail-ldap's pbsdbd.c, pbsadd.c, pbscheck.c; spec 2.2, 5.8).

A packet (UDP, at most 1024 bytes) starts with a header: one byte type, one
byte address length (4 for IPv4), the address. Then:

    A (add, pbsadd -> every server, no answer):
        secret length byte, secret, environment block
    Q (query, pbscheck -> a server):
        one status byte (its value is not looked at, but it must be there)
    R (reply, pbsdbd -> pbscheck):
        b"R" (may relay) or b"N" (may not), then the stored environment block

An environment block is a count byte followed by that many entries, each a
length byte and `NAME=value` (length = name + 1 + value, at most 255).
"""

import ipaddress

from engine import control

MAX_PACKET = 1024
ADD, QUERY, REPLY = b"A", b"Q", b"R"
RELAY, NORELAY = b"R", b"N"
MAX_PORT = 65000
MAX_SECRET = 255
MAX_ENVS = 255
MAX_ENTRY = 255


class ConfigError(Exception):
    """A pbs control file is missing, unreadable or invalid."""


def header(kind, addr):
    return kind + bytes([len(addr)]) + addr


def ipv4(text):
    """The 4 address bytes of a dotted IPv4 address; ValueError when it is not one."""
    return ipaddress.IPv4Address(text.strip()).packed


def env_block(entries):
    """The count byte and the length-prefixed entries (bytes `NAME=value`, each at most 255 long)."""
    return bytes([len(entries)]) + b"".join(bytes([len(e)]) + e for e in entries)


def parse_env_block(block):
    """The entries of an environment block as (name, value) bytes pairs; stops where the data ends."""
    if not block:
        return []
    count, pos, pairs = block[0], 1, []
    for _ in range(count):
        if pos >= len(block):
            break
        size = block[pos]
        entry = block[pos + 1:pos + 1 + size]
        pos += 1 + size
        name, _, value = entry.partition(b"=")
        pairs.append((name, value))
    return pairs


# -- controls -------------------------------------------------------------------------------

def _read(reader, name, *args):
    try:
        return reader(name, *args)
    except (control.ControlError, OSError) as e:
        raise ConfigError(str(e)) from e


def port(home=None):
    """control/pbsport (2821); above 65000 is a ConfigError."""
    value = _read(control.read_int, "pbsport", 2821, home)
    if value > MAX_PORT:
        raise ConfigError(f"control/pbsport: {value} is above {MAX_PORT}")
    return value


def servers(home=None):
    """control/pbsservers as IPv4 address strings; missing, empty or not IPv4 is a ConfigError."""
    lines = _read(control.read_list, "pbsservers", None, home)
    if not lines:
        raise ConfigError("control/pbsservers is missing or empty")
    try:
        return [str(ipaddress.IPv4Address(line.strip())) for line in lines]
    except ValueError as e:
        raise ConfigError(f"control/pbsservers: {e}") from e


def secret(home=None):
    """control/pbssecret as bytes; a missing file is a ConfigError (the spec makes it required)."""
    line = _read(control.read_line, "pbssecret", None, home)
    if line is None:
        raise ConfigError("control/pbssecret is missing")
    return line.encode("utf-8", "surrogateescape")


def envs(home=None):
    """control/pbsenv lines (`NAME`, `NAME=NEWNAME` or `NAME=NEWNAME=prefix`)."""
    return _read(control.read_list, "pbsenv", [], home)
