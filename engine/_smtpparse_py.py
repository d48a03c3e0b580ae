"""Pure-Python twin of the SMTP/QMTP/QMQP protocol kernel (compiled twin: ext/smtpparse.pyx).

What qmail-smtpd, qmail-qmtpd, qmail-qmqpd and qmail-remote do byte by byte,
without any I/O, so the services only move bytes and choose replies:

* split_command / CommandReader: qmail's commands.c — a command line ends at
  LF, one CR before it is dropped, the verb is the text before the first
  space (matched case-insensitively), the argument is the rest after the
  spaces. A NUL ends the line early, because qmail works on C strings.
* parse_addr / get_parameter / mail_params / size_exceeds: qmail-smtpd.c
  addrparse(), getparameter() and sizelimit().
* DataDecoder: qmail-smtpd.c blast() — dot-unstuffing, CRLF to LF, the
  terminating CRLF.CRLF, bare-LF and long-header-line detection, the
  Received/Delivered hop count and the byte count for databytes.
* DataStuffer: qmail-remote.c blast() — the client side of DATA.
* ns_encode / NetstringDecoder / ns_split: netstrings as qmail-qmqpd and
  qmail-qmtpd read them (getlen(): over-long length first, then non-digit);
  qmtp_message: qmail-qmtpd's LF / CRLF message forms.

This module is the reference: the compiled twin must give the same results
for every input.
"""

import re as _re

ADDR_MAX = 899          # addrparse(): addr.len (with its NUL) > 900 is a syntax error
MAXHOPS = 100           # blast(): hops >= MAXHOPS means the message is looping
MAXLINELEN = 10000      # blast(): a header line whose byte count passes this is fatal
NETSTRING_MAX = 200000000  # qmail-qmqpd/qmail-qmtpd getlen(): longer is a resource error
ULONG_MASK = (1 << 64) - 1  # scan_ulong() wraps like a 64-bit unsigned long

# DataDecoder.status / NetstringDecoder.status
MORE = 0          # needs more input
DONE = 1          # terminating line seen (DATA) / nothing pending (netstrings)
ERR_BARE_LF = 2   # DATA: an LF without CR before it
ERR_LINE_LONG = 3  # DATA: a header line longer than MAXLINELEN
ERR_TOOLONG = 4   # netstring length above the limit (qmail: exit 111)
ERR_BADPROTO = 5  # netstring syntax error (qmail: exit 100)

# DataStuffer.finish() result when the message does not end with LF
PARTIAL_LINE = None

REPLY_SYNTAX = b"555 syntax error (#5.5.4)\r\n"
REPLY_BARE_LF = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
REPLY_LINE_LONG = b"500 Text line too long."  # qmail-ldap sends it without CRLF
REPLY_HOPS = b"554 too many hops, this message is looping (#5.4.6)\r\n"
REPLY_DATABYTES = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"

_SP = 0x20
_CR = 0x0D
_LF = 0x0A
_DOT = 0x2E


def _cstring(data):
    """The part of data a C string would see: everything before the first NUL."""
    nul = data.find(b"\0")
    return bytes(data) if nul < 0 else bytes(data[:nul])


def _upper(data):
    """ASCII upper case only, like qmail's case_* functions."""
    return data.upper()


def split_command(line):
    """(VERB, argument) of one command line given without its LF, as commands.c splits it."""
    line = bytes(line)
    if line.endswith(b"\r"):
        line = line[:-1]
    line = _cstring(line)
    space = line.find(b" ")
    if space < 0:
        return _upper(line), b""
    return _upper(line[:space]), line[space:].lstrip(b" ")


