"""qmail-clean's requests and answers, and its removal of stale pid files."""

import os
import socket
import threading
import time

from engine import clean, hier, queue


def test_foop_todo_and_bad_requests(qmailhome):
    q = os.path.join(qmailhome, "queue")
    msgid = queue.enqueue(b"x\n", b"a@b", [b"c@d"], home=qmailhome)
    a, b = socket.socketpair()
    t = threading.Thread(target=clean.serve, args=(b, q), daemon=True)
    t.start()
    a.sendall(f"todo/{msgid}\0".encode() + b"bogus/1\0" + b"foop/x1\0" + f"foop/{msgid}\0".encode())
    got = b""
    while len(got) < 4:
        got += a.recv(4)
    assert got == b"+xx+"
    for kind in ("todo", "intd", "mess"):
        assert not os.path.exists(hier.queue_file(q, kind, msgid))
    a.close()
    t.join(5)


def test_stale_pid_files_go_after_36_hours(qmailhome):
    piddir = os.path.join(qmailhome, "queue", "pid")
    old, new = os.path.join(piddir, "1.1.1"), os.path.join(piddir, "2.2.2")
    for p in (old, new):
        open(p, "w").close()
    past = time.time() - clean.PID_MAX_AGE - 10
    os.utime(old, (past, past))
    clean.cleanup_pid(os.path.join(qmailhome, "queue"))
    assert os.listdir(piddir) == ["2.2.2"]


def test_getpw_program(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "engine.getpw", "root-ext"], capture_output=True)
    # root has uid 0: never a mailbox owner, so the alias user takes it (or exit 116 without one)
    assert p.returncode in (0, 116)
    if p.returncode == 0:
        fields = p.stdout.split(b"\0")
        assert fields[0] == b"alias" and fields[4:6] == [b"-", b"root-ext"]
