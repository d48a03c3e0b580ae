"""End to end: the real master on a temporary qmail home delivers injected mail locally and remotely."""

import os
import signal

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
