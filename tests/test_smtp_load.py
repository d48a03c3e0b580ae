"""500 simultaneous SMTP sessions: no errors, and no descriptor or memory left behind in the workers."""

import asyncio
import os
import socket
import time


from support.master import Master, tcp_connections
from support.ports import free_port
from support.users import make_users

SESSIONS = 500


async def session(port, i, errors):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply():
            while True:
                line = await asyncio.wait_for(reader.readline(), 120)
                if line[3:4] != b"-":
                    return line

        await reply()
        for cmd in (b"EHLO load.test", b"MAIL FROM:<load@remote.test>", f"RCPT TO:<u{i % 2}@example.test>".encode(),
                    b"DATA"):
            writer.write(cmd + b"\r\n")
            code = (await reply())[:3]
            if code not in (b"250", b"354"):
                errors.append((cmd, code))
                return
        writer.write(b"Subject: load %d\r\n\r\nbody\r\n.\r\nQUIT\r\n" % i)
        if (await reply())[:3] != b"250":
            errors.append((b"DATA", i))
        await reply()
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        errors.append(("exception", repr(e)))


async def run_all(port, sessions=SESSIONS):
    errors = []
    await asyncio.gather(*(session(port, i, errors) for i in range(sessions)))
    return errors


def workers(m):
    return [p for p in m.children() if any(c.status == "LISTEN" for c in tcp_connections(p))]


def test_500_simultaneous_sessions(qmailhome, tmp_path):
    make_users(qmailhome, str(tmp_path / "home"), ["u0", "u1"])
    port = free_port()
    for name, text in (("smtplisten", f"127.0.0.1:{port}\n"), ("smtpworkers", "2\n"),
                       ("smtpconcurrency", "1000\n"), ("concurrencylocal", "4\n")):
        with open(os.path.join(qmailhome, "control", name), "w") as f:
            f.write(text)
    m = Master(qmailhome).start()
    try:
        m.wait_for(lambda: len(workers(m)) == 2, 20, "two SMTP workers")
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert asyncio.run(run_all(port, 50)) == [], "warm-up"
        ws = workers(m)
        before = {p.pid: (p.num_fds(), p.memory_info().rss) for p in ws}
        errors = asyncio.run(run_all(port))
        assert errors == []
        time.sleep(1.0)
        for p in ws:
            fds0, rss0 = before[p.pid]
            assert p.num_fds() <= fds0 + 2, f"worker {p.pid} kept descriptors: {fds0} -> {p.num_fds()}"
            assert p.memory_info().rss - rss0 < 40 * 2**20, f"worker {p.pid} grew by {(p.memory_info().rss - rss0) >> 20} MB"
        assert [p.pid for p in workers(m)] == [p.pid for p in ws], "no worker died"
    finally:
        m.stop()
