# cython: boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of engine._smtpparse_py (the SMTP/QMTP/QMQP protocol kernel).

Same API and results as the pure twin, which documents the behaviour; here
the byte loops (command splitting, addrparse, blast, netstrings, the DATA
stuffer of qmail-remote) run in C.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.string cimport memchr
from libc.stdint cimport uint64_t

ADDR_MAX = 899
MAXHOPS = 100
MAXLINELEN = 10000
NETSTRING_MAX = 200000000
ULONG_MASK = (1 << 64) - 1

MORE = 0
DONE = 1
ERR_BARE_LF = 2
ERR_LINE_LONG = 3
ERR_TOOLONG = 4
ERR_BADPROTO = 5

PARTIAL_LINE = None

REPLY_SYNTAX = b"555 syntax error (#5.5.4)\r\n"
REPLY_BARE_LF = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
REPLY_LINE_LONG = b"500 Text line too long."
REPLY_HOPS = b"554 too many hops, this message is looping (#5.4.6)\r\n"
REPLY_DATABYTES = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"

cdef enum:
    C_MORE = 0
    C_DONE = 1
    C_ERR_BARE_LF = 2
    C_ERR_LINE_LONG = 3
    C_ERR_TOOLONG = 4
    C_ERR_BADPROTO = 5
    C_MAXLINELEN = 10000
    C_MAXHOPS = 100


cdef inline unsigned char upper(unsigned char ch) nogil:
    if ch >= b'a' and ch <= b'z':
        return ch - 32
    return ch


cdef bytes upper_bytes(const unsigned char[:] data, Py_ssize_t start, Py_ssize_t stop):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, stop - start)
    cdef char *o = PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(start, stop):
        o[i - start] = <char>upper(data[i])
    return out


cdef Py_ssize_t cstring_len(const unsigned char[:] data):
    """Length a C string would see: up to the first NUL."""
    cdef Py_ssize_t i
    for i in range(data.shape[0]):
        if data[i] == 0:
            return i
    return data.shape[0]


def split_command(line):
    cdef const unsigned char[:] d = bytes(line)
    cdef Py_ssize_t n = d.shape[0]
    cdef Py_ssize_t space, i
    if n and d[n - 1] == b'\r':
        n -= 1
    n = min(n, cstring_len(d[:n]))
    space = n
    for i in range(n):
        if d[i] == b' ':
            space = i
            break
    i = space
    while i < n and d[i] == b' ':
        i += 1
    return upper_bytes(d, 0, space), bytes(d[i:n])


cdef class CommandReader:
    cdef bytearray _buf
    cdef object _limit

    def __init__(self, limit=None):
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data):
        self._buf += data

    def line(self):
        cdef Py_ssize_t end = self._buf.find(b"\n")
        cdef Py_ssize_t stop
        if end < 0:
            return None
        stop = end - 1 if end > 0 and self._buf[end - 1] == 13 else end
        line = bytes(self._buf[:stop])
        del self._buf[:end + 1]
        return line

    def rest(self):
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def pending(self):
        return len(self._buf)

    @property
    def overflow(self):
        return self._limit is not None and self._buf.find(b"\n") < 0 and len(self._buf) > self._limit


cdef Py_ssize_t find_byte(const unsigned char[:] d, Py_ssize_t start, Py_ssize_t n, unsigned char ch):
    cdef Py_ssize_t i
    for i in range(start, n):
        if d[i] == ch:
            return i
    return -1


