"""qmail-qread and qmail-qstat, run as programs against a real queue (qmail-qread.c's exact output)."""

import os
import shutil
import subprocess
import sys

from engine import hier, queue

JAN_2 = 1704153600    # 2 Jan 2024 00:00:00 UTC: a one-digit day, as date822fmt writes it
NOV_14 = 1700000000   # 14 Nov 2023 22:13:20 UTC


def run(module, home):
    p = subprocess.run([sys.executable, "-m", module], capture_output=True,
                       env={**os.environ, "QMAILHOME": home}, timeout=60)
    return p.returncode, p.stdout, p.stderr


def preprocess(home, body, sender, local=(), remote=(), birth=NOV_14, bounce=False):
    """Queue a message and write the info/local/remote files qmail-todo would (records as given)."""
    q = os.path.join(home, "queue")
    msgid = queue.enqueue(body, sender, [b"x@y"], home=home)
    os.unlink(hier.queue_file(q, "todo", msgid))
    for kind, records in (("local", local), ("remote", remote)):
        if records:
            with open(hier.queue_file(q, kind, msgid), "wb") as f:
                f.write(b"".join(r + b"\0" for r in records))
    with open(hier.queue_file(q, "info", msgid), "wb") as f:
        f.write(b"F" + sender + b"\0")
    os.utime(hier.queue_file(q, "info", msgid), (birth, birth))
    if bounce:
        with open(hier.queue_file(q, "bounce", msgid), "wb") as f:
            f.write(b"<x@y>:\nno such user\n\n")
    return msgid, os.path.getsize(hier.queue_file(q, "mess", msgid))


def test_empty_queue(qmailhome):
    assert run("engine.qread", qmailhome) == (0, b"", b"")
    assert run("engine.qstat", qmailhome) == \
        (0, b"messages in queue: 0\nmessages in queue but not yet preprocessed: 0\n", b"")


def test_qstat_counts_mess_and_todo(qmailhome):
    for _ in range(30):  # spread over the split subdirectories
        queue.enqueue(b"x\n", b"a@b", [b"c@d"], home=qmailhome)
    preprocess(qmailhome, b"y\n", b"s@x", remote=[b"Tr@z"])
    assert run("engine.qstat", qmailhome) == \
        (0, b"messages in queue: 31\nmessages in queue but not yet preprocessed: 30\n", b"")
    assert run("engine.qread", qmailhome)[1].count(b"#") == 1  # todo/ messages are not listed


def test_qread_lists_message_and_recipients_exactly(qmailhome):
    msgid, size = preprocess(qmailhome, b"Subject: x\n\nhello\n", b"sender@example.org",
                             local=[b"Tjoe@example.org", b"Dann@example.org"],
                             remote=[b"Tr@example.net", b"Ddone@example.net"])
    assert run("engine.qread", qmailhome) == (0, (
        f"14 Nov 2023 22:13:20 GMT  #{msgid}  {size}  <sender@example.org> \n"
        "\tlocal\tjoe@example.org\n  done\tlocal\tann@example.org\n"
        "\tremote\tr@example.net\n  done\tremote\tdone@example.net\n").encode(), b"")


def test_qread_bouncing_empty_sender_and_unprintable_bytes(qmailhome):
    msgid, size = preprocess(qmailhome, b"x\n", b"", remote=[b"Tr\x01\xe9@example.net", b"Xignored"],
                             birth=JAN_2, bounce=True)
    assert run("engine.qread", qmailhome)[1] == (
        f"2 Jan 2024 00:00:00 GMT  #{msgid}  {size}  <>  bouncing\n"
        "\tremote\tr__@example.net\n").encode()
    preprocess(qmailhome, b"x\n", b"odd\tsender@x", remote=[b"Tr@z"])
    assert b"  <odd_sender@x> \n" in run("engine.qread", qmailhome)[1]


def test_qread_warns_and_goes_on(qmailhome):
    q = os.path.join(qmailhome, "queue")
    lost, _ = preprocess(qmailhome, b"x\n", b"a@b", remote=[b"Tr@z"])
    odd, size = preprocess(qmailhome, b"x\n", b"c@d", remote=[b"Tr@z"])
    os.unlink(hier.queue_file(q, "mess", lost))  # after the second enqueue, which would reuse its inode
    os.mkdir(hier.queue_file(q, "local", odd))  # local/ that cannot be read
    code, out, err = run("engine.qread", qmailhome)
    assert (code, err) == (0, b"")
    assert f"warning: trouble with #{lost}: file does not exist\n".encode() in out
    assert (f"14 Nov 2023 22:13:20 GMT  #{odd}  {size}  <c@d> \n"
            f"warning: trouble with #{odd}: is a directory\n"
            "\tremote\tr@z\n").encode() in out


def test_fatal_errors_exit_111(qmailhome, tmp_path):
    assert run("engine.qread", str(tmp_path / "nowhere")) == \
        (111, b"fatal: unable to chdir: file does not exist\n", b"")
    shutil.rmtree(os.path.join(qmailhome, "queue", "info", "5"))
    assert run("engine.qread", qmailhome) == (111, b"fatal: unable to opendir info/5: file does not exist\n", b"")
    shutil.rmtree(os.path.join(qmailhome, "queue", "todo", "7"))
    code, out, err = run("engine.qstat", qmailhome)
    assert (code, out) == (111, b"")
    assert err == f"qmail-qstat: fatal: unable to read {qmailhome}/queue/todo/7: file does not exist\n".encode()
