"""Pure-Python twin of the compression kernel (compiled twin: ext/zdata.pyx), using the zlib module.

qmail-ldap's two compressed transports, byte-compatible with its C code:

* DATAZ (qmail-smtpd DATA_COMPRESS, draft-oppermann-smtp-datacompression-00):
  after `DATAZ` and the 354 reply the client sends the dot-stuffed CRLF
  message including the final `.CRLF` as one zlib stream (deflateInit at the
  default level, ended with Z_FINISH); afterwards the session is plain text
  again. ZDataDecoder inflates what arrives and runs it through the
  smtpparse DataDecoder (same blast() semantics); ZEncoder is the sending
  side (qmail-remote).
* QMQP compression (QMQP_COMPRESS): qmail-qmqpc deflates the whole request;
  qmail-qmqpd looks at the first bytes: digits up to ':' mean plain, any
  other byte before ':' means zlib. QmqpInflater does that detection and
  returns the plain request bytes for the netstring reader.

One difference from the C code, on purpose: when the `.` line arrives before
the zlib stream's end, qmail-smtpd stops inflating there and would read the
stream's trailer as commands; ZDataDecoder consumes the stream to its end
first (a conforming client sends it right away), so only bytes after the
stream are handed back as commands.
"""

import zlib as _zlib

from engine import _smtpparse_py as smtpparse

MORE = smtpparse.MORE
DONE = smtpparse.DONE
ERR_BARE_LF = smtpparse.ERR_BARE_LF
ERR_LINE_LONG = smtpparse.ERR_LINE_LONG
ERR_ZLIB = 6  # the compressed stream is corrupt

DEFAULT_LEVEL = -1  # Z_DEFAULT_COMPRESSION, as deflateInit() in qmail-remote and qmail-qmqpc


# zError() texts, for the errors where zlib leaves stream.msg unset (a preset dictionary)
_ZERROR = {2: "need dictionary", -2: "stream error", -3: "data error", -4: "insufficient memory",
          -5: "buffer error", -6: "incompatible version"}


def _zlib_message(error):
    """zlib's own message (stream.msg, else zError(code)) from a zlib.error: what qmail-ldap prints."""
    text = str(error)
    _, sep, msg = text.partition(": ")
    if sep:
        return msg
    words = text.split()
    code = int(words[1]) if len(words) > 1 and words[1].lstrip("-").isdigit() else None
    return _ZERROR.get(code, text)


def saved_percent(total_in, total_out):
    """qmail-ldap's `DDC saved <n> percent`: 100 - (int)(100.0 * in / out); 0 before any output."""
    if not total_out:
        return 0
    return 100 - int(100.0 * total_in / total_out)


class _Inflater:
    """One zlib stream fed in chunks: plain output, end detection, bytes after the end, totals."""

    def __init__(self):
        self._z = _zlib.decompressobj()
        self.ended = False
        self.error = None
        self.total_in = 0
        self.total_out = 0

    def feed(self, raw):
        """(plain bytes, bytes after the stream end); sets error (zlib's message) on a corrupt stream."""
        raw = bytes(raw)
        try:
            plain = self._z.decompress(raw)
        except _zlib.error as e:
            self.error = _zlib_message(e)
            return b"", b""
        after = self._z.unused_data if self._z.eof else b""
        self.ended = self._z.eof
        self.total_in += len(raw) - len(after)
        self.total_out += len(plain)
        return plain, after