cdef Py_ssize_t copy_addr(const unsigned char[:] d, Py_ssize_t i, Py_ssize_t n,
                          unsigned char term, bytearray out):
    """addrparse()'s copy loop; appends to out when it is not None; returns the stop index."""
    cdef bint escaped = False, quoted = False
    cdef unsigned char ch
    cdef Py_ssize_t start
    cdef bint keep = out is not None
    while i < n:
        ch = d[i]
        if escaped:
            if keep:
                out.append(ch)
            escaped = False
        elif not quoted and ch == term:
            break
        elif ch == b'\\':
            escaped = True
        elif ch == b'"':
            quoted = not quoted
        elif keep:
            start = i
            # copy a run of ordinary bytes at once
            while i + 1 < n and d[i + 1] != term and d[i + 1] != b'\\' and d[i + 1] != b'"':
                i += 1
            out += d[start:i + 1]
        i += 1
    return i


def parse_addr(arg, maxlen=ADDR_MAX):
    cdef const unsigned char[:] d = bytes(arg)
    cdef Py_ssize_t n = cstring_len(d)
    cdef Py_ssize_t i, colon
    cdef unsigned char term
    cdef bytearray out
    i = find_byte(d, 0, n, b'<')
    if i >= 0:
        i += 1
        term = b'>'
    else:
        colon = find_byte(d, 0, n, b':')
        if colon < 0 or colon + 1 == n:
            return None
        i = colon + 1
        while i < n and d[i] == b' ':
            i += 1
        term = b' '
    if i < n and d[i] == b'@':
        colon = find_byte(d, i, n, b':')
        i = n if colon < 0 else colon + 1
    out = bytearray()
    copy_addr(d, i, n, term, out)
    if maxlen is not None and len(out) > maxlen:
        return None
    return bytes(out)


cdef Py_ssize_t params_start(const unsigned char[:] d, Py_ssize_t n):
    """Index of the text after the address as getparameter() finds it, or -1."""
    cdef Py_ssize_t i, colon, end
    cdef unsigned char term
    i = find_byte(d, 0, n, b'<')
    if i >= 0:
        i += 1
        term = b'>'
    else:
        colon = find_byte(d, 0, n, b':')
        i = n if colon < 0 else colon + 1
        while i < n and d[i] == b' ':
            i += 1
        term = b' '
    end = copy_addr(d, i, n, term, None)
    if end >= n:
        return -1
    return end + 1


cdef object scan_parameter(const unsigned char[:] d, Py_ssize_t p, Py_ssize_t n, const unsigned char[:] name):
    cdef Py_ssize_t size = name.shape[0]
    cdef Py_ssize_t j, end
    cdef bint same
    while True:
        while p < n and d[p] == b' ':
            p += 1
        if p + size <= n:
            same = True
            for j in range(size):
                if upper(d[p + j]) != name[j]:
                    same = False
                    break
            if same:
                p += size
                if p < n and d[p] == b'=':
                    p += 1
                    end = find_byte(d, p, n, b' ')
                    return bytes(d[p:n if end < 0 else end])
                p += 1
                if p > n:
                    return None
        while p < n and d[p] != b' ':
            p += 1
        if p >= n:
            return None


def get_parameter(arg, name):
    cdef const unsigned char[:] d = bytes(arg)
    cdef Py_ssize_t n = cstring_len(d)
    cdef Py_ssize_t start = params_start(d, n)
    cdef const unsigned char[:] nm
    if start < 0:
        return None
    nm = bytes(name).upper()
    return scan_parameter(d, start, n, nm)


def mail_params(arg):
    cdef const unsigned char[:] d = bytes(arg)
    cdef Py_ssize_t n = cstring_len(d)
    cdef Py_ssize_t start = params_start(d, n)
    cdef Py_ssize_t p, tok, eq
    found = {}
    if start < 0:
        return found
    p = start
    while p <= n:
        tok = p
        eq = -1
        while p < n and d[p] != b' ':
            if eq < 0 and d[p] == b'=':
                eq = p
            p += 1
        if eq > tok:
            name = upper_bytes(d, tok, eq)
            if name not in found:
                value = scan_parameter(d, start, n, name)
                if value is not None:
                    found[name] = value
        p += 1
    return found


