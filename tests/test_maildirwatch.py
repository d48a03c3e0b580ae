"""maildirwatch (engine/maildirwatch.py): the real program in a real pseudo-terminal, read for a moment
and then killed (it never ends by itself)."""

import os
import select
import subprocess
import sys
import time
import tty

import pytest

MAILDIRWATCH = os.path.join(os.path.dirname(sys.executable), "maildirwatch")
CLEAR = b"\033[;H\033[;J"


def make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(path / sub, exist_ok=True)
    return path


def put(maildir, sub, name, data):
    (maildir / sub / name).write_bytes(data)


class Watch:
    """maildirwatch on a raw pty; read() collects what it drew."""

    def __init__(self, maildir, interval=None):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        env = {**os.environ, "MAILDIR": str(maildir)}
        if interval is not None:
            env["MAILDIRWATCH_INTERVAL"] = str(interval)
        self.proc = subprocess.Popen([MAILDIRWATCH], stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env)
        os.close(slave)
        self.seen = b""

    def read_until(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while not pred(self.seen) and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                self.seen += os.read(self.master, 65536)
        return self.seen

    def close(self):
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stderr.close()
        os.close(self.master)


@pytest.fixture
def watch():
    started = []

    def start(maildir, interval=None):
        w = Watch(maildir, interval)
        started.append(w)
        return w
    yield start
    for w in started:
        w.close()


def test_one_screen_lists_new_messages_oldest_first(tmp_path, watch):
    md = make_maildir(tmp_path / "Maildir")
    put(md, "new", "1000000200.M1P1.host", b"Return-Path: <bob@remote.test>\nDelivered-To: joe@example.test\n"
                                         b"From: Bob <bob@remote.test>\nSubject: second\n\nhello\n")
    put(md, "new", "1000000100.M1P1.host", b"Subject: first\n\nno envelope lines\n")
    put(md, "new", str(int(time.time()) + 3600) + ".M1P1.host", b"Subject: from the future\n\n")
    put(md, "cur", "1000000000.M1P1.host:2,S", b"Subject: already read\n\n")
    w = watch(md)
    out = w.read_until(lambda s: b"hello" in s)
    assert out == (CLEAR +
                   b"FROM ? TO <?>\n"
                   b"first//no envelope lines/\n\n"
                   b"FROM <bob@remote.test> TO <joe@example.test>\n"
                   b"\033[1mFrom: Bob <bob@remote.test>\033[0m\n"
                   b"second//hello/\n\n")


def test_text_is_cut_at_158_and_controls_replaced(tmp_path, watch):
    md = make_maildir(tmp_path / "Maildir")
    put(md, "new", "1000000100.M1P1.host", b"Return-Path: <b\x01b@remote.test>\nFrom: \xe9ric\nSubject: "
                                         + b"y" * 10 + b"\n\n" + b"z" * 400 + b"\n")
    w = watch(md)
    out = w.read_until(lambda s: s.endswith(b"\n\n"))
    assert out == (CLEAR + b"FROM <b?b@remote.test> TO <?>\n\033[1mFrom: /ric\033[0m\n"
                   + b"y" * 10 + b"//" + b"z" * 146 + b"\n\n")


def test_redraws_every_interval_with_new_mail_and_cleans_tmp(tmp_path, watch):
    md = make_maildir(tmp_path / "Maildir")
    put(md, "tmp", "stale", b"x")
    os.utime(md / "tmp" / "stale", (time.time() - 40 * 3600, time.time() - 40 * 3600))
    put(md, "tmp", "fresh", b"x")
    w = watch(md, interval=0.3)
    w.read_until(lambda s: s.count(CLEAR) >= 1)
    put(md, "new", "1000000100.M1P1.host", b"Subject: arrived later\n\n")
    out = w.read_until(lambda s: b"arrived later" in s)
    assert out.startswith(CLEAR + CLEAR)  # the empty first screen, then each redraw
    assert out.rsplit(CLEAR, 1)[1] == b"FROM ? TO <?>\narrived later//\n\n"
    assert sorted(os.listdir(md / "tmp")) == ["fresh"]


@pytest.mark.parametrize("setup, text", [
    (lambda p: None, "maildirwatch: fatal: MAILDIR not set\n"),
    (lambda p: str(p / "missing"), "maildirwatch: fatal: unable to chdir to {p}/missing: file does not exist\n"),
    (lambda p: str(p), "maildirwatch: fatal: unable to scan $MAILDIR/new: file does not exist\n"),
])
def test_errors_exit_111(tmp_path, setup, text):
    env = {k: v for k, v in os.environ.items() if k != "MAILDIR"}
    maildir = setup(tmp_path)
    if maildir is not None:
        env["MAILDIR"] = maildir
    p = subprocess.run([MAILDIRWATCH], env=env, capture_output=True, timeout=30)
    assert (p.returncode, p.stderr.decode()) == (111, text.format(p=tmp_path))