class CommandReader:
    """Cuts a byte stream into command lines (LF removed, a CR before it removed).

    limit: longest partial line kept before `overflow` turns true (None:
    unlimited, as qmail-ldap's commands.c).
    """

    def __init__(self, limit=None):
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data):
        self._buf += data

    def line(self):
        """The next complete line, or None when none is buffered."""
        end = self._buf.find(b"\n")
        if end < 0:
            return None
        stop = end - 1 if end > 0 and self._buf[end - 1] == _CR else end
        line = bytes(self._buf[:stop])
        del self._buf[:end + 1]
        return line

    def rest(self):
        """Everything buffered and not yet returned (e.g. for DataDecoder after DATA); clears it."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def pending(self):
        return len(self._buf)

    @property
    def overflow(self):
        return self._limit is not None and self._buf.find(b"\n") < 0 and len(self._buf) > self._limit


def _addr_start(arg):
    """(index where the address starts, terminator byte) or None, as addrparse() begins."""
    lt = arg.find(b"<")
    if lt >= 0:
        return lt + 1, b">"
    colon = arg.find(b":")
    if colon < 0:
        return None
    i = colon + 1
    if i == len(arg):
        return None
    while i < len(arg) and arg[i] == _SP:
        i += 1
    return i, b" "


def _copy_addr(arg, i, terminator):
    """(address with quotes and backslashes removed, index of the terminator or len)."""
    term = terminator[0]
    out = bytearray()
    escaped = quoted = False
    n = len(arg)
    while i < n:
        ch = arg[i]
        if escaped:
            out.append(ch)
            escaped = False
        elif not quoted and ch == term:
            break
        elif ch == 0x5C:  # backslash
            escaped = True
        elif ch == 0x22:  # double quote
            quoted = not quoted
        else:
            out.append(ch)
        i += 1
    return bytes(out), i


def parse_addr(arg, maxlen=ADDR_MAX):
    """The address in a MAIL/RCPT argument as addrparse() reads it, or None for a syntax error.

    The `@[ip]` -> localiphost rewrite is left to the caller, who must then
    check len(addr) > ADDR_MAX again; maxlen=None skips the length check.
    """
    arg = _cstring(arg)
    start = _addr_start(arg)
    if start is None:
        return None
    i, terminator = start
    if i < len(arg) and arg[i] == 0x40:  # '@': strip the source route up to and with ':'
        colon = arg.find(b":", i)
        i = len(arg) if colon < 0 else colon + 1
    addr, _ = _copy_addr(arg, i, terminator)
    if maxlen is not None and len(addr) > maxlen:
        return None
    return addr


def _params_text(arg):
    """The text after the address as getparameter() finds it, or None when there is none."""
    lt = arg.find(b"<")
    if lt >= 0:
        i, terminator = lt + 1, b">"
    else:
        colon = arg.find(b":")
        i = len(arg) if colon < 0 else colon + 1
        while i < len(arg) and arg[i] == _SP:
            i += 1
        terminator = b" "
    _, end = _copy_addr(arg, i, terminator)
    if end >= len(arg):
        return None
    return arg[end + 1:]


def _scan_parameter(rest, name):
    """getparameter()'s walk over the parameter text for `name` (upper case)."""
    n = len(rest)
    size = len(name)
    p = 0
    while True:
        while p < n and rest[p] == _SP:
            p += 1
        if p + size <= n and _upper(rest[p:p + size]) == name:
            p += size
            if p < n and rest[p] == 0x3D:  # '='
                p += 1
                end = rest.find(b" ", p)
                return rest[p:] if end < 0 else rest[p:end]
            p += 1  # getparameter() steps over the byte that was not '='
            if p > n:
                return None
        while p < n and rest[p] != _SP:
            p += 1
        if p >= n:
            return None


def get_parameter(arg, name):
    """Value of ESMTP parameter `name` (e.g. b"SIZE") in a MAIL argument, as getparameter(); None if absent."""
    rest = _params_text(_cstring(arg))
    if rest is None:
        return None
    return _scan_parameter(rest, _upper(bytes(name)))


def mail_params(arg):
    """All ESMTP parameters after the address: {b"NAME" (upper case): value}, each as get_parameter finds it."""
    rest = _params_text(_cstring(arg))
    found = {}
    if rest is None:
        return found
    for token in rest.split(b" "):
        eq = token.find(b"=")
        if eq <= 0:
            continue
        name = _upper(token[:eq])
        if name not in found:
            value = _scan_parameter(rest, name)
            if value is not None:
                found[name] = value
    return found


