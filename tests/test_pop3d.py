"""qmail-pop3d (engine/pop3d.py) as a program on a Maildir: every command and -ERR text, order by
delivery time, sizes from ,S=, UIDL, TOP, dot-stuffing, QUIT's unlinks, renames and maildirsize."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from support.pop3 import put_message


@pytest.fixture
def maildir(tmp_path):
    md = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True)
    return str(md)


class Pop3d:
    def __init__(self, maildir, env=None, args=None):
        ours, theirs = socket.socketpair()
        self.errpath = os.path.join(os.path.dirname(maildir), "pop3d.err")
        self.err = open(self.errpath, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.pop3d", *(args if args is not None else [maildir])],
                                     stdin=theirs, stdout=theirs, stderr=self.err,
                                     env={**os.environ, **(env or {})})
        theirs.close()
        self.sock = ours
        self.sock.settimeout(20)
        self.f = ours.makefile("rb")

    def line(self):
        return self.f.readline()

    def cmd(self, text):
        self.sock.sendall(text + b"\r\n")
        return self.line()

    def multi(self, text):
        first = self.cmd(text)
        lines = []
        while True:
            line = self.line()
            if line == b".\r\n":
                return first, lines
            lines.append(line)

    def close(self):
        self.f.close()
        self.sock.close()
        code = self.proc.wait(20)
        self.err.close()
        return code

    def log(self):
        with open(self.errpath, "rb") as f:
            return f.read()


def test_listing_order_sizes_uidl_and_errors(maildir):
    now = int(time.time())
    second = put_message(maildir, b"Subject: two\n\nbody two\n", when=now - 50, sub="cur",
                         name=f"{now - 50}.M1P1.host", size_in_name=False)
    os.rename(second, second + ":2,S")
    first = put_message(maildir, b"Subject: one\n\nbody\n", when=now - 100, name=f"{now - 100}.M2P2.host")
    put_message(maildir, b"Subject: third\n\n" + b"x" * 10 + b"\n", when=now - 10, name=f"{now - 10}.M3P3.host")
    put_message(maildir, b"too new\n", when=now + 5, name=f"{now + 5}.M4P4.host")  # this second or later: hidden
    (open(os.path.join(maildir, "new", ".hidden"), "wb")).close()
    p = Pop3d(maildir)
    assert p.line() == b"+OK \r\n"
    assert p.cmd(b"STAT") == b"+OK 3 %d\r\n" % (19 + 23 + 27)
    first_line, lines = p.multi(b"LIST")
    assert first_line == b"+OK \r\n" and lines == [b"1 19\r\n", b"2 23\r\n", b"3 27\r\n"]
    _, uidls = p.multi(b"uidl")
    assert uidls == [b"1 %s\r\n" % os.path.basename(first).encode(), b"2 %d.M1P1.host\r\n" % (now - 50),
                     b"3 %d.M3P3.host,S=27\r\n" % (now - 10)]
    assert p.cmd(b"LIST 2") == b"+OK 2 23\r\n"
    assert p.cmd(b"UIDL 2") == b"+OK 2 %d.M1P1.host\r\n" % (now - 50)
    assert p.cmd(b"LIST 0") == b"-ERR messages are counted from 1\r\n"
    assert p.cmd(b"LIST 4") == b"-ERR not that many messages\r\n"
    assert p.cmd(b"LIST x") == b"-ERR syntax error\r\n"
    assert p.cmd(b"RETR") == b"-ERR syntax error\r\n"
    assert p.cmd(b"XTND") == b"-ERR unimplemented\r\n"
    assert p.cmd(b"NOOP") == b"+OK \r\n"
    assert p.cmd(b"LAST") == b"+OK 0\r\n"
    assert p.cmd(b"DELE 2") == b"+OK \r\n"
    assert p.cmd(b"DELE 2") == b"-ERR already deleted\r\n"
    assert p.cmd(b"RETR 2") == b"-ERR already deleted\r\n"
    assert p.cmd(b"LAST") == b"+OK 2\r\n"
    assert p.cmd(b"STAT") == b"+OK 2 46\r\n"
    assert p.multi(b"LIST")[1] == [b"1 19\r\n", b"3 27\r\n"]
    assert p.cmd(b"RSET") == b"+OK \r\n"
    assert p.cmd(b"STAT") == b"+OK 3 69\r\n" and p.cmd(b"LAST") == b"+OK 0\r\n"
    assert p.cmd(b"QUIT") == b"+OK \r\n"
    assert p.close() == 0
    cur = sorted(os.listdir(os.path.join(maildir, "cur")))
    assert os.path.basename(first) + ":2," in cur and "%d.M3P3.host,S=27:2," % (now - 10) in cur
    assert sorted(os.listdir(os.path.join(maildir, "new"))) == [".hidden", f"{now + 5}.M4P4.host,S=8"]


def test_retr_top_dot_stuffing(maildir):
    msg = b"Subject: dots\nX: y\n\n.leading dot\nline 2\n..two\nline 4\nno newline at end"
    put_message(maildir, msg)
    p = Pop3d(maildir)
    p.line()
    first, lines = p.multi(b"RETR 1")
    assert first == b"+OK %d octets\r\n" % len(msg)
    assert lines == [b"Subject: dots\r\n", b"X: y\r\n", b"\r\n", b"..leading dot\r\n", b"line 2\r\n",
                     b"...two\r\n", b"line 4\r\n", b"no newline at end\r\n", b"\r\n"]
    assert p.multi(b"TOP 1 0")[1] == [b"Subject: dots\r\n", b"X: y\r\n", b"\r\n", b"\r\n"]
    assert p.multi(b"TOP 1 2")[1] == [b"Subject: dots\r\n", b"X: y\r\n", b"\r\n", b"..leading dot\r\n",
                                      b"line 2\r\n", b"\r\n"]
    assert p.multi(b"RETR 1 1")[1][-2:] == [b"..leading dot\r\n", b"\r\n"]  # RETR with a count acts as TOP
    os.unlink(os.path.join(maildir, "new", os.listdir(os.path.join(maildir, "new"))[0]))
    assert p.cmd(b"RETR 1") == b"-ERR unable to open that message\r\n"
    p.cmd(b"QUIT")
    p.close()


def test_quit_unlinks_and_decrements_maildirsize(maildir):
    a = put_message(maildir, b"A" * 100, when=int(time.time()) - 20)
    b = put_message(maildir, b"B" * 40, sub="cur", when=int(time.time()) - 10)
    with open(os.path.join(maildir, "maildirsize"), "w") as f:
        f.write("1000S,10C\n140 2\n")
    p = Pop3d(maildir, env={"MAILDIRQUOTA": "1000S,10C"})
    p.line()
    assert p.cmd(b"DELE 1") == b"+OK \r\n" and p.cmd(b"DELE 2") == b"+OK \r\n"
    assert p.cmd(b"QUIT") == b"+OK \r\n"
    p.close()
    assert not os.path.exists(a) and not os.path.exists(b)
    with open(os.path.join(maildir, "maildirsize")) as f:
        assert f.read() == "1000S,10C\n140 2\n-100 -1\n-40 -1\n"


def test_quit_rebuilds_a_missing_maildirsize_before_the_deltas(maildir):
    put_message(maildir, b"A" * 100, when=int(time.time()) - 20)
    put_message(maildir, b"B" * 40, when=int(time.time()) - 10)
    p = Pop3d(maildir, env={"MAILDIRQUOTA": "5000S"})
    p.line()
    p.cmd(b"DELE 1")
    p.cmd(b"QUIT")
    p.close()
    with open(os.path.join(maildir, "maildirsize")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "5000S" and lines[1:] == ["140 2", "-100 -1"]


def test_quit_reports_unlink_failure(maildir):
    path = put_message(maildir, b"A" * 10)
    p = Pop3d(maildir)
    p.line()
    p.cmd(b"DELE 1")
    os.unlink(path)  # gone behind its back (root ignores a read-only directory)
    assert p.cmd(b"QUIT") == b"-ERR unable to unlink all deleted messages\r\n"
    assert p.line() == b"+OK \r\n"  # qmail-pop3d still says +OK after the -ERR line
    p.close()


def test_maildir_env_and_missing_maildir(maildir, tmp_path):
    put_message(maildir, b"x\n")
    p = Pop3d(str(tmp_path / "nonexistent"), env={"MAILDIR": maildir})
    assert p.line() == b"+OK \r\n" and p.cmd(b"STAT") == b"+OK 1 2\r\n"
    p.cmd(b"QUIT")
    p.close()
    p = Pop3d(str(tmp_path / "nonexistent"), env={"MAILDIR": ""})
    assert p.line() == b"-ERR this user has no $HOME/Maildir\r\n"
    assert p.close() == 0
    p = Pop3d(maildir, args=[])
    assert p.line() == b"-ERR this user has no $HOME/Maildir\r\n"
    p.close()
    shutil.rmtree(os.path.join(maildir, "cur"))
    p = Pop3d(maildir)
    assert p.line() == b"-ERR unable to scan $HOME/Maildir\r\n"
    p.close()


def test_acct_log_lines_and_old_tmp_files(maildir):
    put_message(maildir, b"Subject: s\n\nbody\n")
    old = os.path.join(maildir, "tmp", "stale")
    fresh = os.path.join(maildir, "tmp", "fresh")
    for path in (old, fresh):
        open(path, "wb").close()
    os.utime(old, (time.time() - 129700, time.time() - 129700))
    env = {"POP3_LOGLEVEL": "2", "TCPREMOTEIP": "127.0.0.9", "TCPREMOTEHOST": "client.test", "USER": "alice"}
    p = Pop3d(maildir, env=env)
    p.line()
    p.multi(b"RETR 1")
    p.cmd(b"QUIT")
    p.close()
    pid = p.proc.pid
    assert p.log() == (b"acct: pid %d: client.test:127.0.0.9: alice login\n"
                       b"acct: pid %d: client.test:127.0.0.9: alice logout 20 bytes transferred\n" % (pid, pid))
    assert not os.path.exists(old) and os.path.exists(fresh)


def test_hangup_ends_the_session_without_changes(maildir):
    path = put_message(maildir, b"x\n")
    p = Pop3d(maildir)
    p.line()
    p.cmd(b"DELE 1")
    assert p.close() == 0
    assert os.path.exists(path)  # deletions count only at QUIT
