"""engine zdata kernel (both twins): DATAZ (qmail-smtpd DATA_COMPRESS) and QMQP compression
(qmail-qmqpd/qmail-qmqpc QMQP_COMPRESS), wire-compatible with qmail-ldap's zlib use:
deflateInit(Z_DEFAULT_COMPRESSION), zlib header and adler32, ended with Z_FINISH."""

import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.twins import both

from engine import _smtpparse_py, _zdata_c, _zdata_py

TWINS = (_zdata_py, _zdata_c)
PROPERTY = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

MESSAGE = (b"Received: from client\nSubject: compressed\n\n"
           + b"".join(b"line %d of a fairly repetitive body .\n" % i for i in range(300))
           + b".starts with a dot\n")


def smtp_wire(message):
    stuffer = _smtpparse_py.DataStuffer()
    return stuffer.feed(message) + stuffer.finish()


def feed_chunks(decoder, raw, size):
    return b"".join(decoder.feed(raw[i:i + size]) for i in range(0, len(raw), size))


@both("zdata")
def test_encoder_matches_deflateinit_default(k):
    """qmail-remote / qmail-qmqpc: deflateInit(Z_DEFAULT_COMPRESSION) + Z_FINISH == zlib.compress()."""
    encoder = k.ZEncoder()
    wire = smtp_wire(MESSAGE)
    stream = b"".join(encoder.compress(wire[i:i + 1000]) for i in range(0, len(wire), 1000)) + encoder.finish()
    assert stream == zlib.compress(wire)
    assert stream[:2] == b"\x78\x9c"                   # zlib header, default level
    assert (encoder.total_in, encoder.total_out) == (len(wire), len(stream))
    assert encoder.saved_percent() == 100 - int(100.0 * len(stream) / len(wire))


@both("zdata")
def test_encoder_refuses_use_after_finish(k):
    encoder = k.ZEncoder()
    encoder.finish()
    with pytest.raises(ValueError):
        encoder.compress(b"x")
    with pytest.raises(ValueError):
        encoder.finish()


@both("zdata")
@pytest.mark.parametrize("chunk", [1, 7, 512, 4096, 1 << 20])
def test_dataz_round_trip(k, chunk):
    stream = zlib.compress(smtp_wire(MESSAGE))
    decoder = k.ZDataDecoder()
    out = feed_chunks(decoder, stream + b"QUIT\r\n", chunk)
    assert out == MESSAGE
    assert decoder.status == k.DONE
    assert decoder.rest == b"QUIT\r\n"
    assert decoder.hops == 1
    assert decoder.size == len(MESSAGE)
    assert (decoder.total_in, decoder.total_out) == (len(stream), len(smtp_wire(MESSAGE)))
    assert decoder.saved_percent() == 100 - int(100.0 * len(stream) / len(smtp_wire(MESSAGE)))
    assert decoder.reply() is None


@both("zdata")
def test_dot_before_stream_end_waits_for_the_trailer(k):
    stream = zlib.compress(b"a\r\n.\r\n")
    decoder = k.ZDataDecoder()
    flushed = zlib.compressobj()
    head = flushed.compress(b"a\r\n.\r\n") + flushed.flush(zlib.Z_SYNC_FLUSH)  # all data, no trailer yet
    tail = flushed.flush(zlib.Z_FINISH)
    assert decoder.feed(head) == b"a\n"
    assert decoder.status == k.MORE          # the dot is seen but the stream is not finished
    assert decoder.feed(tail + b"NOOP\r\n") == b""
    assert decoder.status == k.DONE
    assert decoder.rest == b"NOOP\r\n"
    assert stream  # the ordinary one-shot stream works too
    one_shot = k.ZDataDecoder()
    assert one_shot.feed(stream) == b"a\n" and one_shot.status == k.DONE


@both("zdata")
def test_commands_inside_the_stream_after_the_dot_come_back_as_rest(k):
    decoder = k.ZDataDecoder()
    assert decoder.feed(zlib.compress(b"a\r\n.\r\nRSET\r\n") + b"QUIT\r\n") == b"a\n"
    assert decoder.rest == b"RSET\r\nQUIT\r\n"


