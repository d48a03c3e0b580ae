"""qmail-pop3d's RETR: a 1 MiB message (70-character lines, some starting with '.') converted to
POP3's CRLF and dot-stuffed form and written to /dev/null, and STAT/LIST over a 2,000-message Maildir
listing (the scan qmail-pop3d does at login).

Run: .venv/bin/python -m pytest bench/bench_pop3d.py --benchmark-only
"""

import os
import time

import pytest

from engine import pop3d, pop3io

LINE = b"x" * 69 + b"\n"
DOT_LINE = b"." + b"y" * 68 + b"\n"


@pytest.fixture
def maildir(tmp_path):
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def session(messages):
    out = os.open(os.devnull, os.O_WRONLY)
    return pop3d.Session(pop3io.Channel(-1, out), messages, {}), out


def test_retr_1mib(benchmark, maildir):
    body = (LINE * 9 + DOT_LINE) * ((1 << 20) // (10 * 70))
    message = b"Subject: bench\n\n" + body
    path = maildir / "new" / f"{int(time.time()) - 10}.M1P1.host,S={len(message)}"
    path.write_bytes(message)
    s, out = session(pop3d.scan())
    benchmark(s.cmd_top, b"1")
    os.close(out)
    assert s.bytes >= len(message)


def test_scan_2000_messages(benchmark, maildir):
    now = int(time.time()) - 3000
    for i in range(2000):
        (maildir / "cur" / f"{now + i}.M{i}P1.host,S={100 + i}:2,S").write_bytes(b"")
    messages = benchmark(pop3d.scan)
    assert len(messages) == 2000 and messages[0].size == 100
