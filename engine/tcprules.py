"""tcprules and tcpserver's rule lookup (ucspi-tcp), for the SMTP/QMTP/QMQP listeners.

    tcprules rules.cdb rules.tmp < rules

Rules are `address:allow` or `address:deny`, each optionally followed by
`,NAME=<d>value<d>` settings where <d> is any delimiter character
(`RELAYCLIENT=""`, `RBL=/yes/`). Addresses: an IP, a prefix ending with a
dot (`127.`), a last-component range (`1.2.3.37-53`), `=host`, `=.domain`,
`info@address`, or the empty default. The compiled cdb is byte-compatible
with ucspi-tcp's tcprules (deny is `D\\0`, a setting `+NAME=value\\0`), so
either tool can build it. Lines without a colon and `#` lines are ignored;
anything else unparsable is fatal (exit 100), leaving the old cdb alone.

Lookup order (tcpserver): info@ip, info@=host, ip, =host, ip prefixes
ending with a dot, =.host suffixes, `=`, then the empty rule; the first
found wins; no rule at all means allow.
"""

import sys
from dataclasses import dataclass, field

from engine import cdb


class RuleError(Exception):
    """A rule line that cannot be parsed; the message names the line."""


@dataclass
class Decision:
    allow: bool = True
    env: dict = field(default_factory=dict)
    rule: bytes | None = None  # which key matched, for logs


def parse_instructions(text):
    """`allow,A="x"` -> the cdb value (b"" / b"D\\0" + settings); ValueError when malformed."""
    if text.startswith(b"deny"):
        data, rest = bytearray(b"D\0"), text[4:]
    elif text.startswith(b"allow"):
        data, rest = bytearray(), text[5:]
    else:
        raise ValueError("unknown instruction")
    while rest:
        if rest[:1] != b",":
            raise ValueError("expected a comma")
        eq = rest.find(b"=")
        if eq < 0 or eq + 1 >= len(rest):
            raise ValueError("missing = or delimiter")
        name, delim = rest[1:eq], rest[eq + 1:eq + 2]
        end = rest.find(delim, eq + 2)
        if end < 0:
            raise ValueError("missing closing delimiter")
        data += b"+" + name + b"=" + rest[eq + 2:end] + b"\0"
        rest = rest[end + 1:]
    return bytes(data)


def expand_address(address):
    """The keys one address stands for: a `a.b.c.x-y` range becomes one key per number."""
    dot = address.rfind(b".")
    last = address[dot + 1:]
    if b"-" in last and not address.startswith(b"="):
        lo, _, hi = last.partition(b"-")
        if lo.isdigit() and hi.isdigit():
            return [address[:dot + 1] + str(n).encode() for n in range(int(lo), int(hi) + 1)]
    return [address]


def parse_rules(text):
    """[(key, value)] in file order; RuleError for the first bad line."""
    pairs = []
    for line in text.split(b"\n"):
        if not line or line.startswith(b"#"):
            continue
        colon = line.find(b":")
        if colon < 0:
            continue
        try:
            value = parse_instructions(line[colon + 1:])
        except ValueError:
            raise RuleError(f"unable to parse this line: {line.decode('utf-8', 'replace')}") from None
        pairs += [(key, value) for key in expand_address(line[:colon])]
    return pairs


def compile_rules(text, cdb_path, tmp_path):
    """Write the rules into cdb_path atomically (through tmp_path), like tcprules."""
    pairs = parse_rules(text)
    cdb.create(cdb_path, pairs, tmp=tmp_path)


def candidate_keys(ip, host=None, info=None):
    """tcpserver's lookup order for a connection."""
    keys = []
    if info:
        keys.append(f"{info}@{ip}")
        if host:
            keys.append(f"{info}@={host}")
    keys.append(ip)
    if host:
        keys.append(f"={host}")
    sep = "." if "." in ip else ":"
    end = len(ip)
    while True:
        end = ip.rfind(sep, 0, end)
        if end < 0:
            break
        keys.append(ip[:end + 1])
    if host:
        pos = host.find(".")
        while pos >= 0:
            keys.append(f"={host[pos:]}")
            pos = host.find(".", pos + 1)
        keys.append("=")
    keys.append("")
    return [k.encode() for k in keys]


def decode_value(value):
    allow = not value.startswith(b"D")
    env = {}
    for item in value.split(b"\0"):
        if item.startswith(b"+"):
            name, _, val = item[1:].partition(b"=")
            env[name.decode()] = val.decode("utf-8", "surrogateescape")
    return allow, env


def lookup(reader, ip, host=None, info=None):
    """The Decision for a connection from `ip` (and its host name / ident) in a rules cdb."""
    for key in candidate_keys(ip, host, info):
        value = reader.get(key)
        if value is not None:
            allow, env = decode_value(value)
            return Decision(allow, env, key)
    return Decision()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("tcprules: usage: tcprules rules.cdb rules.tmp\n")
        return 100
    try:
        compile_rules(sys.stdin.buffer.read(), argv[0], argv[1])
    except RuleError as e:
        sys.stderr.write(f"tcprules: fatal: {e}\n")
        return 100
    except OSError as e:
        sys.stderr.write(f"tcprules: fatal: unable to create {argv[1]}: {e.strerror}\n")
        return 111
    return 0


if __name__ == "__main__":
    sys.exit(main())