def scan_ulong(text):
    """Leading decimal digits of text as qmail's scan_ulong() reads them (wrapping at 2**64)."""
    value = 0
    for ch in text:
        if not 0x30 <= ch <= 0x39:
            break
        value = (value * 10 + ch - 0x30) & ULONG_MASK
    return value


def size_exceeds(arg, databytes):
    """True when MAIL's SIZE= parameter is above databytes (0 = no limit), as sizelimit() decides."""
    if not databytes:
        return False
    size = get_parameter(arg, b"SIZE")
    if size is None:
        return False
    return scan_ulong(size) > databytes


_BODY_RUN = _re.compile(rb"[^\r\n]+")
_DELIVERED = (b"delivered", b"DELIVERED")
_RECEIVED = (b"received", b"RECEIVED")


class DataDecoder:
    """qmail-smtpd's blast(), fed in arbitrary chunks: returns the message bytes as qmail stores them.

    After each feed(): status is MORE, DONE (the `.` line was seen; rest holds
    the bytes after it), ERR_BARE_LF or ERR_LINE_LONG (qmail-ldap replies and
    closes; nothing after the bad byte is decoded). Input fed after DONE is
    appended to rest. hops counts header lines
    starting with Received / Delivered; size counts message bytes for databytes.
    """

    def __init__(self):
        self.status = MORE
        self.hops = 0
        self.size = 0
        self.rest = b""
        self._state = 1
        self._inheader = True
        self._pos = 0
        self._maybe_x = self._maybe_y = self._maybe_z = True

    @property
    def looping(self):
        return self.hops >= MAXHOPS

    def too_big(self, databytes):
        """The 552 condition: databytes set and more message bytes than it."""
        return bool(databytes) and self.size > databytes

    def _header_byte(self, ch):
        """Header tracking of blast(); False when the line got too long."""
        pos = self._pos
        if pos < 9:
            if ch != _DELIVERED[0][pos] and ch != _DELIVERED[1][pos]:
                self._maybe_z = False
            if self._maybe_z and pos == 8:
                self.hops += 1
            if pos < 8:
                if ch != _RECEIVED[0][pos] and ch != _RECEIVED[1][pos]:
                    self._maybe_x = False
            if self._maybe_x and pos == 7:
                self.hops += 1
            if pos < 2:
                if ch != b"\r\n"[pos]:
                    self._maybe_y = False
            if self._maybe_y and pos == 1:
                self._inheader = False
        pos += 1
        if pos > MAXLINELEN:
            return False
        if ch == _LF:
            pos = 0
            self._maybe_x = self._maybe_y = self._maybe_z = True
        self._pos = pos
        return True

    def feed(self, data):
        if self.status == DONE:  # input after the dot is the client's next commands: keep it
            self.rest += bytes(data)
        if self.status != MORE:
            return b""
        out = bytearray()
        state = self._state
        data = bytes(data)
        i, n = 0, len(data)
        while i < n:
            if state == 0 and not self._inheader:  # body text: copy up to the next CR or LF at once
                run = _BODY_RUN.match(data, i)
                if run:
                    out += data[i:run.end()]
                    i = run.end()
                    continue
            ch = data[i]
            i += 1
            if self._inheader and not self._header_byte(ch):
                self.status = ERR_LINE_LONG
                break
            if state == 0:
                if ch == _LF:
                    self.status = ERR_BARE_LF
                    break
                if ch == _CR:
                    state = 4
                    continue
            elif state == 1:
                if ch == _LF:
                    self.status = ERR_BARE_LF
                    break
                if ch == _DOT:
                    state = 2
                    continue
                if ch == _CR:
                    state = 4
                    continue
                state = 0
            elif state == 2:
                if ch == _LF:
                    self.status = ERR_BARE_LF
                    break
                if ch == _CR:
                    state = 3
                    continue
                state = 0
            elif state == 3:
                if ch == _LF:
                    self.status = DONE
                    self.rest = data[i:]
                    break
                out += b".\r"
                if ch == _CR:
                    state = 4
                    continue
                state = 0
            else:  # state 4: after CR
                if ch == _LF:
                    state = 1
                elif ch != _CR:
                    out.append(_CR)
                    state = 0
            out.append(ch)
        self._state = state
        self.size += len(out)
        return bytes(out)