@both("zdata")
def test_stream_ending_before_the_dot_continues_in_plain_text(k):
    # qmail-smtpd stops inflating at Z_STREAM_END and reads on from the socket
    decoder = k.ZDataDecoder()
    assert decoder.feed(zlib.compress(b"Subject: a\r\n\r\nhalf")) == b"Subject: a\n\nhalf"
    assert decoder.status == k.MORE
    assert decoder.feed(b" plain\r\n.\r\nQUIT\r\n") == b" plain\n"
    assert decoder.status == k.DONE
    assert decoder.rest == b"QUIT\r\n"


@both("zdata")
def test_corrupt_stream(k):
    decoder = k.ZDataDecoder()
    assert decoder.feed(b"this is not zlib\r\n.\r\n") == b""
    assert decoder.status == k.ERR_ZLIB
    assert decoder.reply() == b"451 Receiving compressed data failed: incorrect header check #(4.3.0)\r\n"
    assert decoder.feed(zlib.compress(b".\r\n")) == b""


@both("zdata")
def test_corrupt_data_in_the_middle(k):
    stream = bytearray(zlib.compress(smtp_wire(MESSAGE)))
    stream[40:60] = b"\xff" * 20
    decoder = k.ZDataDecoder()
    feed_chunks(decoder, bytes(stream), 16)
    assert decoder.status == k.ERR_ZLIB
    assert decoder.reply().startswith(b"451 Receiving compressed data failed: ")
    assert decoder.reply().endswith(b" #(4.3.0)\r\n")


@both("zdata")
def test_bare_lf_and_long_line_inside_the_stream(k):
    bare = k.ZDataDecoder()
    bare.feed(zlib.compress(b"a\nb\r\n.\r\n"))
    assert bare.status == k.ERR_BARE_LF
    assert bare.reply() == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
    long = k.ZDataDecoder()
    long.feed(zlib.compress(b"X: " + b"x" * 20000 + b"\r\n\r\n.\r\n"))
    assert long.status == k.ERR_LINE_LONG
    assert long.reply() == b"500 Text line too long."


@both("zdata")
def test_hops_and_databytes_through_the_stream(k):
    message = b"".join(b"Delivered-To: u%d@example.com\r\n" % i for i in range(100)) + b"\r\nx\r\n.\r\n"
    decoder = k.ZDataDecoder()
    decoder.feed(zlib.compress(message))
    assert decoder.status == k.DONE
    assert decoder.looping
    assert decoder.too_big(100) and not decoder.too_big(10 ** 6)


# ---------------------------------------------------------------- QMQP

def qmqp_request(message=b"Subject: q\n\nbody\n", sender=b"s@example.com", rcpts=(b"r@example.com",)):
    ns = _smtpparse_py.ns_encode
    return ns(ns(message) + ns(sender) + b"".join(ns(r) for r in rcpts))


@both("zdata")
def test_qmqp_plain_request_passes_through(k):
    request = qmqp_request()
    inflater = k.QmqpInflater()
    assert feed_chunks(inflater, request, 1) == request
    assert inflater.compressed is False


@both("zdata")
def test_qmqp_detection_waits_for_a_non_digit(k):
    inflater = k.QmqpInflater()
    assert inflater.feed(b"12") == b""
    assert inflater.compressed is None
    assert inflater.feed(b"3:") == b"123:"
    assert inflater.compressed is False


@both("zdata")
@pytest.mark.parametrize("chunk", [1, 100, 1 << 16])
def test_qmqp_compressed_request(k, chunk):
    request = qmqp_request(MESSAGE)
    encoder = k.ZEncoder()
    stream = encoder.compress(request) + encoder.finish()
    inflater = k.QmqpInflater()
    assert feed_chunks(inflater, stream, chunk) == request
    assert inflater.compressed is True
    assert inflater.status == k.DONE
    assert inflater.saved_percent() == 100 - int(100.0 * len(stream) / len(request))
    assert inflater.saved_percent() > 50
    assert inflater.reply() is None


