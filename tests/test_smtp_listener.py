"""The SMTP listener as tcpserver: IPv6, per-client limit, idle timeout, worker crash, queue failure."""

import os
import signal
import socket
import time

import pytest

from engine import cdb
from support.master import Master, tcp_connections
from support.ports import free_port
from support.smtpclient import Dialogue
from support.users import make_users


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def listener(qmailhome, tmp_path):
    make_users(qmailhome, str(tmp_path / "home"), ["alice"])
    port, port6 = free_port(), free_port()
    listen = f"127.0.0.1:{port}\n" + (f"[::1]:{port6}\n" if has_ipv6_loopback() else "")
    failing = tmp_path / "failing-queue"
    failing.write_text("#!/bin/sh\ncat >/dev/null\nexit 53\n")
    failing.chmod(0o755)
    write(qmailhome, "smtplisten", listen)
    write(qmailhome, "smtpworkers", "2\n")
    write(qmailhome, "smtpperip", "2\n")
    write(qmailhome, "timeoutsmtpd", "2\n")
    write(qmailhome, "smtprules", f'127.0.0.2:allow,QMAILQUEUE="{failing}"\n'
                                  '127.0.0.6:allow,RCPTCHECK=""\n127.0.0.7:allow,RCPTCHECK="",LDAPSOFTOK=""\n'
                                  '127.0.0.8:allow,SMTPAUTH=""\n:allow\n')
    write(qmailhome, "ldapserver", "127.0.0.1:1\n")  # nothing listens there: the directory is down
    write(qmailhome, "ldaptimeout", "1\n")
    write(qmailhome, "rcpthosts", "example.test\n")
    cdb.create(os.path.join(qmailhome, "control", "morercpthosts.cdb"), [(b"more.test", b"")])
    m = Master(qmailhome).start()
    for _ in range(200):
        try:  # from an address of its own, so the probe never counts against 127.0.0.1's limit
            socket.create_connection(("127.0.0.1", port), 1, source_address=("127.0.0.9", 0)).close()
            break
        except OSError:
            time.sleep(0.05)
    yield m, port, port6
    m.stop()


def connect(port, host="127.0.0.1", source=None):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    s.settimeout(10)
    d = Dialogue.__new__(Dialogue)
    d.sock, d.buf = s, b""
    return d


def test_ipv6_and_morercpthosts(listener):
    m, port, port6 = listener
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    d = connect(port6, "::1")
    assert d.read_reply().startswith("220 ")
    d.cmd("MAIL FROM:<a@remote.test>")
    assert d.cmd("RCPT TO:<x@more.test>") == "250 ok", "morercpthosts.cdb"
    assert d.cmd("RCPT TO:<x@less.test>").startswith("553 sorry, relaying denied from your location [::1]")


def test_per_client_limit_and_idle_timeout(listener):
    m, port, _ = listener
    a, b = connect(port), connect(port)
    assert a.read_reply().startswith("220 ") and b.read_reply().startswith("220 ")
    c = connect(port)
    assert c.closed(), "a third connection from 127.0.0.1 is dropped (smtpperip 2)"
    other = connect(port, source="127.0.0.3")
    assert other.read_reply().startswith("220 "), "other clients are not affected"
    t0 = time.monotonic()
    assert a.read_reply() == "451 timeout (#4.4.2)"
    assert 1.5 < time.monotonic() - t0 < 5 and a.closed()
    b.close()
    other.close()
    deadline = time.monotonic() + 10
    while True:
        d = connect(port)
        greeting = d.read_reply()
        if greeting.startswith("220 ") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert greeting.startswith("220 "), "slots are given back"


def test_queue_failure_is_451_and_leaves_nothing(listener, qmailhome):
    m, port, _ = listener
    d = connect(port, source="127.0.0.2")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    assert d.cmd("Subject: x\r\n\r\ny\r\n.") == "451 qq write error or disk full (#4.3.0)"
    todo = os.path.join(qmailhome, "queue", "todo")
    assert not any(os.listdir(os.path.join(todo, s)) for s in os.listdir(todo))


def test_killed_worker_is_replaced_and_other_sessions_go_on(listener):
    m, port, _ = listener
    d = connect(port, source="127.0.0.4")
    assert d.read_reply().startswith("220 ")
    workers = m.listeners(port)
    assert len(workers) == 2
    mine = [p for p in workers if any(c.raddr and c.raddr.ip == "127.0.0.4" for c in tcp_connections(p))]
    victim = next(p for p in workers if p not in mine)
    victim.send_signal(signal.SIGKILL)
    assert d.cmd("NOOP") == "250 ok", "the session on the other worker carries on"
    m.wait_for(lambda: len(m.listeners(port)) == 2, 15, "the killed worker was replaced")
    e = connect(port, source="127.0.0.5")
    assert e.read_reply().startswith("220 ")


def test_directory_down_rcptcheck_is_temporary_unless_ldapsoftok(listener):
    m, port, _ = listener
    d = connect(port, source="127.0.0.6")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    assert d.cmd("RCPT TO:<alice@example.test>") == "451 temporary problem verifying the address (#4.3.0)"
    d = connect(port, source="127.0.0.7")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    assert d.cmd("RCPT TO:<alice@example.test>") == "250 ok"
    d = connect(port, source="127.0.0.8")
    d.read_reply()
    d.cmd("EHLO x")
    assert d.cmd("AUTH PLAIN c21hbGw=") == "501 authentication exchange failed", "not three NUL-separated fields"
    assert d.cmd("AUTH PLAIN !!!") == "501 authentication exchange failed", "not base64"
    assert d.cmd("AUTH PLAIN AHVzZXIAcGFzcw==") == "454 temporary authentication failure (#4.3.0)", "directory down"


def test_long_header_line_and_starttls_without_cert(listener):
    m, port, _ = listener
    d = connect(port)
    d.read_reply()
    ehlo = d.cmd("EHLO x")
    assert "STARTTLS" not in ehlo and "DATAZ" not in ehlo, "no certificate, no control/smtpdataz"
    assert d.cmd("STARTTLS") == "502 unimplemented (#5.5.1)"
    assert d.cmd("DATAZ") == "502 unimplemented (#5.5.1)"
    d.cmd("MAIL FROM:<a@remote.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    d.send(b"X-Long: " + b"a" * 10000 + b"\r\n\r\nbody\r\n.\r\n")
    assert d.raw(1.0) == b"500 Text line too long."
    assert d.closed()
