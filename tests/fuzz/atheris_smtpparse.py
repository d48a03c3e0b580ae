"""Coverage-guided fuzzing of the smtpparse and zdata twins with atheris (not part of the pytest run).

Every input goes through both twins of every entry point; an exception, a
hang (libFuzzer's -timeout) or any difference between the twins is a crash.
Run bounded, e.g.:
    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/atheris_smtpparse.py -max_total_time=120 -timeout=5
"""

import sys
import zlib

import atheris

with atheris.instrument_imports():
    from engine import _smtpparse_py, _zdata_py
from engine import _smtpparse_c, _zdata_c

PAIRS = ((_smtpparse_py, _smtpparse_c), (_zdata_py, _zdata_c))


def chunked(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def smtp_results(k, arg, chunks):
    decoder = k.DataDecoder()
    out = b"".join(decoder.feed(c) for c in chunks)
    netstrings = k.NetstringDecoder(limit=64)
    got = [p for c in chunks for p in netstrings.feed(c)]
    stuffer = k.DataStuffer()
    wire = b"".join(stuffer.feed(c) for c in chunks)
    return (k.split_command(arg), k.parse_addr(arg), k.get_parameter(arg, b"SIZE"), k.mail_params(arg),
            k.size_exceeds(arg, 1000), out, decoder.status, decoder.hops, decoder.size, decoder.rest,
            got, netstrings.status, wire, stuffer.finish())


def zdata_results(z, chunks):
    decoder = z.ZDataDecoder()
    out = b"".join(decoder.feed(c) for c in chunks)
    inflater = z.QmqpInflater()
    plain = b"".join(inflater.feed(c) for c in chunks)
    return (out, decoder.status, decoder.rest, decoder.reply(), plain, inflater.compressed, inflater.status,
            inflater.extra, inflater.reply())


def one_input(data):
    size = (data[0] if data else 0) + 1
    body = data[1:]
    chunks = chunked(body, size)
    (py, c), (zpy, zc) = PAIRS
    if smtp_results(py, body, chunks) != smtp_results(c, body, chunks):
        raise AssertionError(f"smtpparse twins differ on {data!r}")
    for stream in (body, zlib.compress(body)):
        pieces = chunked(stream, size)
        if zdata_results(zpy, pieces) != zdata_results(zc, pieces):
            raise AssertionError(f"zdata twins differ on {data!r}")


def main():
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.exit(main())
