"""Maildir delivery with fsync, compiled kernel vs pure twin, 1 KB and 100 KB messages (make bench-kernels).

Each round delivers one message from a bytes buffer into a fresh-ish
Maildir on the work disk (tmp/ create, write, fsync, move to new/, fsync
new/). The file operations per message, counted with strace on one
delivery in a child process, are printed at the end of the module.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from engine import compiled, maildir

PREFIX = b"Return-Path: <sender@example.org>\nDelivered-To: user@example.com\n"
SIZES = {"1KB": 1024, "100KB": 100 * 1024}
SYSCALLS = "openat,open,write,writev,copy_file_range,fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat"
_results = {}

COUNT_SCRIPT = """
import os, sys
from engine import compiled, maildir
k = compiled.variants("maildir")[sys.argv[2]]
k.deliver(os.fsencode(sys.argv[1]), {prefix!r}, b"x" * 1024, b"bench")
"""


def count_ops(md, twin):
    """File operations of one delivery in a child, from strace, limited to calls on the Maildir."""
    if not shutil.which("strace"):
        return "strace not installed"
    script = COUNT_SCRIPT.format(prefix=PREFIX)
    p = subprocess.run(["strace", "-f", "-e", f"trace={SYSCALLS}", sys.executable, "-c", script, md, twin],
                       capture_output=True, text=True)
    lines = p.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if "/tmp/" in line and "O_EXCL" in line), len(lines))
    ops = {}
    for line in lines[start:]:
        m = re.match(r"(?:\[pid +\d+\] )?(\w+)\(", line)
        if m:
            ops[m.group(1)] = ops.get(m.group(1), 0) + 1
    return ops


@pytest.fixture(scope="module")
def report(request):
    yield _results
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for key in sorted(_results):
            print(f"\n{key}: {_results[key]}")


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("twin", sorted(compiled.variants("maildir")))
def test_maildir_delivery(benchmark, tmp_path, report, speedups, twin, size):
    kernel = compiled.variants("maildir")[twin]
    md = tmp_path / "Maildir"
    maildir.make_maildir(str(md))
    body = b"x" * SIZES[size]
    top = os.fsencode(md)
    benchmark.pedantic(kernel.deliver, args=(top, PREFIX, body, b"bench"), rounds=300, warmup_rounds=5)
    speedups.record(benchmark, f"Maildir delivery {size}", twin, lambda mean: f"{1 / mean:,.0f} messages/s")
    report[f"{twin} file operations per message"] = count_ops(str(md), twin)
    assert len(os.listdir(md / "new")) >= 300
