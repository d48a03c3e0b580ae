"""splogger: log lines on stdin become syslog datagrams (read here from a socket standing in for /dev/log)."""

import os
import re
import socket
import subprocess
import sys

import pytest


SPLOGGER = os.path.join(os.path.dirname(sys.executable), "splogger")


@pytest.fixture
def syslog_socket(tmp_path):
    path = str(tmp_path / "log")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    yield path, s
    s.close()


def received(sock, n):
    return [sock.recv(4096) for _ in range(n)]


def test_lines_become_messages(syslog_socket):
    path, sock = syslog_socket
    text = b"status: local 0/10\nwarning: trouble\nalert: worse\n\n\x01bell\x7f\xe9\nno newline at end"
    subprocess.run([SPLOGGER, "qmail"], input=text, env={**os.environ, "SYSLOG_SOCKET": path}, check=True,
                   timeout=30)
    got = received(sock, 4)
    pattern = rb"<(\d+)>qmail: \d+\.\d{6} (.*)"
    parsed = [re.fullmatch(pattern, g).groups() for g in got]
    assert parsed == [(b"22", b"status: local 0/10"), (b"20", b"warning: trouble"), (b"17", b"alert: worse"),
                      (b"22", b"?bell??")]
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # the empty line and the unterminated one send nothing


def test_long_line_continues_with_the_same_stamp(syslog_socket):
    path, sock = syslog_socket
    subprocess.run([SPLOGGER, "tag", "3"], input=b"x" * 1700 + b"\n", env={**os.environ, "SYSLOG_SOCKET": path},
                   check=True, timeout=30)
    first, second, third = received(sock, 3)
    stamp = re.match(rb"<30>tag: (\d+\.\d+) ", first).group(1)  # facility 3 (daemon) << 3 | info
    assert first == b"<30>tag: " + stamp + b" " + b"x" * 799
    assert second == b"<30>tag: " + stamp + b"+" + b"x" * 799
    assert third == b"<30>tag: " + stamp + b"+" + b"x" * 102


def test_missing_syslog_does_not_block(tmp_path):
    p = subprocess.run([SPLOGGER], input=b"line\n" * 20000, timeout=30,
                       env={**os.environ, "SYSLOG_SOCKET": str(tmp_path / "nobody-listens")})
    assert p.returncode == 0

