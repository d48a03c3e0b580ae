"""qmail-ldap's mailmagic.c: the `%HEADER%` block of administrator-written texts.

qmail-quotawarn, qmail-reply and qmail-secretary send texts an administrator
or user wrote. If the text's first line is exactly `%HEADER%` (any case),
the lines up to the first empty line are header candidates: each header
kind is allowed (kept, replacing the default), forced (our value wins) or
denied, and continuation lines stay with an allowed header. Defaults are
added for every allowed or forced header that was not given.
"""

from dataclasses import dataclass

ALLOW, FORCE, DENY = "allow", "force", "deny"
DEFAULT = ""  # matches any header not listed before it


@dataclass
class Field:
    name: bytes          # e.g. b"Subject:" or b"X-" (a prefix)
    value: bytes | None  # default value, or None for none
    kind: str


def headermagic(text, fields):
    """(header bytes, offset of the body in `text`) for a %HEADER% text and a field table."""
    header = bytearray()
    seen = set()
    pos = 0
    lines = text.split(b"\n")
    if lines and len(lines) > 1 and lines[0].lower() == b"%header%":
        pos = len(lines[0]) + 1
        keep = False
        for raw in lines[1:]:
            if pos + len(raw) >= len(text):  # a last line without its LF ends the block
                break
            pos += len(raw) + 1
            line = raw + b"\n"
            if len(line) <= 1:
                break
            if line[:1] in (b"\t", b" ") and keep:
                header += line
                continue
            keep = False
            for i, f in enumerate(fields):
                if not line.lower().startswith(f.name.lower()):
                    continue
                if f.kind in (DENY, FORCE):
                    break
                keep = True
                seen.add(i)
                header += line
                break
    for i, f in enumerate(fields):
        if i not in seen and f.value is not None and f.kind != DENY:
            header += f.name + b" " + f.value
            if not header.endswith(b"\n"):
                header += b"\n"
    return bytes(header), pos
