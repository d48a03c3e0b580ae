"""`make bench`'s orchestrator (bench/suite.py) in its --smoke mode, so the benchmark cannot rot.

It starts the real servers (slapd with generated users, two masters of ours,
a throwaway Postfix delivering from LDAP), sends a few messages to each and
writes the JSON and markdown table. Nothing here looks at a speed: only that
every message was accepted and delivered, and that the outputs are complete.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import suite  # noqa: E402


def test_smoke_run_delivers_through_both_servers_and_writes_the_table(tmp_path):
    out = tmp_path / "results"
    work = tempfile.mkdtemp(prefix="bs", dir="/tmp")  # short: the queue's Unix socket paths must fit 108 bytes
    os.chmod(work, 0o755)  # Postfix's daemons and virtual(8) run as other users and must get through
    try:
        p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "suite.py"), "--smoke", "--out", str(out),
                            "--workdir", work], capture_output=True, text=True, timeout=120)
        left = os.listdir(work)
    finally:
        shutil.rmtree(work)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads((out / "suite.json").read_text())
    servers = {r["server"] for r in report["results"]}
    assert servers == {"ours", "postfix", "ours-assign"}
    for r in report["results"]:
        assert r["errors"] == 0, r
        assert r["accepted"] == r["messages"], r
        assert r["delivered_rate"] > 0 and r["accept_rate"] >= r["delivered_rate"], r
    for row in report["summary"]:
        assert row["ratio"] > 0 and row["ours"]["rate"] > 0 and row["postfix"]["rate"] > 0
    for name in ("ours", "postfix"):
        ops = report["file_ops"][name]
        assert ops["fsyncs"] >= 1 and ops["creates"] >= 1, ops  # each made at least one durable file per message
    assert report["disk"]["ceiling"] > 0
    table = (out / "suite.md").read_text()
    assert "| scenario | ours msgs/s | Postfix msgs/s | ours / Postfix | disk ceiling files/s |" in table
    assert table in p.stdout
    assert left == [], "work directory left behind"


STRACE = """\
812   openat(AT_FDCWD, "queue/pid/812", O_WRONLY|O_CREAT|O_EXCL, 0600) = 5
812   openat(AT_FDCWD, "control/me", O_RDONLY|O_CLOEXEC) = 6
813   openat(AT_FDCWD, "tmp/1.2.host", O_WRONLY|O_CREAT|O_EXCL, 0600 <unfinished ...>
812   fsync(5)                          = 0
813   <... openat resumed>)             = -1 EEXIST (File exists)
812   renameat2(AT_FDCWD, "a", AT_FDCWD, "b", 0) = 0
814   linkat(AT_FDCWD, "tmp/x", AT_FDCWD, "new/x", 0) = 0
814   unlinkat(AT_FDCWD, "tmp/x", 0)    = 0
814   unlinkat(AT_FDCWD, "somedir", AT_REMOVEDIR) = 0
814   unlink("gone")                    = -1 ENOENT (No such file or directory)
815   syncfs(3 <unfinished ...>
815   <... syncfs resumed>)             = 0
"""


def test_file_operations_are_counted_from_strace_only_when_they_succeed():
    ops = suite.count_file_ops(STRACE.splitlines())
    assert ops == {"creates": 1, "fsyncs": 2, "renames": 1, "links": 1, "unlinks": 1}
