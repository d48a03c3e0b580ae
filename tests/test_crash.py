"""Killing any process of the delivery engine, or the master, loses no message (at least once)."""

import os
import re
import signal

import psutil

from engine import queue
from support.master import Master
from support.users import delivered, make_users

MESSAGES = 5000


def subjects(maildirs):
    seen = {}
    for md in maildirs:
        for path in delivered(md):
            with open(path, "rb") as f:
                head = f.read(600)
            m = re.search(rb"\nSubject: n(\d+)\n", head)
            if m:
                n = int(m.group(1))
                seen[n] = seen.get(n, 0) + 1
    return seen


def role_pids(master):
    """Children by what they do: the local pool and the others, told apart by their sockets/connections."""
    return [p for p in master.children() if p.ppid() == master.proc.pid]


def test_sigkill_children_and_master_during_5000_messages(qmailhome, tmp_path):
    users = make_users(qmailhome, str(tmp_path / "home"), ["u0", "u1", "u2", "u3"])
    with open(os.path.join(qmailhome, "control", "concurrencylocal"), "w") as f:
        f.write("4\n")
    m = Master(qmailhome, env={"PYQMAIL_RETRY_SCALE": "400"}).start()
    try:
        for i in range(MESSAGES):
            queue.enqueue(b"Subject: n%d\n\nbody\n" % i, b"s@example.test", [b"u%d@example.test" % (i % 4)],
                          home=qmailhome)
            if i in (1000, 2000, 3000, 4000):
                victims = role_pids(m)
                victim = victims[(i // 1000) % len(victims)]
                victim.send_signal(signal.SIGKILL)
        m.wait_for(lambda: len(subjects(users.values())) >= MESSAGES // 2, 120, "half delivered")
        kids = m.children()
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        for k in kids:
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass
        m.logfile.close()
    finally:
        m.stop()
    m2 = Master(qmailhome, env={"PYQMAIL_RETRY_SCALE": "400"}).start()
    try:
        m2.signal(signal.SIGALRM)
        m2.wait_for(lambda: len(subjects(users.values())) == MESSAGES, 240, "every message delivered")
        seen = subjects(users.values())
        duplicates = sum(c - 1 for c in seen.values())
        print(f"\n{MESSAGES} messages delivered after 4 child kills and a master kill; {duplicates} duplicates")
        assert set(seen) == set(range(MESSAGES))
        m2.wait_for(lambda: not queue_busy(qmailhome), 120, "queue empty")
    finally:
        m2.stop()


def queue_busy(home):
    q = os.path.join(home, "queue")
    return any(os.listdir(os.path.join(q, kind, str(i))) for kind in ("todo", "info", "local") for i in range(23))
