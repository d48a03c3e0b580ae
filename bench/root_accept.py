"""SMTP accept rate of a root installation: the master's qmaild workers queue through the
qmail-queue service (engine/queued.py), or with --program through a qmail-queue process per
message, as qmail does. Needs root (it creates a throwaway installation under /tmp).

Run: sudo .venv/bin/python bench/root_accept.py [--program]
"""

import argparse
import concurrent.futures
import os
import shutil
import smtplib
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from engine import install  # noqa: E402
from support.master import Master  # noqa: E402
from support.ports import free_port  # noqa: E402

BODY = "Subject: bench\r\n\r\n" + "x" * 1000 + "\r\n"


def session(port, count):
    for _ in range(100):
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=60)
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    with client:
        for _ in range(count):
            client.sendmail("a@remote.test", ["nobody@bench.example.test"], BODY)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", action="store_true", help="a qmail-queue process per message")
    parser.add_argument("--messages", type=int, default=100, help="per session")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pyqmail-rootbench-", dir="/tmp")
    os.chmod(base, 0o755)
    home = install.setup(os.path.join(base, "qmail"), single_user=False, me="bench.example.test")
    port = free_port()
    with open(os.path.join(home, "control", "smtplisten"), "w") as f:
        f.write(f"127.0.0.1:{port}\n")
    with open(os.path.join(home, "control", "rcpthosts"), "w") as f:
        f.write("bench.example.test\n")
    if args.program:
        with open(os.path.join(home, "control", "smtprules"), "w") as f:
            f.write(f':allow,QMAILQUEUE="{home}/bin/qmail-queue"\n')
    m = Master(home).start()
    try:
        session(port, 2)
        for concurrency in (1, 8):
            count = max(1, args.messages // concurrency)
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: session(port, count), range(concurrency)))
            rate = concurrency * count / (time.monotonic() - start)
            print(f"{'program' if args.program else 'service'} C={concurrency}: {rate:.0f} accepted/s")
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
