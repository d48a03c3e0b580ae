"""engine smtpparse kernel (both twins): qmail-smtpd's command split, addrparse(),
getparameter(), blast() DATA decoding, qmail-remote's DATA stuffing, netstrings.

Expected values follow qmail-ldap's qmail-smtpd.c / commands.c / qmail-qmqpd.c
(the twins were also checked against those C functions compiled from the
reference source during development; see the report).
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.twins import both

from engine import _smtpparse_c, _smtpparse_py

TWINS = (_smtpparse_py, _smtpparse_c)
PROPERTY = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- commands

COMMANDS = [
    (b"QUIT", (b"QUIT", b"")),
    (b"quit", (b"QUIT", b"")),
    (b"mail FROM:<a@b> SIZE=10", (b"MAIL", b"FROM:<a@b> SIZE=10")),
    (b"rcpt    TO:<x@y>\r", (b"RCPT", b"TO:<x@y>")),   # spaces after the verb skipped, one CR stripped
    (b"NOOP \r\r", (b"NOOP", b"\r")),                    # only one CR is stripped
    (b"", (b"", b"")),
    (b" helo x", (b"", b"helo x")),                      # verb is the text before the first space
    (b"eHlO host.example ", (b"EHLO", b"host.example ")),
    (b"DATA\0garbage", (b"DATA", b"")),                  # C strings end at NUL
    (b"mail from:<a\0b>", (b"MAIL", b"from:<a")),
    (b"d\xe4ta x", (b"D\xe4TA", b"x")),                  # only ASCII letters change case
]


@both("smtpparse")
@pytest.mark.parametrize("line,expected", COMMANDS)
def test_split_command(k, line, expected):
    assert k.split_command(line) == expected


@both("smtpparse")
def test_command_reader_lines_and_rest(k):
    reader = k.CommandReader()
    reader.feed(b"EHLO a\r\nMAIL FROM:<x>\nRCPT TO")
    assert reader.line() == b"EHLO a"
    assert reader.line() == b"MAIL FROM:<x>"
    assert reader.line() is None
    reader.feed(b":<y>\r\nDATA\r\nSubject: pipelined\r\n")
    assert reader.line() == b"RCPT TO:<y>"
    assert reader.line() == b"DATA"
    assert reader.pending == len(b"Subject: pipelined\r\n")
    assert reader.rest() == b"Subject: pipelined\r\n"
    assert reader.pending == 0


@both("smtpparse")
def test_command_reader_overflow(k):
    unlimited = k.CommandReader()
    unlimited.feed(b"x" * 100000)
    assert not unlimited.overflow
    limited = k.CommandReader(limit=1000)
    limited.feed(b"x" * 1000)
    assert not limited.overflow
    limited.feed(b"x")
    assert limited.overflow
    limited.feed(b"\n")
    assert not limited.overflow
    assert len(limited.line()) == 1001


# ---------------------------------------------------------------- addresses

ADDRESSES = [
    (b"FROM:<user@example.com>", b"user@example.com"),
    (b"FROM:<>", b""),
    (b"from:<user@example.com> SIZE=100", b"user@example.com"),
    (b"TO: <user@example.com>", b"user@example.com"),
    (b"<user@example.com>", b"user@example.com"),             # no FROM: needed when there is a '<'
    (b"FROM:user@example.com", b"user@example.com"),           # no brackets: up to a space
    (b"FROM:   user@example.com SIZE=5", b"user@example.com"),
    (b"FROM:", None),                                          # nothing after ':' -> syntax error
    (b"FROM user@example.com", None),                          # neither '<' nor ':'
    (b"FROM: ", b""),                                          # qmail quirk: spaces only -> empty address
    (b"TO:<@relay.one,@relay.two:user@example.com>", b"user@example.com"),  # source route stripped
    (b"TO:<@relay.one>", b""),                                 # route without ':' eats everything
    (b"FROM:<\"john doe\"@example.com>", b"john doe@example.com"),         # quotes removed
    (b"FROM:<\"a>b\"@example.com>", b"a>b@example.com"),       # '>' inside quotes does not terminate
    (b"FROM:<a\\>b@example.com>", b"a>b@example.com"),         # backslash escapes the next byte
    (b"FROM:<a\\\\b@c>", b"a\\b@c"),
    (b"FROM:<user@example.com", b"user@example.com"),          # missing '>' is tolerated
    (b"FROM:<user@[127.0.0.1]>", b"user@[127.0.0.1]"),         # localiphost rewrite is the caller's
    (b"FROM:<a@b\0c>", b"a@b"),
    (b"TO:x <y@z>", b"y@z"),                                   # first '<' anywhere wins
]


@both("smtpparse")
@pytest.mark.parametrize("arg,expected", ADDRESSES)
def test_parse_addr(k, arg, expected):
    assert k.parse_addr(arg) == expected


@both("smtpparse")
def test_parse_addr_length_limit(k):
    assert k.ADDR_MAX == 899
    ok = b"u" * 890 + b"@ex.co"        # 896 bytes
    assert k.parse_addr(b"TO:<" + ok + b">") == ok
    limit = b"u" * 893 + b"@ex.co"     # 899 bytes: the longest qmail accepts
    assert k.parse_addr(b"TO:<" + limit + b">") == limit
    over = b"u" * 894 + b"@ex.co"      # 900 bytes
    assert k.parse_addr(b"TO:<" + over + b">") is None
    assert k.parse_addr(b"TO:<" + over + b">", maxlen=None) == over


PARAMETERS = [
    (b"FROM:<a@b> SIZE=1000", b"SIZE", b"1000"),
    (b"FROM:<a@b> size=1000", b"SIZE", b"1000"),
    (b"FROM:<a@b> BODY=8BITMIME SIZE=12 AUTH=<>", b"SIZE", b"12"),
    (b"FROM:<a@b> BODY=8BITMIME SIZE=12 AUTH=<>", b"AUTH", b"<>"),
    (b"FROM:<a@b>", b"SIZE", None),
    (b"FROM:<a@b>SIZE=5", b"SIZE", b"5"),                       # no space needed after '>'
    (b"FROM:a@b SIZE=5", b"SIZE", b"5"),
    (b"FROM:<a@b> SIZEX=5", b"SIZE", None),
    (b"FROM:<a@b> SIZE=5 SIZE=6", b"SIZE", b"5"),               # the first one counts
    (b"FROM:<a@b> SIZE SIZE=5", b"SIZE", None),                 # getparameter() skips the next word
    (b"FROM:<a@b> SIZE  SIZE=5", b"SIZE", b"5"),
    (b"FROM:<a@b> SIZE", b"SIZE", None),
    (b"FROM:<\"x> SIZE=9\"@b> SIZE=5", b"SIZE", b"5"),          # quoted '>' is part of the address
]


@both("smtpparse")
@pytest.mark.parametrize("arg,name,expected", PARAMETERS)
def test_get_parameter(k, arg, name, expected):
    assert k.get_parameter(arg, name) == expected
    if expected is not None:
        assert k.mail_params(arg)[name] == expected


@both("smtpparse")
def test_mail_params_dict(k):
    assert k.mail_params(b"FROM:<a@b> size=100 body=8BITMIME AUTH=<x@y> FLAG") == {
        b"SIZE": b"100", b"BODY": b"8BITMIME", b"AUTH": b"<x@y>"}
    assert k.mail_params(b"FROM:<a@b>") == {}
    assert k.mail_params(b"FROM:") == {}


@both("smtpparse")
@pytest.mark.parametrize("arg,databytes,expected", [
    (b"FROM:<a@b> SIZE=1001", 1000, True),
    (b"FROM:<a@b> SIZE=1000", 1000, False),
    (b"FROM:<a@b> SIZE=1001", 0, False),            # databytes 0: no limit
    (b"FROM:<a@b>", 1, False),
    (b"FROM:<a@b> SIZE=12abc", 11, True),           # scan_ulong reads the leading digits
    (b"FROM:<a@b> SIZE=abc", 1, False),
    (b"FROM:<a@b> SIZE=18446744073709551617", 5, False),  # wraps like an unsigned long to 1
])
def test_size_exceeds(k, arg, databytes, expected):
    assert k.size_exceeds(arg, databytes) is expected


# ---------------------------------------------------------------- DATA

def decode_all(k, wire, chunks=None):
    """Feed wire in the given chunk sizes (one piece by default); (message, decoder)."""
    decoder = k.DataDecoder()
    out = []
    pos = 0
    for size in chunks or [len(wire)]:
        out.append(decoder.feed(wire[pos:pos + size]))
        pos += size
    if pos < len(wire):
        out.append(decoder.feed(wire[pos:]))
    return b"".join(out), decoder


DATA = [
    # wire, message, status name, hops, rest
    (b"Subject: x\r\n\r\nbody\r\n.\r\n", b"Subject: x\n\nbody\n", "DONE", 0, b""),
    (b".\r\n", b"", "DONE", 0, b""),
    (b"a\r\n.\r\nQUIT\r\n", b"a\n", "DONE", 0, b"QUIT\r\n"),
    (b"..leading dot\r\n.\r\n", b".leading dot\n", "DONE", 0, b""),
    (b".x\r\n.\r\n", b"x\n", "DONE", 0, b""),                  # a lone leading dot is removed
    (b"a\rb\r\n.\r\n", b"a\rb\n", "DONE", 0, b""),            # a CR without LF is kept
    (b"a\r\r\n.\r\n", b"a\r\n", "DONE", 0, b""),
    (b"x\r\n.\rx\r\n.\r\n", b"x\n.\rx\n", "DONE", 0, b""),     # ".CR" not followed by LF is data
    (b"x\r\n.\r\r\n.\r\n", b"x\n.\r\n", "DONE", 0, b""),
    (b"a\nb\r\n.\r\n", b"a", "ERR_BARE_LF", 0, b""),
    (b"\n", b"", "ERR_BARE_LF", 0, b""),
    (b"a\r\n.\n", b"a\n", "ERR_BARE_LF", 0, b""),             # ".LF" does not end the message
    (b"a\r\n\n", b"a\n", "ERR_BARE_LF", 0, b""),
    (b"Subject: x\r\n\r\nbody", b"Subject: x\n\nbody", "MORE", 0, b""),
    (b"a\r\n.", b"a\n", "MORE", 0, b""),
    (b"Received: a\r\nDelivered-To: b\r\nreceived:c\r\nDELIVERED\r\nrEcEiVeDx\r\n\r\n.\r\n",
     b"Received: a\nDelivered-To: b\nreceived:c\nDELIVERED\nrEcEiVeDx\n\n", "DONE", 5, b""),
    (b"Receive: a\r\nDeliver: b\r\n X-Received: c\r\n\r\n.\r\n",
     b"Receive: a\nDeliver: b\n X-Received: c\n\n", "DONE", 0, b""),
    (b"Subject: x\r\n\r\nReceived: in the body\r\n.\r\n",
     b"Subject: x\n\nReceived: in the body\n", "DONE", 0, b""),
]


@both("smtpparse")
@pytest.mark.parametrize("wire,message,status,hops,rest", DATA)
def test_data_vectors(k, wire, message, status, hops, rest):
    out, decoder = decode_all(k, wire)
    assert (out, decoder.status, decoder.hops, decoder.rest) == (message, getattr(k, status), hops, rest)
    assert decoder.size == len(message)


@both("smtpparse")
@pytest.mark.parametrize("wire,message,status,hops,rest", DATA)
def test_data_vectors_byte_by_byte(k, wire, message, status, hops, rest):
    out, decoder = decode_all(k, wire, [1] * len(wire))
    assert (out, decoder.status, decoder.hops, decoder.rest) == (message, getattr(k, status), hops, rest)


@both("smtpparse")
def test_input_after_done_goes_to_rest(k):
    decoder = k.DataDecoder()
    assert decoder.feed(b"a\r\n.\r\nQU") == b"a\n"
    assert decoder.feed(b"IT\r\n") == b""
    assert decoder.rest == b"QUIT\r\n"


@both("smtpparse")
@pytest.mark.parametrize("count,looping", [(99, False), (100, True), (150, True)])
def test_hop_limit(k, count, looping):
    header = b"".join(b"Received: from hop%d\r\n" % i for i in range(count))
    _, decoder = decode_all(k, header + b"\r\nbody\r\n.\r\n")
    assert decoder.status == k.DONE
    assert decoder.hops == count
    assert decoder.looping is looping
    assert k.MAXHOPS == 100
    assert k.REPLY_HOPS == b"554 too many hops, this message is looping (#5.4.6)\r\n"


@both("smtpparse")
@pytest.mark.parametrize("length,status", [(9998, "DONE"), (9999, "ERR_LINE_LONG"), (20000, "ERR_LINE_LONG")])
def test_header_line_limit(k, length, status):
    # blast() counts the bytes of a header line including CR and LF; more than 10000 is fatal
    wire = b"X-Long: " + b"x" * (length - 8) + b"\r\n\r\n" + b"y" * 50000 + b"\r\n.\r\n"
    out, decoder = decode_all(k, wire, [4096] * (len(wire) // 4096 + 1))
    assert decoder.status == getattr(k, status)
    if status == "DONE":
        assert out == wire[:-5].replace(b"\r\n", b"\n") + b"\n"
    else:
        assert len(out) == min(length, 10000)  # the line up to the byte that overflowed, CR held back
    assert k.REPLY_LINE_LONG == b"500 Text line too long."


@both("smtpparse")
def test_long_body_lines_are_fine(k):
    wire = b"Subject: s\r\n\r\n" + b"z" * 300000 + b"\r\n.\r\n"
    out, decoder = decode_all(k, wire, [1000] * 400)
    assert decoder.status == k.DONE
    assert len(out) == len(b"Subject: s\n\n") + 300001


@both("smtpparse")
def test_databytes_accounting(k):
    _, decoder = decode_all(k, b"0123456789\r\n.\r\n")
    assert decoder.size == 11
    assert not decoder.too_big(0)
    assert not decoder.too_big(11)
    assert decoder.too_big(10)
    assert k.REPLY_DATABYTES == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    assert k.REPLY_BARE_LF == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"


@both("smtpparse")
def test_error_stops_decoding(k):
    decoder = k.DataDecoder()
    assert decoder.feed(b"ok\r\nbad\nmore\r\n.\r\n") == b"ok\nbad"
    assert decoder.status == k.ERR_BARE_LF
    assert decoder.feed(b"x\r\n.\r\n") == b""
    assert decoder.status == k.ERR_BARE_LF


# ---------------------------------------------------------------- client side

@both("smtpparse")
@pytest.mark.parametrize("message,wire", [
    (b"", b".\r\n"),
    (b"a\n", b"a\r\n.\r\n"),
    (b".\n..\nx.\n", b"..\r\n...\r\nx.\r\n.\r\n"),
    (b"a\r\n", b"a\r\r\n.\r\n"),
])
def test_stuffer(k, message, wire):
    stuffer = k.DataStuffer()
    assert stuffer.feed(message) + stuffer.finish() == wire


@both("smtpparse")
def test_stuffer_partial_final_line(k):
    stuffer = k.DataStuffer()
    stuffer.feed(b"no newline at the end")
    assert stuffer.finish() is k.PARTIAL_LINE is None


# ---------------------------------------------------------------- netstrings

@both("smtpparse")
def test_netstring_encode(k):
    assert k.ns_encode(b"") == b"0:,"
    assert k.ns_encode(b"hello world!") == b"12:hello world!,"


@both("smtpparse")
@pytest.mark.parametrize("wire,payloads,status", [
    (b"3:abc,", [b"abc"], "DONE"),
    (b"0:,0:,", [b"", b""], "DONE"),
    (b"003:abc,1:", [b"abc"], "MORE"),           # leading zeros are fine
    (b"3:abcd", [], "ERR_BADPROTO"),             # no comma
    (b"3x:abc,", [], "ERR_BADPROTO"),
    (b":abc,", [], "ERR_BADPROTO"),              # empty length is 0, then 'a' is not ','
    (b"-1:", [], "ERR_BADPROTO"),
    (b"2:ab,201:", [b"ab"], "ERR_TOOLONG"),
    (b"200:", [], "MORE"),
    (b"9999x", [], "ERR_TOOLONG"),               # getlen() checks the length before the next byte
])
def test_netstring_decode(k, wire, payloads, status):
    decoder = k.NetstringDecoder(limit=200)
    assert decoder.feed(wire) == payloads
    assert decoder.status == getattr(k, status)


@both("smtpparse")
def test_netstring_decode_incremental(k):
    decoder = k.NetstringDecoder()
    got = []
    for byte in b"5:hello,3:a,b,":
        got += decoder.feed(bytes([byte]))
    assert got == [b"hello", b"a,b"]
    assert k.NETSTRING_MAX == 200000000
    decoder.feed(b"10:abc")
    assert decoder.pending == 7
    assert decoder.status == k.MORE


@both("smtpparse")
def test_ns_split(k):
    request = k.ns_encode(b"message\n") + k.ns_encode(b"s@x") + k.ns_encode(b"r@y")
    assert k.ns_split(request) == [b"message\n", b"s@x", b"r@y"]
    assert k.ns_split(request[:-1]) is None
    assert k.ns_split(b"") == []


# ---------------------------------------------------------------- properties

wire_pieces = st.sampled_from([b"\r", b"\n", b".", b"x", b"\r\n", b"\r\n.\r\n", b"Received: h", b"DeLiVeReD",
                               b"\r\n\r\n", b"..", b"\0", b"\xff", b"To: a\r\n"])
wires = st.lists(wire_pieces, max_size=80).map(b"".join) | st.binary(max_size=300)


def data_result(k, wire, cuts):
    decoder = k.DataDecoder()
    out = []
    last = 0
    for cut in sorted(cuts) + [len(wire)]:
        out.append(decoder.feed(wire[last:cut]))
        last = cut
    return b"".join(out), decoder.status, decoder.hops, decoder.size, decoder.rest


@PROPERTY
@given(wires, st.lists(st.integers(0, 400), max_size=12))
def test_data_twins_agree_and_chunking_does_not_matter(wire, cuts):
    cuts = [c for c in cuts if c <= len(wire)]
    reference = data_result(_smtpparse_py, wire, [])
    for k in TWINS:
        assert data_result(k, wire, cuts) == reference
        assert data_result(k, wire, list(range(len(wire)))) == reference


@PROPERTY
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_stuff_then_decode_round_trip(message, chunk):
    message += b"\n"
    for k in TWINS:
        stuffer = k.DataStuffer()
        wire = stuffer.feed(message) + stuffer.finish()
        out, decoder = decode_all(k, wire, [chunk] * len(wire))
        if decoder.status == k.DONE:
            assert out == message and decoder.rest == b""
        else:  # only a header line over the limit can stop it
            assert decoder.status == k.ERR_LINE_LONG


arg_bytes = st.lists(st.sampled_from(list(b'<>:@" \\,aZ.=SIZEsize[]1\0\r')), max_size=50).map(bytes) \
    | st.binary(max_size=60)


@PROPERTY
@given(arg_bytes, st.sampled_from([b"SIZE", b"BODY", b"AUTH", b"S", b""]))
def test_argument_parsers_twins_agree(arg, name):
    results = [(k.split_command(arg), k.parse_addr(arg), k.parse_addr(arg, maxlen=None), k.get_parameter(arg, name),
                k.mail_params(arg), k.size_exceeds(arg, 5), k.scan_ulong(arg), k.qmtp_message(arg)) for k in TWINS]
    assert results[0] == results[1]


@PROPERTY
@given(st.lists(st.binary(max_size=40), max_size=8), st.binary(max_size=40), st.lists(st.integers(0, 300)))
def test_netstring_twins_agree(payloads, junk, cuts):
    wire = b"".join(_smtpparse_py.ns_encode(p) for p in payloads) + junk
    results = []
    for k in TWINS:
        decoder = k.NetstringDecoder(limit=30)
        got, last = [], 0
        for cut in sorted(c for c in cuts if c <= len(wire)) + [len(wire)]:
            got += decoder.feed(wire[last:cut])
            last = cut
        results.append((got, decoder.status, decoder.pending))
    assert results[0] == results[1]
    if not junk and all(len(p) <= 30 for p in payloads):
        assert results[0][0] == payloads


@PROPERTY
@given(st.binary(max_size=300), st.lists(st.integers(0, 300)))
def test_command_reader_twins_agree(stream, cuts):
    results = []
    for k in TWINS:
        reader = k.CommandReader(limit=50)
        lines, last = [], 0
        for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
            reader.feed(stream[last:cut])
            last = cut
            while (line := reader.line()) is not None:
                lines.append(line)
        results.append((lines, reader.overflow, reader.rest()))
    assert results[0] == results[1]


@PROPERTY
@given(st.lists(st.sampled_from([b".", b"\n", b"x", b"\r", b"\n.", b".\n"]), max_size=60).map(b"".join),
       st.lists(st.integers(0, 200), max_size=8))
def test_stuffer_twins_agree_on_any_chunking(message, cuts):
    results = []
    for k in TWINS:
        stuffer = k.DataStuffer()
        wire, last = b"", 0
        for cut in sorted(c for c in cuts if c <= len(message)) + [len(message)]:
            wire += stuffer.feed(message[last:cut])
            last = cut
        results.append((wire, stuffer.finish()))
    whole = _smtpparse_py.DataStuffer()
    assert results[0] == results[1] == (whole.feed(message), whole.finish())


@both("smtpparse")
@pytest.mark.parametrize("payload,message", [
    (b"\nSubject: a\n\nbody\n", b"Subject: a\n\nbody\n"),
    (b"\nkeeps\r\nCRLF\r\n", b"keeps\r\nCRLF\r\n"),              # LF form is stored as is
    (b"\rSubject: a\r\n\r\nbody\r\n", b"Subject: a\n\nbody\n"),
    (b"\ra\r\r\nb\rc\r", b"a\r\nb\rc\r"),                         # only CR LF pairs become LF
    (b"\n", b""),
    (b"", None),                                                  # empty message: protocol error
    (b"Xbody\n", None),
])
def test_qmtp_message(k, payload, message):
    assert k.qmtp_message(payload) == message