def scan_ulong(text):
    cdef const unsigned char[:] d = bytes(text)
    cdef uint64_t value = 0
    cdef Py_ssize_t i
    for i in range(d.shape[0]):
        if d[i] < b'0' or d[i] > b'9':
            break
        value = value * 10 + (d[i] - 48)
    return value


def size_exceeds(arg, databytes):
    if not databytes:
        return False
    size = get_parameter(arg, b"SIZE")
    if size is None:
        return False
    return scan_ulong(size) > databytes


cdef const char *DELIVERED_LO = b"delivered"
cdef const char *DELIVERED_UP = b"DELIVERED"
cdef const char *RECEIVED_LO = b"received"
cdef const char *RECEIVED_UP = b"RECEIVED"


cdef class DataDecoder:
    cdef public int status
    cdef public long long hops
    cdef public long long size
    cdef public bytes rest
    cdef int _state
    cdef bint _inheader
    cdef Py_ssize_t _pos
    cdef bint _mx, _my, _mz

    def __init__(self):
        self.status = C_MORE
        self.hops = 0
        self.size = 0
        self.rest = b""
        self._state = 1
        self._inheader = True
        self._pos = 0
        self._mx = self._my = self._mz = True

    @property
    def looping(self):
        return self.hops >= C_MAXHOPS

    def too_big(self, databytes):
        return bool(databytes) and self.size > databytes

    cdef inline bint header_byte(self, unsigned char ch):
        cdef Py_ssize_t pos = self._pos
        if pos < 9:
            if ch != <unsigned char>DELIVERED_LO[pos] and ch != <unsigned char>DELIVERED_UP[pos]:
                self._mz = False
            if self._mz and pos == 8:
                self.hops += 1
            if pos < 8:
                if ch != <unsigned char>RECEIVED_LO[pos] and ch != <unsigned char>RECEIVED_UP[pos]:
                    self._mx = False
            if self._mx and pos == 7:
                self.hops += 1
            if pos < 2:
                if ch != (13 if pos == 0 else 10):
                    self._my = False
            if self._my and pos == 1:
                self._inheader = False
        pos += 1
        if pos > C_MAXLINELEN:
            return False
        if ch == 10:
            pos = 0
            self._mx = self._my = self._mz = True
        self._pos = pos
        return True

    def feed(self, data):
        cdef bytes src = data if type(data) is bytes else bytes(data)
        cdef const unsigned char *d = <const unsigned char *>PyBytes_AS_STRING(src)
        cdef Py_ssize_t n = len(src)
        cdef Py_ssize_t i = 0, o = 0, j
        cdef unsigned char ch
        cdef int state = self._state
        cdef bytes out
        cdef unsigned char *w
        if self.status == C_DONE:
            self.rest += src
        if self.status != C_MORE:
            return b""
        # the output never exceeds input + 1 (a pending CR or ".\r" becomes real)
        out = PyBytes_FromStringAndSize(NULL, n + 2)
        w = <unsigned char *>PyBytes_AS_STRING(out)
        while i < n:
            ch = d[i]
            if self._inheader:
                if not self.header_byte(ch):
                    self.status = C_ERR_LINE_LONG
                    break
            elif state == 0:
                # body fast path: copy ordinary bytes up to the next CR or LF
                j = i
                while j < n and d[j] != 13 and d[j] != 10:
                    j += 1
                if j > i:
                    while i < j:
                        w[o] = d[i]
                        o += 1
                        i += 1
                    continue
            i += 1
            if state == 0:
                if ch == 10:
                    self.status = C_ERR_BARE_LF
                    break
                if ch == 13:
                    state = 4
                    continue
            elif state == 1:
                if ch == 10:
                    self.status = C_ERR_BARE_LF
                    break
                if ch == b'.':
                    state = 2
                    continue
                if ch == 13:
                    state = 4
                    continue
                state = 0
            elif state == 2:
                if ch == 10:
                    self.status = C_ERR_BARE_LF
                    break
                if ch == 13:
                    state = 3
                    continue
                state = 0
            elif state == 3:
                if ch == 10:
                    self.status = C_DONE
                    self.rest = src[i:]
                    break
                w[o] = b'.'
                w[o + 1] = 13
                o += 2
                if ch == 13:
                    state = 4
                    continue
                state = 0
            else:
                if ch == 10:
                    state = 1
                elif ch != 13:
                    w[o] = 13
                    o += 1
                    state = 0
            w[o] = ch
            o += 1
        self._state = state
        self.size += o
        return out[:o]


