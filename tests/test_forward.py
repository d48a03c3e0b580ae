"""qmail-forward (qmail-forward.c) as a program: the real bin/qmail-qmqpc talking to a real
qmail-qmqpd (one process per connection on a loopback port, as tcpserver runs it) that queues into
a second qmail home. Exit codes and texts are qmail-forward.c's."""

import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from engine import forward
from support.ports import free_port
from support.qmailhome import make_qmailhome

ME = "testhost.example.org"
RCPT = "joe@cluster.test"
LOOPING = (b"qmail-forward: fatal: This message is looping: it already has my Cluster-Delivered-To line. "
           b"(#5.4.6)\n\n")


class QmqpServer:
    """qmail-qmqpd behind a loopback listener: each connection gets its own process, queueing into `home`."""

    def __init__(self, home):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.env = {"PATH": os.environ["PATH"], "QMAILHOME": home, "TCPREMOTEIP": "127.0.0.1",
                    "TCPLOCALHOST": "mailhost.cluster.test"}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                subprocess.run([sys.executable, "-m", "engine.qmqpd"], stdin=conn, stdout=conn,
                               stderr=subprocess.DEVNULL, env=self.env, timeout=30)

    def close(self):
        self.sock.close()
        self.thread.join(10)


@pytest.fixture
def mailhost(tmp_path):
    home = make_qmailhome(str(tmp_path / "mailhost"), me="mailhost.cluster.test")
    server = QmqpServer(home)
    yield home, server
    server.close()


def run_forward(home, message, args, port=None):
    """qmail-forward with `message` on a seekable fd 0 (a file, like the queued mess file)."""
    path = os.path.join(home, "message.tmp")
    with open(path, "wb") as f:
        f.write(message)
    env = {"PATH": os.environ["PATH"], "QMAILHOME": home}
    if port:
        env["QMAIL_PORT_QMQP"] = str(port)
    with open(path, "rb") as f:
        proc = subprocess.run([sys.executable, "-m", "engine.forward", *args], stdin=f,
                              capture_output=True, env=env, timeout=60)
    os.unlink(path)
    return proc.returncode, proc.stdout, proc.stderr


def queued(home):
    """[(message, todo envelope)] in a qmail home's queue."""
    out = []
    mess = os.path.join(home, "queue", "mess")
    for split in os.listdir(mess):
        for name in os.listdir(os.path.join(mess, split)):
            with open(os.path.join(mess, split, name), "rb") as f, \
                    open(os.path.join(home, "queue", "todo", split, name), "rb") as e:
                out.append((f.read(), e.read()))
    return out


def dtline(rcpt=RCPT, me=ME):
    return f"Delivered-To: CLUSTERHOST {me} {rcpt}\n".encode()


def test_forwards_with_the_clusterhost_line_through_qmqp(qmailhome, mailhost):
    home_b, server = mailhost
    body = b"Subject: cluster\nDelivered-To: " + RCPT.encode() + b"\n\nhello\n"
    code, out, err = run_forward(qmailhome, body, ["127.0.0.1", "alice@a.test", RCPT], server.port)
    assert code == 0 and out == b""
    m = re.fullmatch(rb"qmail-forward: ok (\d+) qp (\d+)\.\n", err)
    assert m, err
    [(message, envelope)] = queued(home_b)
    head, _, rest = message.partition(b"Delivered-To: CLUSTERHOST ")
    assert b"(qmail-ldap-1.03) with QMQP; " in head and head.startswith(b"Received: ")
    assert b"Delivered-To: CLUSTERHOST " + rest == dtline() + body
    assert envelope.endswith(b"Falice@a.test\0T" + RCPT.encode() + b"\0")


def test_a_message_carrying_my_line_in_its_header_is_looping(qmailhome):
    body = b"Received: x\n" + dtline() + b"Subject: again\n\nbody\n"
    code, out, err = run_forward(qmailhome, body, ["127.0.0.1", "alice@a.test", RCPT], free_port())
    assert (code, err) == (100, LOOPING)


def test_only_the_header_block_and_only_the_exact_line_count(qmailhome, mailhost):
    home_b, server = mailhost
    in_body = b"Subject: quoted\n\n" + dtline() + b"body\n"
    other_host = b"Subject: x\n" + dtline(me="other.example") + b"\nbody\n"
    other_rcpt = b"Subject: x\n" + dtline(rcpt="ann@cluster.test") + b"\nbody\n"
    for body in (in_body, other_host, other_rcpt):
        code, _, err = run_forward(qmailhome, body, ["127.0.0.1", "alice@a.test", RCPT], server.port)
        assert code == 0, err
    assert len(queued(home_b)) == 3


def test_a_newline_in_the_recipient_becomes_underscore():
    assert forward.dtline(b"me.test", b"a\nb@x") == b"Delivered-To: CLUSTERHOST me.test a_b@x\n"


def test_refused_connection_is_temporary(qmailhome):
    code, _, err = run_forward(qmailhome, b"Subject: x\n\nbody\n", ["127.0.0.1", "a@a.test", RCPT], free_port())
    assert (code, err) == (111, b"Unable to cluster-forward message: connection to mail server rejected (#4.4.1).\n")


def test_a_permanent_qmqp_answer_is_permanent(qmailhome, mailhost):
    _, server = mailhost
    long_sender = "s" * 1000 + "@a.test"  # qmail-qmqpd refuses addresses of 1000 bytes or more
    code, _, err = run_forward(qmailhome, b"Subject: x\n\nbody\n", ["127.0.0.1", long_sender, RCPT], server.port)
    assert (code, err) == (100, b"Unable to cluster-forward message: mail server permanently rejected message "
                                b"(#5.3.0).\n")


def test_missing_qmqpc_is_unable_to_exec_qq(qmailhome):
    qmqpc = os.path.join(qmailhome, "bin", "qmail-qmqpc")
    os.unlink(qmqpc)
    with open(qmqpc, "w") as f:  # there, but not executable: the child's execv fails
        f.write("not a program\n")
    os.chmod(qmqpc, 0o644)
    code, _, err = run_forward(qmailhome, b"Subject: x\n\nbody\n", ["127.0.0.1", "a@a.test", RCPT])
    assert (code, err) == (111, b"Unable to cluster-forward message: unable to exec qq (#4.3.0).\n")


def test_usage_and_missing_me(qmailhome):
    code, _, err = run_forward(qmailhome, b"x\n", ["127.0.0.1", "a@a.test"])
    assert (code, err) == (100, b"qmail-forward: usage: qmail-forward host sender recipient\n")
    os.unlink(os.path.join(qmailhome, "control", "me"))
    code, _, err = run_forward(qmailhome, b"x\n", ["127.0.0.1", "a@a.test", RCPT])
    assert (code, err) == (111, b"qmail-forward: fatal: Unable to read control/me: file does not exist\n")
