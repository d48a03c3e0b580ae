"""The spawn protocol between qmail-send and its delivery pools (qmail's spawn.c, §1.4).

Request from qmail-send: 2-byte slot (little endian), `<split>/<id>\\0`,
sender `\\0`, recipient `\\0`. Reply: 2-byte slot, a status letter (K
success, Z deferral, D failure) and the report text, `\\0`. Slot 0xBEEF
with empty fields asks the pool to re-read its control files (qmail's HUP
message). At connect the pool first sends its 2-byte spawn limit.
Reports longer than 3000 bytes are cut as spawn.c does for qmail-lspawn
(qmail-rspawn's truncreport is 0: remote reports are never cut).
"""

import struct

from engine import conf

HUP_SLOT = 0xBEEF
TRUNCREPORT = 3000
TOO_LONG = b"\nError report too long, sorry.\n"
_SLOT = struct.Struct("<H")


class ProtocolError(Exception):
    pass


def encode_limit(limit):
    return _SLOT.pack(limit)


def encode_request(slot, messid, sender, recipient):
    return _SLOT.pack(slot) + messid + b"\0" + sender + b"\0" + recipient + b"\0"


def encode_reply(slot, letter, text, truncreport=TRUNCREPORT):
    text = truncate(text, truncreport).replace(b"\0", b"")
    return _SLOT.pack(slot) + letter + text + b"\0"


def truncate(text, truncreport=TRUNCREPORT):
    """spawn.c: output over truncreport bytes keeps its first truncreport - len(TOO_LONG) - 3
    bytes and gets TOO_LONG; a truncreport of 100 or less (qmail-rspawn's 0) never cuts."""
    if truncreport > 100 and len(text) > truncreport:
        return text[:truncreport - len(TOO_LONG) - 3] + TOO_LONG
    return text


class RequestReader:
    """Splits a byte stream from qmail-send into (slot, messid, sender, recipient) requests."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if len(self.buf) < 2:
                return out
            fields, pos = [], 2
            for _ in range(3):
                end = self.buf.find(b"\0", pos)
                if end < 0:
                    return out
                fields.append(bytes(self.buf[pos:end]))
                pos = end + 1
            (slot,) = _SLOT.unpack_from(self.buf, 0)
            del self.buf[:pos]
            out.append((slot, *fields))


class ReplyReader:
    """Splits a pool's byte stream into (slot, letter, text) replies (after the 2-byte limit)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 3:
            end = self.buf.find(b"\0", 2)
            if end < 0:
                break
            (slot,) = _SLOT.unpack_from(self.buf, 0)
            letter, text = bytes(self.buf[2:3]), bytes(self.buf[3:end])
            del self.buf[:end + 1]
            out.append((slot, letter, text))
        return out


def slot_error(slot, busy, limit=None):
    """spawn.c's checks on the delivery number: (letter, text) for a refused slot, or None."""
    if slot >= (conf.SPAWN if limit is None else limit):
        return b"Z", b"Internal error: delnum too big. (#4.3.5)"
    if slot in busy:
        return b"Z", b"Internal error: delnum in use. (#4.3.5)"
    return None


def validate_messid(messid):
    """spawn.c's checks on `<split>/<id>`: an error reply (letter + text) or None."""
    for i, ch in enumerate(messid):
        if not (0x30 <= ch <= 0x39) and (i == 0 or ch != 0x2F):
            return b"DInternal error: messid has nonnumerics. (#5.3.5)"
    if len(messid) >= 100:
        return b"DInternal error: messid too long. (#5.3.5)"
    if not messid:
        return b"DInternal error: messid too short. (#5.3.5)"
    return None


def request_error(messid, recipient):
    """The spawner's answer to a request it refuses outright, as (letter, text), or None."""
    bad = validate_messid(messid)
    if bad:
        return bad[:1], bad[1:]
    if b"@" not in recipient:
        return b"D", b"Sorry, address must include host name. (#5.1.3)"
    return None
