"""qmail-queue throughput: 4 KB messages per second, and the file operations each one costs.

Run: make bench-kernels (or .venv/bin/python -m pytest bench/bench_queue.py --benchmark-only -s).
In-process enqueue() is what the SMTP and QMTP services use; the program
(one Python process per message) is what qmail-inject and QMAILQUEUE users
pay. The file operations per message are counted by strace on a real run.
Queue scanning is in bench_queuescan.py.
"""

import collections
import os
import re
import shutil
import subprocess
import sys

import pytest

from engine import queue
from support.qmailhome import make_qmailhome

MESSAGE = b"Subject: bench\n\n" + b"x" * 4080 + b"\n"
ENVELOPE = b"Fa@b.test\0Tc@d.test\0\0"
_rates = {}


@pytest.fixture
def home(tmp_path):
    return make_qmailhome(str(tmp_path / "qmail"))


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    if _rates:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\nqmail-queue, 4 KB messages: " + ", ".join(f"{k} {v}" for k, v in _rates.items()))


def test_enqueue_in_process(benchmark, home):
    ids = benchmark.pedantic(lambda: queue.enqueue(MESSAGE, b"a@b.test", [b"c@d.test"], home=home),
                             rounds=300, iterations=1)
    assert ids
    _rates["in-process"] = f"{1 / benchmark.stats.stats.mean:.0f} msg/s (median {benchmark.stats.stats.median * 1e3:.2f} ms)"


def _queue_program(env):
    r, w = os.pipe()
    os.write(w, ENVELOPE)
    os.close(w)
    try:
        subprocess.run([sys.executable, "-m", "engine.queue"], input=MESSAGE, stdout=r, env=env, check=True)
    finally:
        os.close(r)


def test_qmail_queue_program(benchmark, home):
    env = {**os.environ, "QMAILHOME": home}
    benchmark.pedantic(lambda: _queue_program(env), rounds=30, iterations=1)
    _rates["program"] = f"{1 / benchmark.stats.stats.mean:.1f} msg/s (median {benchmark.stats.stats.median * 1e3:.0f} ms)"


@pytest.mark.skipif(not shutil.which("strace"), reason="strace counts the file operations (Debian package strace)")
def test_file_operations_per_message(benchmark, home, tmp_path):
    benchmark.pedantic(lambda: _traced_run(home, tmp_path / "trace"), rounds=1, iterations=1)
    ops = _count_operations(tmp_path / "trace")
    _rates["file operations per message"] = dict(ops) | {"total": sum(ops.values())}
    assert ops == {"create": 2, "rename": 2, "fsync": 3}


def _traced_run(home, trace):
    r, w = os.pipe()
    os.write(w, ENVELOPE)
    os.close(w)
    try:
        subprocess.run(["strace", "-qq", "-o", str(trace), "-e",
                        "trace=openat,creat,link,linkat,unlink,unlinkat,rename,renameat,renameat2,"
                        "fsync,fdatasync,syncfs,mkdir",
                        sys.executable, "-m", "engine.queue"], input=MESSAGE, stdout=r,
                       env={**os.environ, "QMAILHOME": home}, check=True)
    finally:
        os.close(r)


def _count_operations(trace):
    """Creates, links, unlinks, renames in the queue and syncs of a strace log."""
    ops = collections.Counter()
    for line in trace.read_text().splitlines():
        call = re.match(r"(\w+)\(", line)
        if not call or line.rstrip().endswith(("ENOENT (No such file or directory)", "ENXIO (No such device or address)")):
            continue
        name = call.group(1)
        if name == "openat" and "O_CREAT" in line and "/queue/" in line:
            ops["create"] += 1
        elif name in ("link", "linkat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir") \
                and "/queue/" in line:
            ops[name.rstrip("at2") if name.startswith("rename") else name] += 1
        elif name in ("fsync", "fdatasync", "syncfs"):
            ops[name] += 1
    return ops
