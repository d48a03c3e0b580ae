"""SMTP load harness: N messages of S bytes over C concurrent sessions, k messages per session.

Stdlib only (asyncio). Reports accepted msgs/s, end-of-DATA latency
percentiles and errors; with --maildirs it also waits until every message
sits in a Maildir and reports end-to-end delivered msgs/s; with --pids or
--match it adds the CPU seconds per message and peak RSS of the server's
process trees (psutil).

    python bench/load.py --port 2525 -n 20000 -s 4096 -c 16 -k 10 \
        --rcpt-file users.txt --maildirs /tmp/bench/home --match qmail
"""

import argparse
import asyncio
import glob
import json
import os
import random
import statistics
import sys
import time

try:
    import psutil
except ImportError:  # the harness still measures rates without it
    psutil = None


class SMTPError(Exception):
    pass


async def read_reply(reader):
    """A whole (possibly multi-line) reply: (code, text)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


async def command(reader, writer, line, want):
    writer.write(line)
    code, text = await read_reply(reader)
    if code // 100 != want:
        raise SMTPError(f"{line.strip()!r} -> {text}")
    return code


def make_body(size, seq):
    header = (f"From: load@bench.example\r\nTo: rcpt@bench.example\r\n"
              f"Subject: load {seq}\r\nMessage-ID: <{seq}.{os.getpid()}@bench.example>\r\n\r\n")
    filler = ("x" * 76 + "\r\n")
    body = header + filler * max(0, (size - len(header)) // len(filler))
    return body.encode()


async def session(args, recipients, budget, latencies, errors, counter, rng=random, accepted=None):
    try:
        reader, writer = await asyncio.open_connection(args.host, args.port)
    except OSError as e:
        errors.append(f"connect: {e}")
        return
    try:
        await read_reply(reader)
        await command(reader, writer, b"EHLO bench.example\r\n", 2)
        for _ in range(budget):
            seq = counter.pop() if counter else None
            if seq is None:
                break
            rcpt = rng.choice(recipients)
            await command(reader, writer, b"MAIL FROM:<load@bench.example>\r\n", 2)
            await command(reader, writer, f"RCPT TO:<{rcpt}>\r\n".encode(), 2)
            await command(reader, writer, b"DATA\r\n", 3)
            start = time.perf_counter()
            writer.write(make_body(args.size, seq) + b".\r\n")
            code, text = await read_reply(reader)
            if code // 100 != 2:
                errors.append(f"DATA: {text}")
            else:
                latencies.append(time.perf_counter() - start)
                if accepted is not None:
                    accepted.append(rcpt)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, SMTPError) as e:
        errors.append(str(e))
    finally:
        writer.close()


async def drive(args, recipients, rng=random, accepted=None):
    """Send args.messages messages; returns (end-of-DATA latencies, errors).

    Recipients are drawn from `rng` one per message, so a seeded rng gives every
    server the same recipients; accepted ones are appended to `accepted`."""
    latencies, errors = [], []
    counter = list(range(args.messages, 0, -1))
    sem = asyncio.Semaphore(args.concurrency)

    async def one():
        async with sem:
            await session(args, recipients, args.per_session, latencies, errors, counter, rng, accepted)

    sessions = -(-args.messages // args.per_session)
    await asyncio.gather(*(one() for _ in range(sessions)))
    return latencies, errors


def count_delivered(root):
    return sum(len(os.listdir(d)) for pattern in ("new", "cur")
               for d in glob.glob(os.path.join(root, "**", pattern), recursive=True)
               if os.path.isdir(d) and os.path.basename(os.path.dirname(d)) != "tmp")


def server_processes(args):
    if psutil is None:
        return []
    roots = [psutil.Process(p) for p in args.pids]
    if args.match:
        roots += [p for p in psutil.process_iter(["cmdline"])
                  if args.match in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid()]
    procs = {}
    for r in roots:
        for p in [r] + r.children(recursive=True):
            procs[p.pid] = p
    return list(procs.values())


def cpu_seconds(procs):
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def peak_rss(procs):
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return rss


def percentile(values, q):
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=25)
    p.add_argument("-n", "--messages", type=int, default=1000)
    p.add_argument("-s", "--size", type=int, default=1024)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("-k", "--per-session", type=int, default=10)
    p.add_argument("--rcpt", action="append", default=[], help="recipient (repeatable)")
    p.add_argument("--rcpt-file", help="file with one recipient per line")
    p.add_argument("--maildirs", help="wait until this many new messages are under this directory")
    p.add_argument("--timeout", type=float, default=600.0, help="delivery wait limit in seconds")
    p.add_argument("--pids", type=int, nargs="*", default=[], help="server process ids (with children)")
    p.add_argument("--match", help="server processes whose command line contains this text")
    p.add_argument("--label", default="")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    recipients = list(args.rcpt)
    if args.rcpt_file:
        with open(args.rcpt_file) as f:
            recipients += [line.strip() for line in f if line.strip()]
    if not recipients:
        sys.exit("load.py: give --rcpt or --rcpt-file")
    procs = server_processes(args)
    cpu0 = cpu_seconds(procs)
    base = count_delivered(args.maildirs) if args.maildirs else 0
    start = time.perf_counter()
    latencies, errors = asyncio.run(drive(args, recipients))
    accepted_at = time.perf_counter()
    result = {"label": args.label, "messages": args.messages, "size": args.size,
              "concurrency": args.concurrency, "accepted": len(latencies), "errors": len(errors),
              "accept_rate": len(latencies) / (accepted_at - start),
              "p50_ms": _ms(percentile(latencies, 50)), "p95_ms": _ms(percentile(latencies, 95)),
              "p99_ms": _ms(percentile(latencies, 99))}
    rss = peak_rss(procs)
    if args.maildirs:
        want = base + len(latencies)
        deadline = time.perf_counter() + args.timeout
        while count_delivered(args.maildirs) < want and time.perf_counter() < deadline:
            rss = max(rss, peak_rss(procs))
            time.sleep(0.05)
        delivered = count_delivered(args.maildirs) - base
        result.update(delivered=delivered, delivered_rate=delivered / (time.perf_counter() - start))
    if procs:
        result.update(cpu_ms_per_msg=1000 * (cpu_seconds(procs) - cpu0) / max(1, len(latencies)),
                      peak_rss_mb=max(rss, peak_rss(procs)) / 2**20)
    if errors:
        result["first_error"] = errors[0]
    print(json.dumps(result) if args.json else
          " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 1 if errors else 0


def _ms(seconds):
    return None if seconds is None else seconds * 1000


if __name__ == "__main__":
    sys.exit(main())