@both("zdata")
def test_qmqp_nocompress_never_inflates(k):
    stream = zlib.compress(qmqp_request())
    inflater = k.QmqpInflater(detect=False)
    assert inflater.feed(stream) == stream
    assert inflater.compressed is False


@both("zdata")
def test_qmqp_corrupt_and_extra(k):
    bad = k.QmqpInflater()
    assert bad.feed(b"garbage") == b""
    assert bad.status == k.ERR_ZLIB
    assert bad.reply() == b"ZReceiving compressed data failed: incorrect header check #(4.3.0)"
    dictionary = k.QmqpInflater()  # a valid zlib header asking for a preset dictionary: zlib sets no msg
    dictionary.feed(b"x garbage")
    assert dictionary.reply() == b"ZReceiving compressed data failed: need dictionary #(4.3.0)"
    extra = k.QmqpInflater()
    assert extra.feed(zlib.compress(qmqp_request()) + b"junk") == qmqp_request()
    assert extra.feed(b"more") == b""
    assert extra.extra == b"junkmore"


# ---------------------------------------------------------------- properties

def run_decoder(k, raw, cuts):
    decoder = k.ZDataDecoder()
    out, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(raw)) + [len(raw)]:
        out.append(decoder.feed(raw[last:cut]))
        last = cut
    return (b"".join(out), decoder.status, decoder.rest, decoder.hops, decoder.size, decoder.reply(),
            decoder.total_in, decoder.total_out)


plain_pieces = st.sampled_from([b"\r\n", b"\r\n.\r\n", b"x", b".", b"\n", b"Received:", b"\r\n\r\n", b"\0\xff"])
plain_texts = st.lists(plain_pieces, max_size=60).map(b"".join)


@PROPERTY
@given(plain_texts, st.binary(max_size=20), st.lists(st.integers(0, 600), max_size=10),
       st.integers(0, 3), st.integers(0, 255))
def test_dataz_twins_agree_and_chunking_does_not_matter(text, after, cuts, damage, byte):
    raw = bytearray(zlib.compress(text) + after)
    for i in range(damage):  # sometimes corrupt the stream
        raw[(byte * (i + 7)) % len(raw)] ^= byte
    raw = bytes(raw)
    chunked = [run_decoder(k, raw, cuts) for k in TWINS]
    assert chunked[0] == chunked[1]
    whole = run_decoder(_zdata_c, raw, [])
    status = whole[1]
    if status in (_zdata_c.MORE, _zdata_c.DONE):
        assert chunked[0] == whole
    elif status == _zdata_c.ERR_ZLIB:  # a chunk before the damage may already have hit a DATA error
        assert chunked[0][1] not in (_zdata_c.MORE, _zdata_c.DONE)
    else:  # a DATA error: same verdict and message bytes; how much was inflated past it may differ
        assert chunked[0][:6] == whole[:6]


@PROPERTY
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_decoders_survive_random_bytes(raw, cuts):
    results = []
    for k in TWINS:
        inflater = k.QmqpInflater()
        out, last = [], 0
        for cut in sorted(c for c in cuts if c <= len(raw)) + [len(raw)]:
            out.append(inflater.feed(raw[last:cut]))
            last = cut
        results.append((b"".join(out), inflater.compressed, inflater.status, inflater.extra, inflater.reply(),
                        run_decoder(k, raw, cuts)))
    assert results[0] == results[1]


@PROPERTY
@given(st.binary(max_size=5000), st.integers(-1, 9), st.integers(1, 700))
def test_encoder_twins_agree(data, level, chunk):
    streams = []
    for k in TWINS:
        encoder = k.ZEncoder(level)
        streams.append(b"".join(encoder.compress(data[i:i + chunk]) for i in range(0, len(data), chunk))
                       + encoder.finish())
    assert streams[0] == streams[1]
    assert zlib.decompress(streams[0]) == data
