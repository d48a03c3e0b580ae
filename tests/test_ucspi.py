"""qmail-smtpd and qmail-qmtpd run the qmail way, one connection each under Debian's tcpserver."""

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import zlib

import pytest

from support.ports import free_port
from support.smtpclient import Dialogue


def queued(home):
    q = os.path.join(home, "queue", "todo")
    return sum(len(os.listdir(os.path.join(q, s))) for s in os.listdir(q))


@pytest.fixture
def tcpserver(qmailhome):
    with open(os.path.join(qmailhome, "control", "rcpthosts"), "w") as f:
        f.write("example.test\n")
    with open(os.path.join(qmailhome, "control", "smtpdataz"), "w") as f:
        f.write("1\n")
    started = []

    def start(program):
        port = free_port()
        bindir = os.path.dirname(sys.executable)
        p = subprocess.Popen([shutil.which("tcpserver"), "-q", "-H", "-R", "-l", "mx.example.test", "127.0.0.1",
                              str(port), os.path.join(bindir, program)],
                             env={**os.environ, "QMAILHOME": qmailhome})
        started.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return port
            except OSError:
                time.sleep(0.05)
        raise AssertionError("tcpserver did not start")
    yield start
    for p in started:
        p.terminate()
        p.wait(10)


def test_qmail_smtpd_under_tcpserver(tcpserver, qmailhome):
    port = tcpserver("qmail-smtpd")
    time.sleep(0.3)
    before = queued(qmailhome)
    with smtplib.SMTP("127.0.0.1", port) as c:
        code, banner = c.ehlo("client.test")
        assert code == 250 and b"DATAZ" in banner
        c.sendmail("a@remote.test", ["joe@example.test"], "Subject: ucspi\r\n\r\nhi\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@remote.test", ["x@elsewhere.test"], "Subject: relay\r\n\r\nno\r\n")
    assert queued(qmailhome) == before + 1


def test_dataz_compressed_data(tcpserver, qmailhome):
    port = tcpserver("qmail-smtpd")
    d = Dialogue(port)
    assert d.read_reply().startswith("220 ")
    d.cmd("EHLO client.test")
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("RCPT TO:<joe@example.test>") == "250 ok"
    assert d.cmd("DATAZ") == "354 go ahead punk, make my day"
    d.send(zlib.compress(b"Subject: zipped\r\n\r\n" + b"compressible line\r\n" * 200 + b".\r\n"))
    assert d.read_reply().startswith("250 ok ")
    assert d.cmd("QUIT").startswith("221 ")
    mess = os.path.join(qmailhome, "queue", "mess")
    bodies = [open(os.path.join(mess, s, n), "rb").read() for s in os.listdir(mess) for n in os.listdir(os.path.join(mess, s))]
    [zipped] = [b for b in bodies if b"Subject: zipped" in b]
    assert b"with compressed SMTP\n" in zipped and zipped.endswith(b"compressible line\n" * 200)


def netstring(b):
    return b"%d:%s," % (len(b), b)


def read_netstring(sock):
    data = b""
    while b":" not in data:
        data += sock.recv(1)
    n, rest = data.split(b":", 1)
    payload = rest
    while len(payload) < int(n) + 1:
        payload += sock.recv(int(n) + 1 - len(payload))
    return payload[:-1]


def test_qmtp_server(tcpserver, qmailhome):
    port = tcpserver("qmail-qmtpd")
    before = queued(qmailhome)
    s = socket.create_connection(("127.0.0.1", port), 10)
    rcpts = netstring(b"joe@example.test") + netstring(b"victim@elsewhere.test") + netstring(b"x" * 1000 + b"@example.test")
    s.sendall(netstring(b"\nSubject: qmtp\n\nbody\n") + netstring(b"a@remote.test") + netstring(rcpts))
    replies = [read_netstring(s) for _ in range(3)]
    assert replies[0].startswith(b"Kok ") and b" qp " in replies[0]
    assert replies[1] == b"Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    assert replies[2] == b"Dsorry, I can't handle that recipient (#5.1.3)"
    s.sendall(netstring(b"\rSubject: crlf\r\n\r\nbody\r\n") + netstring(b"b@remote.test") + netstring(netstring(b"joe@example.test")))
    assert read_netstring(s).startswith(b"Kok ")
    s.close()
    assert queued(qmailhome) == before + 2
