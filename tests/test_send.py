"""qmail-send's first delivery straight from todo/ (engine/send.py, engine/todo.py), through the real master.

A message with only local recipients is delivered from its envelope in todo/:
no info/ or local/ file exists unless a delivery defers or fails, and then
they are written with the recipients already delivered marked done.
"""

import os
import re
import signal
import time

from engine import hier
from support.users import delivered
from test_delivery import enqueue, mailhost, wait_count  # noqa: F401  (mailhost: the fixture)


def qmail_file(home, users, user, ext, text):
    with open(os.path.join(os.path.dirname(users[user]), f".qmail-{ext}"), "w") as f:
        f.write(text)


def gate(tmp_path, name):
    """A program line that waits until the file `name` exists, then delivers on."""
    flag = tmp_path / name
    return flag, f"|while [ ! -e {flag} ]; do sleep 0.05; done\n./Maildir/\n"


def queue_path(home, kind, msgid):
    return hier.queue_file(os.path.join(home, "queue"), kind, msgid)


def wait_started(m, msgid, n=1):
    m.wait_for(lambda: m.log().count(f": msg {msgid} to local") >= n, 30, f"delivery of {msgid} started")


def start_held(mailhost, qmailhome, tmp_path):
    """The master started and one message to bob-slow being delivered, held until the flag file exists."""
    m, users = mailhost
    flag, line = gate(tmp_path, "go")
    qmail_file(qmailhome, users, "bob", "slow", line)
    m.start()
    msgid = enqueue(qmailhome, ["bob-slow@example.test"])
    wait_started(m, msgid)
    return m, users, flag, msgid


def test_a_local_message_is_delivered_from_todo_without_info_or_local(mailhost, qmailhome, tmp_path):
    m, users, flag, msgid = start_held(mailhost, qmailhome, tmp_path)
    assert os.path.exists(queue_path(qmailhome, "todo", msgid)), "todo/ is the durable record meanwhile"
    assert os.path.exists(queue_path(qmailhome, "mess", msgid))
    for kind in ("info", "local", "remote"):
        assert not os.path.exists(queue_path(qmailhome, kind, msgid)), f"{kind}/ was written"
    flag.touch()
    wait_count(m, users["bob"], 1)
    m.wait_for(lambda: not os.path.exists(queue_path(qmailhome, "mess", msgid)), 30, "message removed")
    assert not os.path.exists(queue_path(qmailhome, "todo", msgid))
    assert f"end msg {msgid}" in m.log()


def test_a_deferral_writes_info_and_local_with_delivered_recipients_marked(mailhost, qmailhome, tmp_path):
    m, users = mailhost
    flag = tmp_path / "ok"
    qmail_file(qmailhome, users, "carol", "soft", f"|[ -e {flag} ] || exit 111\n./Maildir/\n")
    m.start()
    msgid = enqueue(qmailhome, ["alice@example.test", "carol-soft@example.test"])
    m.wait_for(lambda: ": deferral: " in m.log(), 30, "carol's deferral")
    wait_count(m, users["alice"], 1)
    local = queue_path(qmailhome, "local", msgid)
    m.wait_for(lambda: not os.path.exists(queue_path(qmailhome, "todo", msgid)), 30, "todo/ removed")
    m.wait_for(lambda: open(local, "rb").read()[:1] == b"D", 30, "alice marked delivered")
    with open(local, "rb") as f:
        assert f.read() == b"Dalice@example.test\0Tcarol-soft@example.test\0"
    with open(queue_path(qmailhome, "info", msgid), "rb") as f:
        assert f.read() == b"Fsender@example.test\0"
    mess_mtime = os.stat(queue_path(qmailhome, "mess", msgid)).st_mtime
    assert abs(os.stat(queue_path(qmailhome, "info", msgid)).st_mtime - mess_mtime) < 1, \
        "info/'s mtime is the message's birth, which the retry schedule counts from"
    flag.touch()
    m.signal(signal.SIGALRM)
    wait_count(m, users["carol"], 1)
    m.wait_for(lambda: not os.path.exists(queue_path(qmailhome, "mess", msgid)), 30, "message removed")
    assert len(delivered(users["alice"])) == 1, "alice's delivery is not repeated"
    for kind in ("info", "local", "todo"):
        assert not os.path.exists(queue_path(qmailhome, kind, msgid))


def test_a_restarted_qmail_todo_does_not_hand_over_a_message_twice(mailhost, qmailhome, tmp_path):
    m, users, flag, msgid = start_held(mailhost, qmailhome, tmp_path)
    todo = m.named("qmail-todo")
    assert len(todo) == 1
    todo[0].kill()
    m.wait_for(lambda: any(p.pid != todo[0].pid for p in m.named("qmail-todo")), 30, "qmail-todo restarted")
    enqueue(qmailhome, ["alice@example.test"])  # a trigger: the new qmail-todo scans todo/
    wait_count(m, users["alice"], 1)
    flag.touch()
    wait_count(m, users["bob"], 1)
    m.wait_for(lambda: not os.path.exists(queue_path(qmailhome, "mess", msgid)), 30, "message removed")
    time.sleep(0.5)
    assert len(delivered(users["bob"])) == 1
    assert m.log().count(f": msg {msgid} to local") == 1, "one delivery started for the message"


def test_message_ids_reused_from_inodes_are_new_messages(mailhost, qmailhome):
    """mess/ names are inode numbers: an id handed over before comes back with the next message."""
    m, users = mailhost
    m.start()
    ids = []
    for i in range(30):
        ids.append(enqueue(qmailhome, ["alice@example.test"], body=b"Subject: %d\n\n%d\n" % (i, i)))
        wait_count(m, users["alice"], i + 1, timeout=30)
        m.wait_for(lambda: not os.path.exists(queue_path(qmailhome, "mess", ids[-1])), 30, "message removed")
    assert len(set(ids)) < len(ids), "the file system reused no inode: this test proves nothing here"
    assert len(re.findall(r"^end msg ", m.log(), re.M)) == 30


def test_a_delivery_finished_during_a_stop_is_not_repeated(mailhost, qmailhome, tmp_path):
    """Every role gets SIGTERM at once; qmail-send's requests to qmail-clean for a delivery that
    ends after that (todo/ and mess/ of a message done) are still carried out."""
    m, users, flag, msgid = start_held(mailhost, qmailhome, tmp_path)
    m.signal(signal.SIGTERM)
    m.wait_for(lambda: "status: exiting" in m.log(), 10, "the stop began")
    time.sleep(0.5)  # the other roles have their TERM by now
    flag.touch()
    m.proc.wait(30)
    m.stop()
    assert len(delivered(users["bob"])) == 1
    for kind in ("todo", "mess"):
        assert not os.path.exists(queue_path(qmailhome, kind, msgid)), f"{kind}/ left: delivered again at start"
    m.start()
    time.sleep(1)
    assert len(delivered(users["bob"])) == 1
