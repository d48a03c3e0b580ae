"""Injection to Maildir, end to end through the real master (issue: delivery engine benchmark).

For 1 KB and 100 KB messages, concurrencylocal 1, 10 and 50, with the compiled
kernels and with QMAIL_PUREPY=1: start the master on a fresh single-user home,
enqueue N messages in-process (as the SMTP service does) to 10 users, and time
from the first injection until every message is in a Maildir. Reports messages/s
and the CPU seconds per message of the master's whole process tree (psutil).

    .venv/bin/python bench/delivery.py [--quick] [--json]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import load  # noqa: E402  (bench/ is the script's directory)
from engine import queue  # noqa: E402
from support.master import Master  # noqa: E402
from support.qmailhome import make_qmailhome  # noqa: E402
from support.users import make_users  # noqa: E402

USERS = [f"user{i}" for i in range(10)]


def count(maildirs):
    return sum(len(os.listdir(os.path.join(m, "new"))) for m in maildirs)


def tree_cpu(proc):
    return load.cpu_seconds([proc] + proc.children(recursive=True))


def run(size, concurrency, pure, messages):
    base = tempfile.mkdtemp(prefix="pyqmail-bench-", dir="/tmp")
    try:
        home = make_qmailhome(os.path.join(base, "qmail"))
        maildirs = list(make_users(home, os.path.join(base, "home"), USERS).values())
        with open(os.path.join(home, "control", "concurrencylocal"), "w") as f:
            f.write(f"{concurrency}\n")
        env = {"QMAIL_PUREPY": "1"} if pure else {"QMAIL_PUREPY": ""}
        m = Master(home, env=env).start()
        try:
            m.wait_for(lambda: len(m.children()) >= 4 + concurrency, 30, "pool up")
            proc = psutil.Process(m.proc.pid)
            cpu0 = tree_cpu(proc)
            body = b"Subject: bench\n\n" + b"x" * (size - 17) + b"\n"
            start = time.perf_counter()
            for i in range(messages):
                queue.enqueue(body, b"bench@example.test", [f"{USERS[i % 10]}@example.test".encode()], home=home)
            injected = time.perf_counter() - start
            m.wait_for(lambda: count(maildirs) >= messages, 600, "all delivered")
            elapsed = time.perf_counter() - start
            cpu = tree_cpu(proc) - cpu0
        finally:
            m.stop()
        return {"size": size, "concurrencylocal": concurrency, "kernels": "pure" if pure else "compiled",
                "messages": messages, "msgs_per_s": messages / elapsed, "inject_per_s": messages / injected,
                "cpu_ms_per_msg": 1000 * cpu / messages}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer messages")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for size, n in ((1024, 300 if args.quick else 1000), (100 * 1024, 100 if args.quick else 300)):
        for conc in (1, 10, 50):
            for pure in (False, True):
                r = run(size, conc, pure, n)
                rows.append(r)
                print(json.dumps(r) if args.json else
                      f"{size // 1024:>4} KB  conc {conc:>2}  {r['kernels']:<8}  {r['msgs_per_s']:7.1f} msg/s  "
                      f"{r['cpu_ms_per_msg']:6.2f} ms CPU/msg  (injection {r['inject_per_s']:.0f}/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
