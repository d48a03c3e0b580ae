"""Queue scanning with 100,000 queued messages: compiled kernel vs pure twin.

Run: make bench-kernels (or .venv/bin/python -m pytest bench/bench_queuescan.py --benchmark-only -s).
What qmail-todo does at start (scan_todo) and qmail-send (scan_split of
info, local, remote), each over 100,000 entries in the 23 subdirectories,
plus reading the records of 10,000 local/ files. The entries are hard
links to one empty file per subdirectory: a link costs a fifth of a
create here, and the scan only reads names.
"""

import os

import pytest

from engine import compiled, conf
from support.qmailhome import make_qmailhome

ENTRIES = 100_000
RECORD_FILES = 10_000
KINDS = ("todo", "info", "local", "remote")
RECORDS = b"Tjoe@example.org\0Dann@example.org\0Tbob@example.net\0"
TWINS = compiled.variants("queuescan")


@pytest.fixture(scope="module")
def big_queue(tmp_path_factory):
    home = make_qmailhome(str(tmp_path_factory.mktemp("bigq") / "qmail"))
    q = os.path.join(home, "queue")
    for kind in KINDS:
        sources = []
        for sub in range(conf.SPLIT):
            src = f"{q}/{kind}/{sub}.src"
            with open(src, "wb") as f:
                f.write(RECORDS if kind == "local" else b"")
            sources.append(src)
        for i in range(ENTRIES):
            msgid = 1_000_000 + i
            os.link(sources[msgid % conf.SPLIT], f"{q}/{kind}/{msgid % conf.SPLIT}/{msgid}")
    return q


def milliseconds(mean):
    return f"{mean * 1e3:.1f} ms"


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_scan_todo(benchmark, big_queue, speedups, twin):
    k = TWINS[twin]
    assert len(benchmark(k.scan_todo, big_queue)) == ENTRIES
    speedups.record(benchmark, f"scan_todo, {ENTRIES:,} entries", twin, milliseconds)


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_scan_info_local_remote(benchmark, big_queue, speedups, twin):
    k = TWINS[twin]
    found = benchmark(lambda: [k.scan_split(big_queue, kind) for kind in ("info", "local", "remote")])
    assert [len(ids) for ids in found] == [ENTRIES] * 3
    speedups.record(benchmark, f"scan info+local+remote, {ENTRIES:,} entries each", twin, milliseconds)


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_read_records_of_local_files(benchmark, big_queue, speedups, twin):
    k = TWINS[twin]
    paths = [f"{big_queue}/local/{msgid % conf.SPLIT}/{msgid}" for msgid in range(1_000_000, 1_000_000 + RECORD_FILES)]
    found = benchmark(lambda: [k.read_records(p) for p in paths])
    assert found[0] == [b"Tjoe@example.org", b"Dann@example.org", b"Tbob@example.net"]
    speedups.record(benchmark, f"read_records x{RECORD_FILES}", twin, milliseconds)


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_parse_records_of_a_big_envelope(benchmark, speedups, twin):
    k = TWINS[twin]
    envelope = b"u0\0p1\0Fa@b\0" + b"".join(b"Tuser%05d@example.org\0" % i for i in range(10_000))
    assert len(benchmark(k.parse_records, envelope)) == 10_003
    speedups.record(benchmark, "parse_records, 10,000 recipients", twin, milliseconds)
