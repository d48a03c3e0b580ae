"""qmail-qmtpd: the QMTP server (qmail-qmtpd.c; spec 5.2), on port 209.

Many messages per connection, each three netstrings: the message (first
byte LF for LF text, CR for CRLF text, which is turned into LF), the
sender, and a netstring of recipient netstrings. One reply netstring per
recipient: `Kok <time> qp <pid>` or the queue's D/Z text, or the fixed
refusals for a recipient outside rcpthosts/locals (unless RELAYCLIENT,
whose value is appended), an address of 1000 bytes or more or with NUL,
an unacceptable sender, a message over databytes. A Received line with
protocol QMTP is prepended. Served by the preforked listener (engine.qmtpserver
role in the master) or as a program on fd 0/1 under tcpserver.
"""

import asyncio
import os
import socket
import sys
import time

from engine import conf, smtppolicy
from engine.smtpd import received_header
from engine.smtpservices import Services

LEN_MAX = 200000000
SESSION_LIMIT = 3600  # qmail-qmtpd's alarm(3600): the whole connection, however many messages
ADDR_MAX = 1000
R_DOMAIN = b"66:Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1),"
R_RECIPIENT = b"46:Dsorry, I can't handle that recipient (#5.1.3),"
T_SENDER = "Dunacceptable sender (#5.1.7)"
T_SIZE = "Dsorry, that message size exceeds my databytes limit (#5.3.4)"


class ProtocolError(Exception):
    """Bad netstring syntax (qmail-qmtpd exits 100) or a length over the limit (111)."""


def netstring(text):
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return b"%d:%s," % (len(data), data)


async def read_len(reader):
    digits = await reader.readuntil(b":")
    value = digits[:-1]
    if not value or not value.isdigit():
        raise ProtocolError("bad length")
    if int(value) > LEN_MAX:
        raise ProtocolError("length too large")
    return int(value)


async def read_comma(reader):
    if await reader.readexactly(1) != b",":
        raise ProtocolError("missing comma")


def parse_recipients(blob):
    """The recipient netstrings inside the third netstring."""
    out, i = [], 0
    while i < len(blob):
        colon = blob.find(b":", i)
        if colon < 0 or not blob[i:colon].isdigit():
            raise ProtocolError("bad recipient length")
        n = int(blob[i:colon])
        end = colon + 1 + n
        if end >= len(blob) or blob[end:end + 1] != b",":
            raise ProtocolError("bad recipient netstring")
        out.append(blob[colon + 1:end])
        i = end + 1
    return out


def dos_to_unix(data):
    """CR LF -> LF; a lone CR stays."""
    return data.replace(b"\r\n", b"\n")


class Session:
    def __init__(self, reader, writer, env, controls, services):
        self.reader, self.writer, self.env, self.c, self.s = reader, writer, env, controls, services
        self.relayclient = env.get("RELAYCLIENT")
        db = env.get("DATABYTES")
        # scan_ulong: the leading digits, none at all = 0 = no limit
        self.databytes = controls.databytes if db is None else int("0" + db[:len(db) - len(db.lstrip("0123456789"))])

    async def run(self):
        try:
            async with asyncio.timeout(SESSION_LIMIT):
                await self.messages()
        except (ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                TimeoutError):
            pass
        finally:
            self.writer.close()

    async def messages(self):
        while True:
            try:
                length = await read_len(self.reader)
            except asyncio.IncompleteReadError:
                return
            if length == 0:
                raise ProtocolError("empty message")
            await self.one_message(length)

    async def one_message(self, length):
        raw = await self.reader.readexactly(length)
        await read_comma(self.reader)
        if raw[:1] == b"\n":
            body = raw[1:]
        elif raw[:1] == b"\r":
            body = dos_to_unix(raw[1:])
        else:
            raise ProtocolError("bad message type")
        sender = await self.reader.readexactly(await read_len(self.reader))
        await read_comma(self.reader)
        rcpts = parse_recipients(await self.reader.readexactly(await read_len(self.reader)))
        await read_comma(self.reader)
        sender_ok = len(sender) < ADDR_MAX and b"\0" not in sender
        failures, accepted = [], []
        for r in rcpts:
            text = r.decode("utf-8", "surrogateescape")
            if len(r) + len((self.relayclient or "").encode()) >= ADDR_MAX:
                failures.append("L")
            elif self.relayclient is None and not self.c.rcpthosts.allowed(text, nolocal="NOLOCAL" in self.env):
                failures.append("D")  # checked for an address with NUL too: this refusal wins
            elif b"\0" in r:
                failures.append("N")
            else:
                failures.append("")
                accepted.append(text if self.relayclient is None else text + self.relayclient)
        result = await self.result(body, sender, sender_ok, accepted)
        out = bytearray()
        for f in failures:
            out += netstring(result) if f == "" else (R_DOMAIN if f == "D" else R_RECIPIENT)
        self.writer.write(bytes(out))
        await self.writer.drain()

    async def result(self, body, sender, sender_ok, accepted):
        if self.databytes and len(body) > self.databytes:
            return T_SIZE  # qmail-qmtpd sets this text last: it wins over the sender's
        if not sender_ok:
            return T_SENDER
        if not accepted:
            return ""  # only per-recipient refusals are sent
        env = self.env
        head = received_header("QMTP", env.get("TCPLOCALHOST") or env.get("TCPLOCALIP") or "unknown",
                               env.get("TCPREMOTEIP", "unknown"), env.get("TCPREMOTEHOST", "unknown"),
                               env.get("TCPREMOTEINFO"), None, None, None)
        extra = {"RELAYCLIENT": self.relayclient} if self.relayclient is not None else {}
        result = await self.s.submit(head + body, sender.decode("utf-8", "surrogateescape"), accepted,
                                     extra, env.get("QMAILQUEUE"))
        return f"Kok {int(time.time())} qp {os.getpid()}" if result == "K" else result


async def serve_stdio(home):
    sock = socket.socket(fileno=os.dup(0))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    await Session(reader, writer, dict(os.environ), smtppolicy.Controls(home), Services(home)).run()


def main(argv=None):
    asyncio.run(serve_stdio(conf.qmailhome()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
