"""End to end: the real master on a temporary qmail home delivers injected mail locally and remotely."""

import os
import shutil
import signal
import tempfile
import time

import pytest

from engine import queue
from support.master import Master
from support.users import delivered, make_users


@pytest.fixture
def mailhost(qmailhome, tmp_path):
    users = make_users(qmailhome, str(tmp_path / "home"), ["alice", "bob", "carol"])
    with open(os.path.join(qmailhome, "control", "concurrencylocal"), "w") as f:
        f.write("4\n")
    m = Master(qmailhome, env={"PYQMAIL_RETRY_SCALE": "100"})
    yield m, users
    m.stop()


def enqueue(home, rcpts, body=b"Subject: test\n\nhello\n", sender=b"sender@example.test"):
    return queue.enqueue(body, sender, [r.encode() for r in rcpts], home=home)


def wait_count(m, maildir, n, timeout=60):
    m.wait_for(lambda: len(delivered(maildir)) >= n, timeout, f"{n} messages in {maildir}")


def test_thousand_messages_land_with_return_path_and_delivered_to(mailhost, qmailhome):
    m, users = mailhost
    m.start()
    names = ["alice", "bob", "carol"]
    for i in range(1000):
        enqueue(qmailhome, [f"{names[i % 3]}@example.test"], body=b"Subject: %d\n\nbody %d\n" % (i, i))
    for name in names:
        wait_count(m, users[name], 334 if name == "alice" else 333, timeout=120)
    sample = delivered(users["bob"])[0]
    with open(sample, "rb") as f:
        head = f.read(200)
    assert head.startswith(b"Return-Path: <sender@example.test>\nDelivered-To: bob@example.test\n")
    assert ",S=" in os.path.basename(sample)
    m.wait_for(lambda: not os.listdir(os.path.join(qmailhome, "queue", "info", "0"))
               and all(not os.listdir(os.path.join(qmailhome, "queue", "mess", str(i))) for i in range(23)),
               60, "queue emptied")
    log = m.log()
    assert "new msg " in log and "info msg " in log and "end msg " in log
    assert "delivery 1: success: did_1+0+0/" in log or ": success: did_1+0+0/" in log


def test_program_deferral_is_retried_then_bounce_is_exact(mailhost, qmailhome, tmp_path):
    m, users = mailhost
    flag = tmp_path / "fail-count"
    uhome = os.path.dirname(users["carol"])
    with open(os.path.join(uhome, ".qmail-soft"), "w") as f:
        f.write(f"|n=$(cat {flag} 2>/dev/null || echo 0); echo $((n+1)) > {flag}; "
                f"[ $n -ge 2 ] && exit 0; exit 111\n./Maildir/\n")
    with open(os.path.join(uhome, ".qmail-hard"), "w") as f:
        f.write("|echo 'no such list here'; exit 100\n")
    m.start()
    enqueue(qmailhome, ["carol-soft@example.test"])
    wait_count(m, users["carol"], 1, timeout=60)
    assert int(flag.read_text()) == 3, "two deferrals, then success on the third attempt"
    assert m.log().count(": deferral: ") >= 2
    enqueue(qmailhome, ["carol-hard@example.test"], sender=b"alice@example.test")
    wait_count(m, users["alice"], 1)
    with open(delivered(users["alice"])[0], "rb") as f:
        text = f.read().decode()
    assert "From: MAILER-DAEMON@testhost.example.org\n" in text
    assert "Subject: failure notice\n" in text
    assert ("Hi. This is the qmail-send program at testhost.example.org.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            "<carol-hard@example.test>:\nno such list here\n\n"
            "--- Below this line is a copy of the message.\n\n"
            "Return-Path: <alice@example.test>\n") in text
    assert text.startswith("Return-Path: <>\nDelivered-To: alice@example.test\n")


