"""Where our CPU goes: one end-to-end run of our master, CPU per message split by qmail role.

Starts a slapd with USERS generated users and our master exactly as `make bench`
configures it (bench/suite.py's Ours: RCPTCHECK on, the directory as user source),
sends N messages of S bytes over C sessions with bench/load.py's client, waits
until every one is in its Maildir, and prints the CPU milliseconds per message of
each role (the kernel's process name, which the arbiter sets to qmail's program
name), of slapd, and the file operations when --strace is given.

    .venv/bin/python bench/roles.py [-n 2000] [-s 4096] [-c 16] [--users 2000] [--strace]
"""

import argparse
import asyncio
import collections
import os
import random
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import directory  # noqa: E402
import load  # noqa: E402
import suite  # noqa: E402


def cpu_by_name(pid):
    """{process name: [user, system] CPU seconds} over pid's tree; exited children count under their parent."""
    totals = collections.defaultdict(lambda: [0.0, 0.0])
    for p in suite.tree(pid):
        try:
            t = p.cpu_times()
            name = p.name()
        except suite.psutil.Error:
            continue
        totals[name][0] += t.user + t.children_user
        totals[name][1] += t.system + t.children_system
    return totals


def drive(server, messages, size, concurrency, recipients):
    args = argparse.Namespace(host="127.0.0.1", port=server.port, messages=messages, size=size,
                              concurrency=concurrency, per_session=suite.PER_SESSION)
    accepted = []
    t0 = time.perf_counter()
    asyncio.run(load.drive(args, recipients, random.Random(7), accepted))
    server.mailboxes.wait([int(a[4:a.index("@")]) for a in accepted], suite.DELIVERY_TIMEOUT)
    seconds = time.perf_counter() - t0
    suite.wait_drained(server)
    return len(accepted), seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=2000)
    ap.add_argument("-s", "--size", type=int, default=4096)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--strace", action="store_true", help="also count file operations (100 messages)")
    args = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="roles-")
    slapd, _, _ = directory.loaded_slapd(os.path.join(base, "slapd"), args.users, domains=suite.DOMAINS,
                                         home=None, store="u{i}/", quota=None)
    server = None
    try:
        mail = suite.Mailboxes(os.path.join(base, "mail"), args.users)
        server = suite.Ours("ours", base, mail, args.users, slapd).start()
        recipients = [directory.address(i, suite.DOMAINS) for i in range(args.users)]
        drive(server, 200, 1024, 8, recipients)  # warm-up
        before, dir0 = cpu_by_name(server.pid), suite.tree_cpu(slapd.proc.pid)
        n, seconds = drive(server, args.messages, args.size, args.concurrency, recipients)
        after, dir1 = cpu_by_name(server.pid), suite.tree_cpu(slapd.proc.pid)
        print(f"{n} x {args.size} B at C={args.concurrency}: {n / seconds:.0f} delivered msgs/s")
        used = {name: [(a - b) * 1000 / n for a, b in zip(after[name], before[name])] for name in after}
        print(f"  {'role':<16} {'ms/msg':>6} {'user':>6} {'system':>6}")
        for name, (user, system) in sorted(used.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {name:<16} {user + system:6.2f} {user:6.2f} {system:6.2f}")
        total = [sum(v[i] for v in used.values()) for i in (0, 1)]
        print(f"  {'(ours, total)':<16} {sum(total):6.2f} {total[0]:6.2f} {total[1]:6.2f}")
        print(f"  {'slapd':<16} {(dir1 - dir0) * 1000 / n:6.2f} ms/msg")
        if args.strace:
            ops = suite.file_ops(server, suite.OPS_RUN, recipients, slapd.proc.pid)
            print("  file operations per message:", ops)
    finally:
        if server is not None:
            server.stop()
        slapd.stop()
        subprocess.run(["rm", "-rf", base])
    return 0


if __name__ == "__main__":
    sys.exit(main())
