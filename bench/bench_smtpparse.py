"""SMTP protocol kernels, compiled vs pure twin (run: make bench-kernels).

Measures what qmail-smtpd's hot paths cost per session: command lines
(split + addrparse + SIZE check for a MAIL/RCPT mix), DATA decoding
(blast(): dot-unstuffing, CRLF to LF, hop count) of a 4 KB and a 100 KB
message, and zlib as DATAZ/QMQP use it (deflate of the wire form, and the
inflate + DATA decode of ZDataDecoder). Throughput and the speedup (pure
mean / compiled mean) are printed at the end of the module.
"""

import zlib

import pytest

from engine import compiled

SIZES = {"4KB": 4 * 1024, "100KB": 100 * 1024}
CHUNK = 16 * 1024  # what one socket read typically returns
COMMANDS = [b"MAIL FROM:<sender%d@example.com> SIZE=%d BODY=8BITMIME" % (i, i * 100) for i in range(50)]
COMMANDS += [b"RCPT TO:<\"rcpt %d\"@example.net>" % i for i in range(50)]


def message(size):
    """A header with a few Received lines, then text lines, some starting with a dot, as wire CRLF form."""
    header = b"".join(b"Received: from relay%d.example.com by mx.example.org\r\n" % i for i in range(5))
    header += b"Subject: benchmark\r\nFrom: a@example.com\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 and some more words.\r\n"
    body = bytearray()
    i = 0
    while len(header) + len(body) < size:
        body += (b"." if i % 20 == 0 else b"") + line
        i += 1
    return header + bytes(body[:size - len(header) - 2]) + b"\r\n.\r\n"


def feed(decoder, wire):
    return sum(len(decoder.feed(wire[i:i + CHUNK])) for i in range(0, len(wire), CHUNK))


def record(benchmark, speedups, what, unit, per_round, twin):
    """per_round items (lines, or bytes when unit is 1e6 for MB/s) each round."""
    label = "MB/s" if unit > 1 else "lines/s"
    speedups.record(benchmark, what, twin, lambda mean: f"{per_round / mean / unit:,.1f} {label}")


@pytest.mark.parametrize("twin", sorted(compiled.variants("smtpparse")))
def test_command_parsing(benchmark, speedups, twin):
    k = compiled.variants("smtpparse")[twin]

    def run():
        found = 0
        for line in COMMANDS:
            verb, arg = k.split_command(line)
            found += k.parse_addr(arg) is not None
            if verb == b"MAIL":
                found += k.size_exceeds(arg, 10_000_000)
        return found

    assert benchmark(run) == len(COMMANDS)
    record(benchmark, speedups, "MAIL/RCPT parsing", 1, len(COMMANDS), twin)


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("twin", sorted(compiled.variants("smtpparse")))
def test_data_decoding(benchmark, speedups, twin, size):
    k = compiled.variants("smtpparse")[twin]
    wire = message(SIZES[size])

    def run():
        decoder = k.DataDecoder()
        n = feed(decoder, wire)
        assert decoder.status == k.DONE
        return n

    assert benchmark(run) > 0.95 * len(wire)
    record(benchmark, speedups, f"DATA decode {size}", 1e6, len(wire), twin)


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("twin", sorted(compiled.variants("zdata")))
def test_dataz_compression(benchmark, speedups, twin, size):
    z = compiled.variants("zdata")[twin]
    wire = message(SIZES[size])

    def run():
        encoder = z.ZEncoder()
        return b"".join(encoder.compress(wire[i:i + CHUNK]) for i in range(0, len(wire), CHUNK)) + encoder.finish()

    assert zlib.decompress(benchmark(run)) == wire
    record(benchmark, speedups, f"DATAZ deflate {size}", 1e6, len(wire), twin)


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("twin", sorted(compiled.variants("zdata")))
def test_dataz_decompression(benchmark, speedups, twin, size):
    z = compiled.variants("zdata")[twin]
    wire = message(SIZES[size])
    stream = zlib.compress(wire)

    def run():
        decoder = z.ZDataDecoder()
        n = feed(decoder, stream)
        assert decoder.status == z.DONE
        return n

    assert benchmark(run) > 0.95 * len(wire)
    record(benchmark, speedups, f"DATAZ inflate+decode {size}", 1e6, len(wire), twin)
