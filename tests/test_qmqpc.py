"""qmail-qmqpc (spec 1.1, 5.1) against real servers on 127.0.0.1.

The server is qmail-qmqpd as the master's QMQP listener (tests/support/
master.py), delivering to a Maildir; the client is the qmail-qmqpc program
with qmail-queue's fd 0 / fd 1 interface, its send() function, and
qmail-inject / sendmail with QMAILQUEUE=qmail-qmqpc (mini-qmail).
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from engine import qmqpc
from support.dnsserver import DnsServer
from support.master import Master
from support.ports import free_port
from support.users import delivered, make_users

BIN = os.path.dirname(sys.executable)
QMQPC = os.path.join(BIN, "qmail-qmqpc")


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def failing_queue(tmp_path, code):
    script = tmp_path / f"queue{code}"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\nexit {code}\n")
    script.chmod(0o755)
    return script


def run_qmqpc(home, args=(), message=b"Subject: t\n\nhi\n", envelope=b"Fa@remote.test\0Talice@example.test\0\0",
              port=None, env=None):
    """(exit code, stderr) of one qmail-qmqpc run with the message on fd 0 and the envelope on fd 1."""
    msg_r, msg_w = os.pipe()
    env_r, env_w = os.pipe()
    full = {"PATH": os.environ["PATH"], "QMAILHOME": home, **(env or {})}
    if port:
        full["QMAIL_PORT_QMQP"] = str(port)
    p = subprocess.Popen([QMQPC, *args], stdin=msg_r, stdout=env_r, stderr=subprocess.PIPE, env=full)
    os.close(msg_r)
    os.close(env_r)
    for fd, data in ((msg_w, message), (env_w, envelope)):
        try:
            os.write(fd, data)
        except BrokenPipeError:
            pass
        os.close(fd)
    _, err = p.communicate(timeout=60)
    return p.returncode, err.decode()


def wait_delivered(maildir, count=1, timeout=30):
    deadline = time.monotonic() + timeout
    while len(delivered(maildir)) < count:
        assert time.monotonic() < deadline, f"{count} message(s) not delivered to {maildir}"
        time.sleep(0.05)
    return [open(p, "rb").read() for p in sorted(delivered(maildir), key=os.path.getmtime)]


@pytest.fixture
def server(qmailhome, tmp_path):
    """The master with a QMQP listener on 127.0.0.1; qmqprules give 127.0.0.2 a queue that answers
    31 (D) and 127.0.0.3 one that answers 71 (Z), and deny 127.0.0.5."""
    maildirs = make_users(qmailhome, str(tmp_path / "home"), ["alice"])
    port = free_port()
    write(qmailhome, "qmqplisten", f"127.0.0.1:{port}\n")
    write(qmailhome, "qmqpworkers", "1\n")
    write(qmailhome, "qmqprules", f'127.0.0.2:allow,QMAILQUEUE="{failing_queue(tmp_path, 31)}"\n'
                                  f'127.0.0.3:allow,QMAILQUEUE="{failing_queue(tmp_path, 71)}"\n'
                                  '127.0.0.5:deny\n:allow\n')
    m = Master(qmailhome).start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "no QMQP listener"
            time.sleep(0.05)
    assert "qmail-qmqpd listening on 127.0.0.1:" in m.log()
    yield port, maildirs["alice"]
    m.stop()


def test_plain_and_compressed_through_the_master_to_a_maildir(server, qmailhome):
    port, maildir = server
    assert run_qmqpc(qmailhome, ["127.0.0.1"], b"Subject: plain\n\nplain body\n", port=port) == (0, "")
    body = b"Subject: zipped\n\n" + b"compressible text\n" * 300
    assert run_qmqpc(qmailhome, ["127.0.0.1"], body, port=port, env={"QMQP_COMPRESS": "1"}) == (0, "")
    plain, zipped = wait_delivered(maildir, 2)
    me = open(os.path.join(qmailhome, "control", "me"), "rb").read().strip()
    assert re.search(rb"\nReceived: from \S+ \(\[127\.0\.0\.1\]\)\n          by " + re.escape(me) +
                     rb" \(qmail-ldap-1\.03\) with QMQP; \d", plain)
    assert plain.endswith(b"\nplain body\n")
    assert b" with compressed QMQP; " in zipped and zipped.endswith(body.split(b"\n\n", 1)[1])
    assert b"Return-Path: <a@remote.test>" in plain


def test_qmqpservers_in_order_and_send_function(server, qmailhome):
    """127.0.0.4 refuses (nothing listens there), 127.0.0.1 takes it; control/qmqpcompress=1 compresses."""
    port, maildir = server
    write(qmailhome, "qmqpservers", "not-an-ip\n127.0.0.4\n127.0.0.1\n")
    write(qmailhome, "qmqpcompress", "1\n")
    os.environ["QMAIL_PORT_QMQP"] = str(port)
    try:
        code, text = qmqpc.send(None, b"Subject: f\n\nfunction\n", "a@remote.test", ["alice@example.test"],
                                home=qmailhome)
    finally:
        del os.environ["QMAIL_PORT_QMQP"]
    assert code == 0 and text.startswith("Kok ") and " DDC saved " in text
    [mail] = wait_delivered(maildir)
    assert b" with compressed QMQP; " in mail and mail.endswith(b"\nfunction\n")


@pytest.mark.parametrize("source, code, text", [
    ("127.0.0.2", 31, "mail server permanently rejected message (#5.3.0)"),
    ("127.0.0.3", 71, "mail server temporarily rejected message (#4.3.0)"),
    ("127.0.0.5", 74, "connection closed without an answer"),  # qmqprules deny
])
def test_d_and_z_answers(server, qmailhome, source, code, text):
    """control/qmqpcip picks the source address, which the server's qmqprules give a failing queue."""
    port, _ = server
    write(qmailhome, "qmqpcip", source + "\n")
    assert run_qmqpc(qmailhome, ["127.0.0.1"], port=port) == (code, f"qmail-qmqpc: {text}\n")


