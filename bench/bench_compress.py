"""zlib and zstd on mail messages of 4 KB and 100 KB, compress and decompress (run: make bench-kernels).

Both are C libraries (the stdlib's zlib, the zstandard package's libzstd); there is no
pure-Python twin to compare with, so this prints each one's MB/s, the compressed size,
and zstd's speed relative to zlib. The compiled-vs-pure comparison of our own zlib path
(DATAZ/QMQP framing around zlib) is bench_smtpparse.py's DATAZ rows.
"""

import random
import zlib

import pytest
import zstandard

SIZES = {"4KB": 4 * 1024, "100KB": 100 * 1024}

CODECS = {
    "zlib": (lambda: (lambda b: zlib.compress(b, 6)), lambda: zlib.decompress),
    "zstd": (lambda: zstandard.ZstdCompressor(level=3).compress,
             lambda: zstandard.ZstdDecompressor().decompress),
}
_results = {}


def message(size):
    """Header lines and text of seeded random words (about 2:1 under zlib, nearer real mail text;
    a repeated line would compress 100:1 and flatter both codecs)."""
    rnd = random.Random(size)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(3000)]
    out = b"Received: from relay.example.com by mx.example.org\nSubject: benchmark\nFrom: a@example.com\n\n"
    while len(out) < size:
        out += " ".join(rnd.choice(words) for _ in range(12)).encode() + b"\n"
    return out[:size]


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print()
        for (what, size), by_codec in sorted(_results.items()):
            if len(by_codec) < 2:
                continue
            line = ", ".join(f"{codec} {len_ / mean / 1e6:,.0f} MB/s" + (f" ({out} bytes)" if out else "")
                             for codec, (mean, len_, out) in sorted(by_codec.items()))
            print(f"{what} {size}: {line}; zstd/zlib speed {by_codec['zlib'][0] / by_codec['zstd'][0]:.1f}x")


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compress(benchmark, codec, size):
    data = message(SIZES[size])
    packed = benchmark(CODECS[codec][0](), data)
    assert CODECS[codec][1]()(packed) == data
    _results.setdefault(("compress", size), {})[codec] = (benchmark.stats.stats.mean, len(data), len(packed))


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_decompress(benchmark, codec, size):
    data = message(SIZES[size])
    packed = CODECS[codec][0]()(data)
    assert benchmark(CODECS[codec][1](), packed) == data
    _results.setdefault(("decompress", size), {})[codec] = (benchmark.stats.stats.mean, len(data), None)