cdef class DataStuffer:
    cdef bint _at_start

    def __init__(self):
        self._at_start = True

    def feed(self, data):
        cdef bytes src = data if type(data) is bytes else bytes(data)
        cdef const unsigned char *d = <const unsigned char *>PyBytes_AS_STRING(src)
        cdef Py_ssize_t n = len(src)
        cdef Py_ssize_t i, o = 0
        cdef bint at_start = self._at_start
        cdef unsigned char ch
        # worst case every byte is a dot at line start or an LF: twice the input
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * n)
        cdef unsigned char *w = <unsigned char *>PyBytes_AS_STRING(out)
        for i in range(n):
            ch = d[i]
            if at_start and ch == b'.':
                w[o] = b'.'
                o += 1
            if ch == 10:
                w[o] = 13
                w[o + 1] = 10
                o += 2
                at_start = True
            else:
                w[o] = ch
                o += 1
                at_start = False
        self._at_start = at_start
        return out[:o]

    def finish(self):
        if not self._at_start:
            return PARTIAL_LINE
        return b".\r\n"


def ns_encode(payload):
    payload = bytes(payload)
    return b"%d:%s," % (len(payload), payload)


cdef class NetstringDecoder:
    cdef public int status
    cdef unsigned long long _limit
    cdef unsigned long long _len
    cdef int _phase
    cdef bytearray _payload

    def __init__(self, limit=NETSTRING_MAX):
        self.status = C_DONE
        self._limit = limit
        self._len = 0
        self._phase = 0
        self._payload = bytearray()

    @property
    def pending(self):
        return self._len - len(self._payload) if self._phase == 1 else 0

    def feed(self, data):
        cdef bytes src = data if type(data) is bytes else bytes(data)
        cdef const unsigned char *d = <const unsigned char *>PyBytes_AS_STRING(src)
        cdef Py_ssize_t i = 0, n = len(src), take
        cdef unsigned char ch
        done = []
        while i < n and (self.status == C_MORE or self.status == C_DONE):
            if self._phase == 0:
                self.status = C_MORE
                while i < n:
                    if self._len > self._limit:
                        self.status = C_ERR_TOOLONG
                        break
                    ch = d[i]
                    i += 1
                    if ch == b':':
                        self._phase = 1 if self._len else 2
                        break
                    if ch < b'0' or ch > b'9':
                        self.status = C_ERR_BADPROTO
                        break
                    self._len = self._len * 10 + (ch - 48)
            elif self._phase == 1:
                take = min(<Py_ssize_t>(self._len - len(self._payload)), n - i)
                self._payload += src[i:i + take]
                i += take
                if <unsigned long long>len(self._payload) == self._len:
                    self._phase = 2
            else:
                if d[i] != b',':
                    self.status = C_ERR_BADPROTO
                    break
                i += 1
                done.append(bytes(self._payload))
                self._payload.clear()
                self._len = 0
                self._phase = 0
                self.status = C_DONE
        return done


def qmtp_message(payload):
    payload = bytes(payload)
    if not payload or payload[0] not in (10, 13):
        return None
    if payload[0] == 10:
        return payload[1:]
    return payload[1:].replace(b"\r\n", b"\n")


def ns_split(data, limit=NETSTRING_MAX):
    decoder = NetstringDecoder(limit)
    payloads = decoder.feed(data)
    if decoder.status != C_DONE:
        return None
    return payloads
