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
_means = {}


@pytest.fixture(scope="module")
def big_queue(tmp_path_factory, request):
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
    yield q
    _print_speedups(request)


def _print_speedups(request):
    lines = [f"  {what}: compiled {_means[what, 'c'] * 1e3:.1f} ms, pure {_means[what, 'py'] * 1e3:.1f} ms, "
             f"speedup {_means[what, 'py'] / _means[what, 'c']:.1f}x"
             for what in dict.fromkeys(w for w, _ in _means) if (what, "c") in _means and (what, "py") in _means]
    if lines:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nqueue scanning, {ENTRIES} entries per directory:\n" + "\n".join(lines))


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_scan_todo(benchmark, big_queue, twin):
    k = TWINS[twin]
    assert len(benchmark(k.scan_todo, big_queue)) == ENTRIES
    _means["scan_todo", twin] = benchmark.stats.stats.mean


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_scan_info_local_remote(benchmark, big_queue, twin):
    k = TWINS[twin]
    found = benchmark(lambda: [k.scan_split(big_queue, kind) for kind in ("info", "local", "remote")])
    assert [len(ids) for ids in found] == [ENTRIES] * 3
    _means["scan info+local+remote", twin] = benchmark.stats.stats.mean


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_read_records_of_local_files(benchmark, big_queue, twin):
    k = TWINS[twin]
    paths = [f"{big_queue}/local/{msgid % conf.SPLIT}/{msgid}" for msgid in range(1_000_000, 1_000_000 + RECORD_FILES)]
    found = benchmark(lambda: [k.read_records(p) for p in paths])
    assert found[0] == [b"Tjoe@example.org", b"Dann@example.org", b"Tbob@example.net"]
    _means[f"read_records x{RECORD_FILES}", twin] = benchmark.stats.stats.mean


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_parse_records_of_a_big_envelope(benchmark, twin):
    k = TWINS[twin]
    envelope = b"u0\0p1\0Fa@b\0" + b"".join(b"Tuser%05d@example.org\0" % i for i in range(10_000))
    assert len(benchmark(k.parse_records, envelope)) == 10_003
    _means["parse_records, 10,000 recipients", twin] = benchmark.stats.stats.mean
