"""qmail's quote.c: writes an address's local part with as little RFC 821/822 quoting as possible.

A local part is quoted when it is empty, has a byte outside qmail's ok-set
(8-bit included), or has a leading, trailing or doubled dot. Inside quotes,
CR, LF, `"` and backslash get a backslash.
"""

_OK = frozenset(b"!#$%&'*+-./0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


def quote_need(box: bytes) -> bool:
    if not box:
        return True
    if any(b not in _OK for b in box):
        return True
    return box.startswith(b".") or box.endswith(b".") or b".." in box


def quote_box(box: bytes) -> bytes:
    if not quote_need(box):
        return box
    out = bytearray(b'"')
    for b in box:
        if b in b'\r\n"\\':
            out += b"\\"
        out.append(b)
    return bytes(out + b'"')


def quote2(address: bytes) -> bytes:
    """quote2: quote the part before the last '@' of `address`; "" stays ""."""
    if not address:
        return address
    at = address.rfind(b"@")
    if at < 0:
        return quote_box(address)
    return quote_box(address[:at]) + address[at:]
