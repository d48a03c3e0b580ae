"""The queue: scanning 100,000 queued messages (compiled vs pure) and qmail-queue throughput.

Run: make bench-kernels (or pytest bench/bench_queue.py --benchmark-only -s).
Scanning lists todo/ and info/ split directories holding 100,000 empty
entries, as qmail-todo and qmail-send do at start. Throughput is 4 KB
messages per second through the in-process enqueue (what the SMTP service
uses) and through the qmail-queue program (one process per message, what
qmail-inject and QMAILQUEUE users pay), with the file operations each
message costs counted by strace when it is installed.
"""

import os
import shutil
import subprocess
import sys

import pytest

from engine import compiled, conf, queue
from support.qmailhome import make_qmailhome

ENTRIES = 100_000
MESSAGE = b"Subject: bench\n\n" + b"x" * 4080 + b"\n"
_results = {}


@pytest.fixture(scope="module")
def big_queue(tmp_path_factory, request):
    home = make_qmailhome(str(tmp_path_factory.mktemp("bigq") / "qmail"))
    q = os.path.join(home, "queue")
    for kind in ("todo", "info"):
        for i in range(ENTRIES):
            msgid = 1_000_000 + i
            open(f"{q}/{kind}/{msgid % conf.SPLIT}/{msgid}", "w").close()
    yield q
    if len(_results) == 2:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nqueue scan of {ENTRIES} todo + {ENTRIES} info entries: compiled {_results['c'] * 1e3:.1f} ms, "
                  f"pure {_results['py'] * 1e3:.1f} ms; speedup {_results['py'] / _results['c']:.1f}x")


@pytest.mark.parametrize("twin", sorted(compiled.variants("queuescan")))
def test_scan_100k(benchmark, big_queue, twin):
    k = compiled.variants("queuescan")[twin]
    result = benchmark(lambda: (k.scan_split(big_queue, "todo"), k.scan_split(big_queue, "info")))
    assert len(result[0]) == len(result[1]) == ENTRIES
    _results[twin] = benchmark.stats.stats.mean


@pytest.fixture
def home(tmp_path):
    return make_qmailhome(str(tmp_path / "qmail"))


def test_enqueue_in_process(benchmark, home):
    ids = benchmark.pedantic(lambda: queue.enqueue(MESSAGE, b"a@b.test", [b"c@d.test"], home=home),
                             rounds=300, iterations=1)
    assert ids
    benchmark.extra_info["messages_per_s"] = 1 / benchmark.stats.stats.mean


def test_qmail_queue_program(benchmark, home):
    env = {**os.environ, "QMAILHOME": home}

    def one():
        r, w = os.pipe()
        os.write(w, b"Fa@b.test\0Tc@d.test\0\0")
        os.close(w)
        subprocess.run([sys.executable, "-m", "engine.queue"], input=MESSAGE, stdout=r, env=env, check=True)
        os.close(r)
    benchmark.pedantic(one, rounds=30, iterations=1)
    benchmark.extra_info["messages_per_s"] = 1 / benchmark.stats.stats.mean


@pytest.mark.skipif(not shutil.which("strace"), reason="strace counts the file operations")
def test_file_operations_per_message(home, tmp_path):
    trace = tmp_path / "trace"
    code = ("from engine import queue\n"
            f"queue.enqueue({MESSAGE!r}, b'a@b.test', [b'c@d.test'], home={home!r})\n")
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,link,unlink,rename,fsync,fdatasync,syncfs",
                    "-o", str(trace), sys.executable, "-c", code], check=True)
    lines = [ln for ln in trace.read_text().splitlines() if "/queue/" in ln or "fsync" in ln]
    ops = {"create": sum("O_CREAT" in ln for ln in lines), "link": sum(" link(" in ln or "link(" in ln.split()[1][:5]
                                                                     for ln in lines),
           "unlink": sum("unlink(" in ln for ln in lines), "fsync": sum("fsync(" in ln for ln in lines)}
    print(f"\nenqueue file operations per message: {ops}")
    assert ops["fsync"] == 3
