"""SMTP service benchmark: accepted messages/s at 1/8/32 sessions, end-to-end SMTP to Maildir, idle memory.

Starts the real master (single-user home, SMTP listener on loopback, 100 users in
users/assign) and drives it with bench/load.py's asyncio client.

    .venv/bin/python bench/smtp.py [--messages N]
"""

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import load  # noqa: E402
from support.master import Master  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.qmailhome import make_qmailhome  # noqa: E402
from support.users import make_users  # noqa: E402

USERS = [f"user{i}" for i in range(100)]


def start(base):
    home = make_qmailhome(os.path.join(base, "qmail"))
    maildirs = make_users(home, os.path.join(base, "home"), USERS)
    port = free_port()
    for name, text in (("smtplisten", f"127.0.0.1:{port}\n"), ("smtpworkers", "2\n"), ("smtpconcurrency", "200\n"),
                       ("concurrencylocal", "10\n"), ("smtprules", ":allow\n")):
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(text)
    m = Master(home).start()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    return m, port, maildirs


def scenario(port, pids, n, size, conc, per_session=10, maildirs=None):
    argv = ["--port", str(port), "-n", str(n), "-s", str(size), "-c", str(conc), "-k", str(per_session),
            "--pids", *map(str, pids)]
    for u in USERS:
        argv += ["--rcpt", f"{u}@example.test"]
    if maildirs:
        argv += ["--maildirs", maildirs]
    return load.main(argv)


def idle_memory(port, pid, sessions=200):
    """RSS growth of the SMTP workers per idle (greeted, silent) session."""
    workers = [p for p in psutil.Process(pid).children() if p.cmdline() and p.num_fds() > 0]
    before = sum(p.memory_info().rss for p in workers)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(sessions)]
    for s in socks:
        s.recv(200)
    time.sleep(0.5)
    after = sum(p.memory_info().rss for p in workers)
    for s in socks:
        s.close()
    return (after - before) / sessions


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=2000)
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="pyqmail-smtpbench-", dir="/tmp")
    m, port, maildirs = start(base)
    try:
        pid = m.proc.pid
        for conc in (1, 8, 32):
            print(f"# accept rate, 1 KB, {conc} sessions", flush=True)
            scenario(port, [pid], args.messages, 1024, conc)
        print("# end to end, 4 KB, 16 sessions, SMTP in -> Maildir", flush=True)
        scenario(port, [pid], args.messages, 4096, 16, maildirs=os.path.join(base, "home"))
        print(f"# idle session memory: {idle_memory(port, pid) / 1024:.1f} KiB per session")
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
