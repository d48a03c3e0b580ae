"""qmail-rspawn: the remote delivery pool (qmail-rspawn.c, spawn.c).

One process, running as qmailr, carries every remote delivery at once on
asyncio: qmail-send's requests (engine.spawn) arrive on the pool socket,
each becomes a task running the qmail-remote client (engine.remote) for one
recipient, and the qmail-remote output — per-recipient `r`/`h`/`s` records
and the final `K`/`Z`/`D` — is merged into qmail-rspawn's one-letter
report. The pool announces conf-spawn as its limit; qmail-send keeps the
number in flight at or under concurrencyremote.
"""

import asyncio
import mmap
import os
import pwd
import signal
import stat
import traceback

from engine import conf, hier, remote, spawn, tcpok
from engine.arbiter import log


def merge_report(output):
    """qmail-rspawn's report(): qmail-remote's NUL-separated output -> (letter, text)."""
    if not output:
        return b"Z", b"qmail-remote produced no output."
    records = output.split(b"\0")
    result = -1
    final = None
    for rec in records:
        if rec[:1] in (b"K", b"Z", b"D"):
            final = rec
            result = {b"K": 1, b"Z": 0, b"D": -1}[rec[:1]]
            break
    first = records[0]
    overall = {b"s": 0, b"h": -1}.get(first[:1], result)
    letter = {1: b"K", 0: b"Z", -1: b"D"}[overall]
    text = first[1:]
    if final is not None and final is not first and result <= overall:
        text += final[1:]
    return letter, text


class Refused(Exception):
    """spawn.c's answer for a message file it will not deliver: (letter, text) in args."""


def read_message(home, messid, queue_uid=None):
    """The message bytes (mmap'ed); Refused for spawn.c's fstat, type and owner checks."""
    fd = os.open(os.path.join(home, "queue", "mess", messid.decode()), os.O_RDONLY)  # a directory opens too
    try:
        try:
            st = os.fstat(fd)
        except OSError:
            raise Refused(b"Z", b"qmail-spawn unable to fstat message. (#4.3.0)") from None
        if not stat.S_ISREG(st.st_mode):
            raise Refused(b"Z", b"Sorry, message has wrong type. (#4.3.5)")
        if queue_uid is not None and st.st_uid != queue_uid:  # qmailq has to be trusted
            raise Refused(b"Z", b"Sorry, message has wrong owner. (#4.3.5)")
        if st.st_size == 0:
            return b""
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def queue_owner(home):
    """qmailq's uid, which every mess/ file must have; None for a single-user instance."""
    if hier.is_single_user(home):
        return None
    try:
        return pwd.getpwnam(conf.USER_QUEUE).pw_uid
    except KeyError:
        return None


async def deliver_one(home, messid, sender, recipient, controls=None, queue_uid=None):
    refused = spawn.request_error(messid, recipient)
    if refused:
        return refused
    at = recipient.rfind(b"@")
    try:
        message = read_message(home, messid, queue_uid)
    except Refused as r:
        return r.args
    except OSError:
        return b"Z", b"qmail-spawn unable to open message. (#4.3.0)"
    try:
        host = recipient[at + 1:].decode("utf-8", "surrogateescape")
        output = await remote.deliver_output(host, sender, [recipient], message, home=home,
                                             controls=controls)
    except Exception:  # a client bug must defer, never lose; the log gets the traceback
        log("alert: qmail-remote crashed: " + traceback.format_exc().replace("\n", "/"))
        return b"Z", b"qmail-remote crashed."
    finally:
        if isinstance(message, mmap.mmap):
            message.close()
    return merge_report(output)


class Pool:
    def __init__(self, home):
        self.home = home
        self.controls = None
        self.queue_uid = queue_owner(home)
        self.reload()

    def reload(self):
        """Control files are read once and again on SIGHUP; unreadable ones are reported per delivery."""
        try:
            self.controls = remote.load_controls(self.home)
        except remote.Final:
            self.controls = None

    async def serve_connection(self, reader, writer):
        writer.write(spawn.encode_limit(conf.SPAWN))
        requests = spawn.RequestReader()
        tasks = set()
        busy = set()  # slots with a delivery in progress (spawn.c's d[delnum].used)
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for slot, messid, sender, recipient in requests.feed(data):
                if slot == spawn.HUP_SLOT and not (messid or sender or recipient):
                    continue
                refused = spawn.slot_error(slot, busy)
                if refused:
                    writer.write(spawn.encode_reply(slot, *refused, truncreport=0))
                    continue
                busy.add(slot)
                task = asyncio.create_task(self.run(slot, messid, sender, recipient, writer, busy))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()

    async def run(self, slot, messid, sender, recipient, writer, busy):
        try:
            letter, text = await deliver_one(self.home, messid, sender, recipient, self.controls, self.queue_uid)
        finally:
            busy.discard(slot)  # before the reply: qmail-send may reuse the slot as soon as it reads it
        writer.write(spawn.encode_reply(slot, letter, text, truncreport=0))  # qmail-rspawn.c: truncreport = 0
        await writer.drain()

    async def main(self, listener):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        server = await asyncio.start_unix_server(self.serve_connection, sock=listener)
        async with server:
            await server.serve_forever()


def run_rspawn(home, listener):
    """Arbiter target for the remote pool; like qmail-rspawn it starts with a clean tcpto table."""
    try:
        tcpok.clear(home)
    except tcpok.TcpokError as e:
        log(f"warning: {e}")
    asyncio.run(Pool(home).main(listener))
    return 0
