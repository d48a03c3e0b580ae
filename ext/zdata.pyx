# distutils: libraries = z
# cython: boundscheck=False, wraparound=False
"""Compiled twin of engine._zdata_py (DATAZ and QMQP compression), on zlib's C API.

Same API and results as the pure twin, which documents the behaviour. The
streams are driven with inflate()/deflate() directly, as qmail-ldap does, so
zlib's own stream.msg is what error replies carry.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from engine import _smtpparse_c as smtpparse

cdef extern from "zlib.h":
    ctypedef struct z_stream:
        unsigned char *next_in
        unsigned int avail_in
        unsigned long total_in
        unsigned char *next_out
        unsigned int avail_out
        unsigned long total_out
        const char *msg
        void *zalloc
        void *zfree
        void *opaque
    int Z_OK, Z_STREAM_END, Z_BUF_ERROR, Z_NO_FLUSH, Z_FINISH
    int inflateInit(z_stream *strm)
    int inflate(z_stream *strm, int flush)
    int inflateEnd(z_stream *strm)
    int deflateInit(z_stream *strm, int level)
    int deflate(z_stream *strm, int flush)
    int deflateEnd(z_stream *strm)
    const char *zError(int err)

MORE = smtpparse.MORE
DONE = smtpparse.DONE
ERR_BARE_LF = smtpparse.ERR_BARE_LF
ERR_LINE_LONG = smtpparse.ERR_LINE_LONG
ERR_ZLIB = 6

DEFAULT_LEVEL = -1

DEF CHUNK = 65536




def saved_percent(total_in, total_out):
    if not total_out:
        return 0
    return 100 - int(100.0 * total_in / total_out)


cdef class _Inflater:
    cdef z_stream _zs
    cdef bint _open
    cdef public bint ended
    cdef public object error
    cdef public unsigned long long total_in
    cdef public unsigned long long total_out

    def __cinit__(self):
        self._zs.zalloc = NULL
        self._zs.zfree = NULL
        self._zs.opaque = NULL
        self._zs.next_in = NULL
        self._zs.avail_in = 0
        if inflateInit(&self._zs) != Z_OK:
            raise MemoryError("inflateInit failed")
        self._open = True
        self.ended = False
        self.error = None
        self.total_in = 0
        self.total_out = 0

    def __dealloc__(self):
        if self._open:
            inflateEnd(&self._zs)

    def feed(self, raw):
        """(plain bytes, bytes after the stream end); sets error (zlib's message) on a corrupt stream."""
        cdef bytes src = raw if type(raw) is bytes else bytes(raw)
        cdef Py_ssize_t n = len(src)
        cdef int r
        pieces = []
        if self.ended or self.error is not None:
            return b"", b""
        self._zs.next_in = <unsigned char *>PyBytes_AS_STRING(src)
        self._zs.avail_in = <unsigned int>n
        while True:
            r = self._inflate_piece(pieces)
            if r == Z_STREAM_END:
                self.ended = True
                break
            if r != Z_OK and r != Z_BUF_ERROR:
                self.error = stream_message(self._zs.msg, r)
                return b"", b""
            if r == Z_BUF_ERROR or (self._zs.avail_in == 0 and self._zs.avail_out != 0):
                break  # all input used and no output pending
        after = src[n - self._zs.avail_in:] if self.ended else b""
        plain = b"".join(pieces)
        self.total_in += n - len(after)
        self.total_out += len(plain)
        return plain, after

    cdef int _inflate_piece(self, list pieces):
        """One inflate() call into a fresh CHUNK-sized buffer, appended to pieces."""
        cdef bytes buf = PyBytes_FromStringAndSize(NULL, CHUNK)
        cdef int r
        self._zs.next_out = <unsigned char *>PyBytes_AS_STRING(buf)
        self._zs.avail_out = CHUNK
        r = inflate(&self._zs, Z_NO_FLUSH)
        if self._zs.avail_out != CHUNK:
            pieces.append(buf[:CHUNK - self._zs.avail_out])
        return r


cdef str stream_message(const char *msg, int code):
    """zlib's stream.msg as text, else zError(code) (zlib sets no msg for a preset dictionary)."""
    if msg == NULL:
        msg = zError(code)
    return (<bytes>msg).decode("latin-1")


class ZDataDecoder:
    """DATAZ on the server side (see the pure twin)."""

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
        if self._z.ended:
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
        if self._data.status == DONE:
            self._after_dot += plain
            return b""
        out = self._data.feed(plain)
        if self._data.status == DONE:
            self._after_dot += self._data.rest
        elif self._data.status != MORE:
            self.status = self._data.status
        return out


cdef class ZEncoder:
    """The sending side: a deflateInit(level) stream (see the pure twin)."""
    cdef z_stream _zs
    cdef bint _open
    cdef public unsigned long long total_in
    cdef public unsigned long long total_out

    def __cinit__(self, level=DEFAULT_LEVEL):
        self._zs.zalloc = NULL
        self._zs.zfree = NULL
        self._zs.opaque = NULL
        if deflateInit(&self._zs, level) != Z_OK:
            raise ValueError(f"deflateInit failed for level {level}")
        self._open = True
        self.total_in = 0
        self.total_out = 0

    def __dealloc__(self):
        if self._open:
            deflateEnd(&self._zs)

    cdef bytes _run(self, bytes src, int flush):
        cdef bytes buf
        cdef int r
        pieces = []
        self._zs.next_in = <unsigned char *>PyBytes_AS_STRING(src)
        self._zs.avail_in = <unsigned int>len(src)
        while True:
            buf = PyBytes_FromStringAndSize(NULL, CHUNK)
            self._zs.next_out = <unsigned char *>PyBytes_AS_STRING(buf)
            self._zs.avail_out = CHUNK
            r = deflate(&self._zs, flush)
            if self._zs.avail_out != CHUNK:
                pieces.append(buf[:CHUNK - self._zs.avail_out])
            if r == Z_STREAM_END:
                break
            if r != Z_OK and r != Z_BUF_ERROR:
                raise ValueError("deflate failed: " + stream_message(self._zs.msg, r))
            if self._zs.avail_out != 0 and (flush == Z_NO_FLUSH or r == Z_BUF_ERROR):
                break
        out = b"".join(pieces)
        self.total_out += len(out)
        return out

    def compress(self, data):
        cdef bytes src = data if type(data) is bytes else bytes(data)
        if not self._open:
            raise ValueError("ZEncoder: compress() after finish()")
        self.total_in += len(src)
        return self._run(src, Z_NO_FLUSH)

    def finish(self):
        if not self._open:
            raise ValueError("ZEncoder: finish() called twice")
        out = self._run(b"", Z_FINISH)
        deflateEnd(&self._zs)
        self._open = False
        return out

    def saved_percent(self):
        return saved_percent(self.total_out, self.total_in)


class QmqpInflater:
    """qmail-qmqpd's input: detects a compressed request and inflates it (see the pure twin)."""

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
        cdef Py_ssize_t i
        cdef unsigned char ch
        self._held += raw
        for i in range(len(self._held)):
            ch = self._held[i]
            if ch >= 0x30 and ch <= 0x39:
                continue
            self.compressed = ch != 0x3A
            break
        if self.compressed is None:
            return b""
        held = bytes(self._held)
        self._held.clear()
        return held