def test_mini_qmail_inject_and_sendmail(server, qmailhome):
    """QMAILQUEUE=qmail-qmqpc: qmail-inject and sendmail hand their messages to the QMQP server."""
    port, maildir = server
    write(qmailhome, "qmqpservers", "127.0.0.1\n")
    env = {"PATH": os.environ["PATH"], "QMAILHOME": qmailhome, "QMAILQUEUE": QMQPC, "QMAIL_PORT_QMQP": str(port),
           "USER": "joe"}
    inject = subprocess.run([os.path.join(BIN, "qmail-inject"), "alice@example.test"], env=env, timeout=60,
                            input=b"Subject: injected\n\nvia qmail-inject\n", capture_output=True)
    assert inject.returncode == 0, inject.stderr
    sendmail = subprocess.run([os.path.join(BIN, "sendmail"), "-f", "b@remote.test", "alice@example.test"], env=env,
                              input=b"Subject: sm\n\nvia sendmail\n", capture_output=True, timeout=60)
    assert sendmail.returncode == 0, sendmail.stderr
    mails = wait_delivered(maildir, 2)
    assert any(b"via qmail-inject" in m and b" with QMQP; " in m for m in mails)
    assert any(b"via sendmail" in m and b"Return-Path: <b@remote.test>" in m for m in mails)


def test_host_name_from_dns(qmailhome):
    """A host argument is looked up (first A record); no such host is permanent (31)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got = []

    def serve():
        conn, _ = listener.accept()
        data = b""
        while not data.endswith(b",,"):
            data += conn.recv(4096)
        got.append(data)
        conn.sendall(b"11:Kok 1 qp 22,")
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    dns = DnsServer(hosts=[("mailhost.test", "127.0.0.1")]).start()
    try:
        env = {"QMAIL_DNS_SERVER": dns.address}
        port = listener.getsockname()[1]
        assert run_qmqpc(qmailhome, ["mailhost.test"], b"x\n", port=port, env=env) == (0, "")
        assert got == [b"44:2:x\n,13:a@remote.test,18:alice@example.test,,"]
        code, err = run_qmqpc(qmailhome, ["nohost.test"], port=port, env=env)
        assert code == 31 and "no A record for nohost.test" in err
    finally:
        dns.stop()
        listener.close()


def test_refused_is_73(qmailhome):
    port = free_port()
    assert run_qmqpc(qmailhome, ["127.0.0.1"], port=port)[0] == 73
    write(qmailhome, "qmqpservers", "127.0.0.1\n")
    assert run_qmqpc(qmailhome, port=port)[0] == 73


def test_connect_timeout_is_72(qmailhome):
    """A listener whose accept queue is full drops further SYNs: the connect times out (timeoutconnect 1)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    write(qmailhome, "timeoutconnect", "1\n")
    try:
        t0 = time.monotonic()
        code, _ = run_qmqpc(qmailhome, ["127.0.0.1"], port=port)
        assert code == 72 and time.monotonic() - t0 < 10
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_server_closing_without_an_answer_is_74(qmailhome):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        assert run_qmqpc(qmailhome, ["127.0.0.1"], port=listener.getsockname()[1])[0] == 74
    finally:
        listener.close()


@pytest.mark.parametrize("setup, args, envelope, code", [
    ({}, [], b"Fa\0Tb\0\0", 55),                                        # no control/qmqpservers
    ({"qmqpservers": "\n"}, [], b"Fa\0Tb\0\0", 55),                    # an empty one
    ({"qmqpservers": "mail.example\n"}, [], b"Fa\0Tb\0\0", 55),        # no IPv4 address in it
    ({"qmqpcip": "nowhere\n"}, ["127.0.0.1"], b"Fa\0Tb\0\0", 55),     # source address not an IP
    ({"timeoutconnect": "99999999999\n"}, ["127.0.0.1"], b"Fa\0Tb\0\0", 55),
    ({}, ["127.0.0.1"], b"Xa\0Tb\0\0", 91),                             # envelope without F
    ({}, ["127.0.0.1"], b"Fa\0Tb\0", 91),                               # not terminated
    ({}, ["127.0.0.1"], b"Fa\0Yb\0\0", 91),                             # a recipient without T
])
def test_control_and_format_errors(qmailhome, setup, args, envelope, code):
    for name, text in setup.items():
        write(qmailhome, name, text)
    assert run_qmqpc(qmailhome, args, envelope=envelope, port=free_port())[0] == code


def test_missing_home_is_61(tmp_path):
    assert run_qmqpc(str(tmp_path / "nowhere"), ["127.0.0.1"])[0] == 61


def test_request_bytes():
    assert b"".join(qmqpc.request_pieces(b"hello\n", b"a", [b"b", b"c"])) == b"21:6:hello\n,1:a,1:b,1:c,,"
    assert qmqpc.parse_envelope(b"F\0\0") == (b"", [])
