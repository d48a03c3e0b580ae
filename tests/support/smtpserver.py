"""A scripted SMTP server on loopback for qmail-remote tests: chosen replies, broken connections, STARTTLS,
AUTH LOGIN, DATAZ, cluster-cookie greetings. It runs its own event loop in a thread and records every
session (commands, message bytes as received, TLS state, client certificate, peer address).

Real TCP, real TLS (certificates made by `openssl req` at test time); only the replies are scripted.
"""

import asyncio
import base64
import ssl
import subprocess
import threading
import zlib


def make_cert(directory, cn="localhost"):
    """A self-signed certificate and key (openssl req); returns (certfile, keyfile, combined_pem)."""
    cert, key, both = (f"{directory}/{cn}.crt", f"{directory}/{cn}.key", f"{directory}/{cn}.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", f"/CN={cn}", "-days", "2"], check=True, capture_output=True)
    with open(both, "w") as out:
        out.write(open(cert).read() + open(key).read())
    return cert, key, both


class Session:
    def __init__(self, peer):
        self.peer = peer
        self.commands = []
        self.messages = []
        self.tls = False
        self.client_cert = None
        self.auth = None


class SMTPServer:
    """Scripted SMTP server. replies: {"MAIL": b"553 no", "DATA": ..., ".": ..., "EHLO": ..., "HELO": ...};
    rcpt: {b"addr": b"550 no"} by the address inside <>; drop: verbs after which the connection is closed
    without a reply ("." = after the message); silent: never say anything."""

    def __init__(self, host="127.0.0.1", port=0, *, greeting=b"220 scripted ESMTP", ehlo=(b"SIZE 10000000", b"8BITMIME"),
                 replies=None, rcpt=None, drop=(), silent=False, certfile=None, keyfile=None, cafile=None,
                 auth=False, dataz=False, bad_tls=False):
        self.host = host
        self.port = port
        self.greeting = greeting
        self.ehlo = list(ehlo)
        self.replies = replies or {}
        self.rcpt = rcpt or {}
        self.drop = set(drop)
        self.silent = silent
        self.auth = auth
        self.dataz = dataz
        self.bad_tls = bad_tls
        self.tls_context = None
        if certfile:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(certfile, keyfile)
            if cafile:
                self.tls_context.verify_mode = ssl.CERT_OPTIONAL
                self.tls_context.load_verify_locations(cafile)
        self.sessions = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self._tasks = set()

    def start(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self):
        async def _stop():
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)
        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader, writer):
        self._tasks.add(asyncio.current_task())
        session = Session(writer.get_extra_info("peername"))
        self.sessions.append(session)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()

    async def _converse(self, session, reader, writer):
        if self.silent:
            await reader.read()  # wait for the client to give up
            return
        await self._reply(writer, self.greeting)
        while True:
            line = await reader.readline()
            if not line:
                return
            session.commands.append(line.rstrip(b"\r\n"))
            verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
            if verb in self.drop:
                return
            if not await self._command(session, verb, line, reader, writer):
                return

    async def _command(self, session, verb, line, reader, writer):
        if verb == "EHLO":
            await self._reply(writer, self.replies.get("EHLO") or self._ehlo_reply(session))
        elif verb == "STARTTLS":
            return await self._starttls(session, writer)
        elif verb == "AUTH":
            await self._auth(session, reader, writer)
        elif verb == "RCPT":
            addr = line.split(b"<", 1)[1].rsplit(b">", 1)[0]
            await self._reply(writer, self.rcpt.get(addr, b"250 ok"))
        elif verb in ("DATA", "DATAZ"):
            reply = self.replies.get(verb, b"354 go ahead")
            await self._reply(writer, reply)
            if reply.startswith(b"354"):
                message = await (self._read_dataz(reader) if verb == "DATAZ" else reader.readuntil(b"\r\n.\r\n"))
                session.messages.append(message)
                if "." in self.drop:
                    return False
                await self._reply(writer, self.replies.get(".", b"250 ok queued"))
        elif verb == "QUIT":
            await self._reply(writer, b"221 bye")
            return False
        else:
            await self._reply(writer, self.replies.get(verb, b"250 ok"))
        return True

    def _ehlo_reply(self, session):
        lines = [b"scripted"] + self.ehlo
        if self.tls_context and not session.tls:
            lines.append(b"STARTTLS")
        if self.auth:
            lines.append(b"AUTH PLAIN LOGIN")
        if self.dataz:
            lines.append(b"DATAZ")
        return b"\r\n".join(b"250-" + x for x in lines[:-1]) + b"\r\n250 " + lines[-1]

    async def _starttls(self, session, writer):
        reply = self.replies.get("STARTTLS", b"220 ready for tls")
        await self._reply(writer, reply)
        if not reply.startswith(b"220"):
            return True
        if self.bad_tls:
            writer.write(b"this is not a TLS server hello\r\n" * 4)
            await writer.drain()
            return False
        await writer.start_tls(self.tls_context)
        session.tls = True
        session.client_cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return True

    async def _auth(self, session, reader, writer):
        await self._reply(writer, b"334 VXNlcm5hbWU6")
        user = base64.b64decode((await reader.readline()).strip())
        await self._reply(writer, b"334 UGFzc3dvcmQ6")
        password = base64.b64decode((await reader.readline()).strip())
        session.auth = (user, password)
        await self._reply(writer, self.replies.get("AUTHDONE", b"235 ok, go ahead"))

    @staticmethod
    async def _read_dataz(reader):
        inflater = zlib.decompressobj()
        out = b""
        while not inflater.eof:
            chunk = await reader.read(4096)
            if not chunk:
                break
            out += inflater.decompress(chunk)
        return out

    @staticmethod
    async def _reply(writer, text):
        writer.write(text + b"\r\n")
        await writer.drain()


class QMTPServer(SMTPServer):
    """A QMTP server (qmail-qmtpd's protocol): answers each recipient with responses.get(recipient, b"Kok")."""

    def __init__(self, host="127.0.0.1", port=0, *, responses=None):
        super().__init__(host, port)
        self.responses = responses or {}

    async def _converse(self, session, reader, writer):
        while True:
            try:
                message = await self._netstring(reader)
            except asyncio.IncompleteReadError:
                return
            sender = await self._netstring(reader)
            recips_raw = await self._netstring(reader)
            recips = []
            while recips_raw:
                length, _, rest = recips_raw.partition(b":")
                recips.append(rest[:int(length)])
                recips_raw = rest[int(length) + 1:]
            session.messages.append(message)
            session.commands.append((sender, recips))
            for r in recips:
                answer = self.responses.get(r, b"Kok 1 qp 2")
                writer.write(b"%d:%s," % (len(answer), answer))
            await writer.drain()

    @staticmethod
    async def _netstring(reader):
        length = int((await reader.readuntil(b":"))[:-1])
        data = await reader.readexactly(length + 1)
        if data[-1:] != b",":
            raise ConnectionError("bad netstring")
        return data[:-1]