class ZDataDecoder:
    """DATAZ on the server side: compressed bytes in, message bytes out (as DataDecoder).

    status: MORE, DONE (message and stream complete; rest = plain bytes for
    the command loop), ERR_BARE_LF / ERR_LINE_LONG (as DataDecoder) or
    ERR_ZLIB (reply() gives qmail-ldap's 451 text). Input fed after DONE is
    appended to rest.
    """

    def __init__(self):
        self._data = smtpparse.DataDecoder()
        self._z = _Inflater()
        self._after_dot = bytearray()
        self.status = MORE
        self.rest = b""

    hops = property(lambda self: self._data.hops)
    size = property(lambda self: self._data.size)
    looping = property(lambda self: self._data.looping)
    total_in = property(lambda self: self._z.total_in)
    total_out = property(lambda self: self._z.total_out)

    def too_big(self, databytes):
        return self._data.too_big(databytes)

    def saved_percent(self):
        return saved_percent(self._z.total_in, self._z.total_out)

    def reply(self):
        """The error reply for the current status (None while MORE or DONE)."""
        if self.status == ERR_ZLIB:
            return b"451 Receiving compressed data failed: %s #(4.3.0)\r\n" % self._z.error.encode()
        if self.status == ERR_BARE_LF:
            return smtpparse.REPLY_BARE_LF
        if self.status == ERR_LINE_LONG:
            return smtpparse.REPLY_LINE_LONG
        return None

    def feed(self, raw):
        if self.status == DONE:  # the client's next commands: keep them
            self.rest += bytes(raw)
        if self.status != MORE:
            return b""
        if self._z.ended:  # the stream ended before the dot: qmail-smtpd reads on in plain text
            out = self._decode(raw)
        else:
            plain, after = self._z.feed(raw)
            if self._z.error is not None:
                self.status = ERR_ZLIB
                return b""
            out = self._decode(plain)
            if self._z.ended:
                out += self._decode(after)
        if self._z.ended and self._data.status == DONE and self.status == MORE:
            self.rest = bytes(self._after_dot)
            self._after_dot.clear()
            self.status = DONE
        return out

    def _decode(self, plain):
        """Message bytes from plain DATA text; what follows the dot is kept for `rest`."""
        if self._data.status == DONE:
            self._after_dot += plain
            return b""
        out = self._data.feed(plain)
        if self._data.status == DONE:
            self._after_dot += self._data.rest
        elif self._data.status != MORE:
            self.status = self._data.status
        return out


class ZEncoder:
    """The sending side: deflateInit(level) stream fed in chunks, ended with finish() (Z_FINISH)."""

    def __init__(self, level=DEFAULT_LEVEL):
        self._z = _zlib.compressobj(level)
        self._open = True
        self.total_in = 0
        self.total_out = 0

    def compress(self, data):
        if not self._open:
            raise ValueError("ZEncoder: compress() after finish()")
        data = bytes(data)
        out = self._z.compress(data)
        self.total_in += len(data)
        self.total_out += len(out)
        return out

    def finish(self):
        if not self._open:
            raise ValueError("ZEncoder: finish() called twice")
        self._open = False
        out = self._z.flush(_zlib.Z_FINISH)
        self.total_out += len(out)
        return out

    def saved_percent(self):
        """As the receiver logs it: 100 - (int)(100.0 * compressed / plain)."""
        return saved_percent(self.total_out, self.total_in)


class QmqpInflater:
    """qmail-qmqpd's input: detects a compressed request and inflates it.

    detect=False is NOCOMPRESS (always plain). compressed: None until the
    first non-digit arrives, then False (it was ':') or True. status: MORE,
    DONE (the zlib stream ended; later bytes go to `extra`, unread, as
    qmail-qmqpd never reads past it) or ERR_ZLIB (reply() gives the Z text
    to send as the response netstring's payload).
    """

    def __init__(self, detect=True):
        self.compressed = None if detect else False
        self.status = MORE
        self.extra = b""
        self._held = bytearray()
        self._z = _Inflater()

    total_in = property(lambda self: self._z.total_in)
    total_out = property(lambda self: self._z.total_out)

    def saved_percent(self):
        return saved_percent(self._z.total_in, self._z.total_out)

    def reply(self):
        if self.status != ERR_ZLIB:
            return None
        return b"ZReceiving compressed data failed: %s #(4.3.0)" % self._z.error.encode()

    def feed(self, raw):
        if self.compressed is None:
            raw = self._detect(raw)
            if self.compressed is None:
                return b""
        if self.compressed is False:
            return bytes(raw)
        if self.status != MORE:
            self.extra += bytes(raw)
            return b""
        plain, after = self._z.feed(raw)
        if self._z.error is not None:
            self.status = ERR_ZLIB
            return b""
        if self._z.ended:
            self.status = DONE
            self.extra = bytes(after)
        return plain

    def _detect(self, raw):
        """Holds digits back until the first other byte decides; returns everything held once decided."""
        self._held += raw
        for ch in self._held:
            if 0x30 <= ch <= 0x39:
                continue
            self.compressed = ch != 0x3A
            break
        if self.compressed is None:
            return b""
        held = bytes(self._held)
        self._held.clear()
        return held