def test_sighup_changes_local_concurrency(mailhost, qmailhome):
    m, _ = mailhost
    m.start()
    m.wait_for(lambda: len(m.children()) == 4 + 4, 15, "qmail-send, todo, clean, rspawn and 4 local workers")
    before = len(m.children())
    with open(os.path.join(qmailhome, "control", "concurrencylocal"), "w") as f:
        f.write("7\n")
    m.signal(signal.SIGHUP)
    m.wait_for(lambda: len(m.children()) == before + 3, 15, "three more local workers")
    with open(os.path.join(qmailhome, "control", "concurrencylocal"), "w") as f:
        f.write("2\n")
    m.signal(signal.SIGHUP)
    m.wait_for(lambda: len(m.children()) == 4 + 2, 15, "five local workers retired")


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def test_remote_delivery_through_smtproutes(mailhost, qmailhome, tmp_path):
    """Success to an SMTP sink; a refused route defers; an expired message bounces."""
    from support.sink import SmtpSink, free_tcp_port
    m, users = mailhost
    dump = tempfile.mkdtemp(prefix="sink-", dir="/tmp")  # smtp-sink writes as nobody: not under pytest's 0700 tmp
    os.chmod(dump, 0o777)
    sink = SmtpSink(host="127.0.0.2", dumpdir=dump).start()
    dead_port = free_tcp_port("127.0.0.3")
    write_control(qmailhome, "smtproutes", f"sink.test:127.0.0.2:{sink.port}\ndead.test:127.0.0.3:{dead_port}\n")
    try:
        m.start()
        enqueue(qmailhome, ["someone@sink.test"], body=b"Subject: out\n\nremote body\n")
        m.wait_for(lambda: os.listdir(dump), 30, "message at the sink")
        m.wait_for(lambda: ": success: " in m.log() and "remote" in m.log(), 10)
        dump = sink.dumps()[0]
        assert b"remote body" in dump and b"someone@sink.test" in dump
        enqueue(qmailhome, ["nobody@dead.test"], sender=b"alice@example.test")
        m.wait_for(lambda: "deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_connection" in m.log(), 30, "deferral")
        assert "delivery" in m.log() and ": deferral: " in m.log()
        assert not delivered(users["alice"]), "a deferral must not bounce"
    finally:
        m.stop()
        sink.stop()
        shutil.rmtree(dump, ignore_errors=True)
    write_control(qmailhome, "queuelifetime", "1\n")
    time.sleep(1.1)
    m2 = Master(qmailhome, env={"PYQMAIL_RETRY_SCALE": "100"}).start()
    try:
        m2.signal(signal.SIGALRM)
        wait_count(m2, users["alice"], 1, timeout=60)
        with open(delivered(users["alice"])[0], "rb") as f:
            text = f.read().decode()
        assert "<nobody@dead.test>:\n" in text
        assert "I'm not going to try again; this message has been in the queue too long." in text
    finally:
        m2.stop()


def test_forward_virtualdomain_and_loop(mailhost, qmailhome):
    m, users = mailhost
    write_control(qmailhome, "virtualdomains", "virt.test:bob\n")
    with open(os.path.join(qmailhome, "control", "locals"), "a") as f:
        f.write("other.test\n")
    bob_home = os.path.dirname(users["bob"])
    with open(os.path.join(bob_home, ".qmail-default"), "w") as f:
        f.write("./Maildir/\n")
    carol_home = os.path.dirname(users["carol"])
    with open(os.path.join(carol_home, ".qmail-fwd"), "w") as f:
        f.write("&alice@example.test\nbob-copy@example.test\n")
    with open(os.path.join(carol_home, ".qmail-loop"), "w") as f:
        f.write("&carol-loop@example.test\n")
    m.start()
    enqueue(qmailhome, ["anyone@virt.test"], body=b"Subject: virtual\n\nv\n")
    wait_count(m, users["bob"], 1)
    with open(delivered(users["bob"])[0], "rb") as f:
        assert b"Delivered-To: bob-anyone@virt.test\n" in f.read()
    enqueue(qmailhome, ["carol-fwd@example.test"], body=b"Subject: forwarded\n\nf\n")
    wait_count(m, users["alice"], 1)
    wait_count(m, users["bob"], 2)
    with open(delivered(users["alice"])[0], "rb") as f:
        text = f.read()
    assert b"Delivered-To: alice@example.test\n" in text
    assert b"Delivered-To: carol-fwd@example.test\nPrecedence: bulk\n" in text
    assert text.startswith(b"Return-Path: <sender@example.test>\n")
    enqueue(qmailhome, ["carol-loop@example.test"], body=b"Subject: loop\n\nl\n", sender=b"alice@example.test")
    wait_count(m, users["alice"], 2)
    assert "This message is looping: it already has my Delivered-To line. (#5.4.6)" in m.log() or any(
        b"This message is looping" in open(p, "rb").read() for p in delivered(users["alice"]))