class DataStuffer:
    """qmail-remote's blast(): message (LF lines) to SMTP DATA wire form, fed in chunks.

    feed() returns wire bytes (a leading dot doubled, LF sent as CRLF);
    finish() returns the closing b".\\r\\n", or PARTIAL_LINE (None) when the
    message did not end with LF (qmail-remote's perm_partialline).
    """

    def __init__(self):
        self._at_start = True

    def feed(self, data):
        data = bytes(data)
        if not data:
            return b""
        if self._at_start and data[0] == _DOT:
            data = b"." + data
        self._at_start = data[-1] == _LF
        return data.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")

    def finish(self):
        if not self._at_start:
            return PARTIAL_LINE
        return b".\r\n"


def ns_encode(payload):
    """One netstring: b"<len>:<payload>,"."""
    payload = bytes(payload)
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Reads consecutive netstrings from chunks, as qmail-qmqpd/qmail-qmtpd getlen() reads them.

    feed() returns the payloads completed by this chunk. status: MORE while
    a netstring is incomplete, DONE between netstrings, ERR_TOOLONG (length
    above limit, checked before each further byte like getlen()) or
    ERR_BADPROTO (non-digit before ':' or no ',' after the payload); after
    an error nothing more is read.
    """

    def __init__(self, limit=NETSTRING_MAX):
        self.status = DONE
        self._limit = limit
        self._len = 0
        self._phase = 0  # 0 length digits, 1 payload, 2 comma
        self._payload = bytearray()

    @property
    def pending(self):
        """Payload bytes still missing from the netstring being read (0 in the length or comma)."""
        return self._len - len(self._payload) if self._phase == 1 else 0

    def feed(self, data):
        data = bytes(data)
        done = []
        i, n = 0, len(data)
        while i < n and self.status in (MORE, DONE):
            if self._phase == 0:
                i = self._read_length(data, i)
            elif self._phase == 1:
                take = min(self._len - len(self._payload), n - i)
                self._payload += data[i:i + take]
                i += take
                if len(self._payload) == self._len:
                    self._phase = 2
            else:
                if data[i] != 0x2C:  # ','
                    self.status = ERR_BADPROTO
                    break
                i += 1
                done.append(bytes(self._payload))
                self._payload.clear()
                self._len = 0
                self._phase = 0
                self.status = DONE
        return done

    def _read_length(self, data, i):
        self.status = MORE
        while i < len(data):
            if self._len > self._limit:
                self.status = ERR_TOOLONG
                return i
            ch = data[i]
            i += 1
            if ch == 0x3A:  # ':'
                self._phase = 1 if self._len else 2
                return i
            if not 0x30 <= ch <= 0x39:
                self.status = ERR_BADPROTO
                return i
            self._len = self._len * 10 + ch - 0x30
        return i


def qmtp_message(payload):
    """The message in a QMTP message netstring as qmail-qmtpd stores it, or None (bad protocol).

    The first byte says the text form: LF (stored as is) or CR (CR LF pairs
    become LF, other CRs stay); anything else, or an empty payload, is a
    protocol error (qmail-qmtpd exits 100).
    """
    payload = bytes(payload)
    if not payload or payload[0] not in (_LF, _CR):
        return None
    if payload[0] == _LF:
        return payload[1:]
    return payload[1:].replace(b"\r\n", b"\n")


def ns_split(data, limit=NETSTRING_MAX):
    """The payloads of a byte string that is exactly a run of netstrings, or None if it is not."""
    decoder = NetstringDecoder(limit)
    payloads = decoder.feed(data)
    if decoder.status != DONE:
        return None
    return payloads
