"""qmail-popup (engine/popup.py) as a program on a socket: greeting, every command's reply, the fd 3
block handed to the checkpassword program, and the exit-code -> -ERR table."""

import os
import re
import socket
import subprocess
import sys

import pytest

from engine import popup


class Client:
    def __init__(self, childargs, env=None):
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.popup", "pop.example.test", *childargs],
                                     stdin=theirs, stdout=theirs, env=env)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(20)
        self.f = ours.makefile("rb")

    def line(self):
        return self.f.readline()

    def cmd(self, text):
        self.sock.sendall(text + b"\r\n")
        return self.line()

    def close(self):
        self.f.close()
        self.sock.close()
        return self.proc.wait(20)


def checkpassword(tmp_path, code):
    """A checkpassword program that saves what it got on fd 3 and exits `code`."""
    out = tmp_path / "fd3"
    return ["sh", "-c", f"cat <&3 > {out}; exit {code}"], out


def test_greeting_and_authorization_commands(tmp_path):
    args, _ = checkpassword(tmp_path, 3)
    c = Client(args)
    greeting = c.line()
    assert re.fullmatch(rb"\+OK <%d\.\d+@pop\.example\.test>\r\n" % c.proc.pid, greeting)
    assert c.cmd(b"NOOP") == b"+OK \r\n"
    assert c.cmd(b"STAT") == b"-ERR authorization first\r\n"
    assert c.cmd(b"PASS x") == b"-ERR USER first\r\n"
    assert c.cmd(b"USER") == b"-ERR syntax error\r\n"
    assert c.cmd(b"APOP nodigest") == b"-ERR syntax error\r\n"
    assert c.cmd(b"user   alice") == b"+OK \r\n"
    assert c.cmd(b"PASS") == b"-ERR syntax error\r\n"
    assert c.cmd(b"qUiT") == b"+OK \r\n"
    assert c.line() == b""
    assert c.close() == 1


def test_fd3_block_and_child_success(tmp_path):
    args, out = checkpassword(tmp_path, 0)
    c = Client(args)
    timestamp = c.line()[4:-2]
    c.cmd(b"USER alice")
    c.sock.sendall(b"PASS pass word\r\n")
    assert c.line() == b""  # exit 0: the subprogram served the session, nothing more is said
    assert c.close() == 1
    assert out.read_bytes() == b"alice\0pass word\0" + timestamp + b"\0"


def test_apop_hands_the_digest_as_password(tmp_path):
    args, out = checkpassword(tmp_path, 3)
    c = Client(args)
    timestamp = c.line()[4:-2]
    assert c.cmd(b"APOP bob c4c9334bac560ecc979e58001b3e22fb") == b"-ERR authorization failed\r\n"
    c.close()
    assert out.read_bytes() == b"bob\0c4c9334bac560ecc979e58001b3e22fb\0" + timestamp + b"\0"


@pytest.mark.parametrize("code, text", [
    (1, b"error in server configuration"), (2, b"unable to contact authorization server"),
    (25, b"user record incorrect"), (3, b"authorization failed"), (4, b"account disabled"),
    (5, b"mailhost is unreachable"), (6, b"mailbox is corrupted"), (61, b"mailbox could not be created"),
    (62, b"the users mailbox does not exist"), (7, b"unable to start subprogram"), (8, b"out of memory"),
    (111, b"temporary error"), (42, b"temporary error"),
])
def test_exit_codes(tmp_path, code, text):
    args, _ = checkpassword(tmp_path, code)
    c = Client(args)
    c.line()
    c.cmd(b"USER u")
    assert c.cmd(b"PASS p") == b"-ERR " + text + b"\r\n"
    assert c.line() == b""
    assert c.close() == 1


def test_crashed_child_and_missing_program(tmp_path):
    c = Client(["sh", "-c", "kill -SEGV $$"])
    c.line()
    c.cmd(b"USER u")
    assert c.cmd(b"PASS p") == b"-ERR aack, child crashed\r\n"
    assert c.line() == b""
    c.close()
    c = Client([str(tmp_path / "no-such-program")])
    c.line()
    c.cmd(b"USER u")
    assert c.cmd(b"PASS p") == b"-ERR error in server configuration\r\n"  # execvp failed: exit 1
    c.close()


def test_usage(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.popup", "host"], capture_output=True)
    assert proc.stdout == b"-ERR usage: popup hostname subprogram\r\n" and proc.returncode == 1


def test_dialogue_unit():
    d = popup.Dialogue(b"h", pid=7, now=99)
    assert d.greeting() == b"+OK <7.99@h>\r\n"
    assert d.handle(b"USER a b") == (b"+OK \r\n", None)
    assert d.handle(b"PASS  x y\r") == (b"", ("login", b"a b", b"x y"))
    assert popup.exit_reply(3 << 8) == b"-ERR authorization failed\r\n"
    assert popup.exit_reply(0) is None
