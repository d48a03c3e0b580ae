"""cdb look-ups, compiled kernel vs pure twin, in a 100,000-key cdb (run: make bench-kernels).

Each round looks up 1,000 keys (half present, half absent) through
engine.cdb.Cdb's mmap, as qmail-smtpd does for rcpthosts.cdb. The speedup
(pure mean / compiled mean) is printed at the end of the module.
"""

import random

import pytest

from engine import cdb, compiled

KEYS = 100_000
PROBES = 1_000


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cdb") / "big.cdb")
    cdb.create(path, ((b"host%06d.example.com" % i, b"") for i in range(KEYS)))
    rng = random.Random(7)
    probes = [b"host%06d.example.com" % rng.randrange(KEYS * 2) for _ in range(PROBES)]
    return path, probes


@pytest.mark.parametrize("twin", sorted(compiled.variants("cdb")))
def test_lookups(benchmark, database, speedups, twin):
    path, probes = database
    kernel = compiled.variants("cdb")[twin]
    with cdb.Cdb(path) as db:
        buf = db.buffer

        def run():
            return sum(kernel.find(buf, key) is not None for key in probes)

        hits = benchmark(run)
    assert 0 < hits < PROBES
    speedups.record(benchmark, "cdb look-ups", twin, lambda mean: f"{mean * 1e9 / PROBES:.0f} ns per key")
