"""qmail-qmqpd: the QMQP server (qmail-qmqpd.c; spec 5.1), on port 628.

One message per connection: a netstring whose payload is the message's
netstring, the sender's and one per recipient. A length above 200,000,000
ends the program with 111, any other syntax error with 100, the client
closing early with 0, none of them with an answer; the inner netstrings
must fill the outer one exactly. A sender or recipient of 1000 bytes or
more, or with a NUL, fails the whole message with
`Dsorry, I can't accept addresses like that (#5.1.3)`. Otherwise the
message, behind a Received line with protocol `QMQP` (`compressed QMQP`),
goes into the queue (in-process, with qmail-queue's fsyncs, or through
$QMAILQUEUE) and the answer is one netstring: `Kok <time> qp <pid>`
(+ ` DDC saved <n> percent` when compressed) or the queue's D/Z text. The
answer without its letter is also logged on stderr. No relay control:
who may use QMQP is for the tcprules. The whole connection has 3600 s.

Compressed QMQP (qmail-ldap's QMQP_COMPRESS): when a byte other than a
digit comes before the first ':', the request is one zlib stream
(detected and inflated by the zdata kernel's QmqpInflater); $NOCOMPRESS
turns detection off. The netstrings are read by the smtpparse kernel's
NetstringDecoder.

Served by the master's preforked listener (engine.tcpserver, service
`qmqp`, control/qmqplisten) or as the program on fd 0/1 under tcpserver.
"""

import asyncio
import os
import sys
import time

from engine import compiled, conf
from engine.smtpd import received_header

_parser = compiled.load("smtpparse")
_zdata = compiled.load("zdata")

SESSION_LIMIT = 3600  # alarm(3600)
OUTER_DIGITS_MAX = 100  # qmail-qmqpd starts with bytesleft = 100 for the outer length
ADDR_MAX = 1000
CHUNK = 1 << 16
T_ADDRESSES = "Dsorry, I can't accept addresses like that (#5.1.3)"

EXIT_OK, EXIT_PROTO, EXIT_RESOURCES = 0, 100, 111


class End(Exception):
    """The session ends without an answer, with qmail-qmqpd's exit code."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def netstring(text):
    return _parser.ns_encode(text.encode("utf-8", "surrogateescape"))


def decoder_failure(decoder):
    """The exit code for a NetstringDecoder in an error state, else None."""
    if decoder.status == _parser.ERR_TOOLONG:
        return EXIT_RESOURCES
    if decoder.status == _parser.ERR_BADPROTO:
        return EXIT_PROTO
    return None


def acceptable(address):
    return len(address) < ADDR_MAX and b"\0" not in address


class Request:
    """The request's bytes as they arrive (already inflated): outer length, inner netstrings, final comma."""

    def __init__(self):
        self._outer = _parser.NetstringDecoder()
        self._inner = _parser.NetstringDecoder()
        self._digits = 0
        self.bytesleft = None  # outer payload bytes still to come, once the outer length is known
        self.payloads = []
        self.complete = False

    def feed(self, data):
        """Takes plain request bytes; raises End on a protocol error; sets complete after the last comma."""
        i = 0
        if self.bytesleft is None:
            i = self._outer_length(data)
        if self.bytesleft is not None and self.bytesleft and i < len(data):
            take = min(self.bytesleft, len(data) - i)
            self.payloads += self._inner.feed(data[i:i + take])
            self._check(self._inner)
            self.bytesleft -= take
            i += take
            if not self.bytesleft and (self._inner.status != _parser.DONE or len(self.payloads) < 2):
                raise End(EXIT_PROTO)  # the inner netstrings run past the outer one, or no sender
        if self.bytesleft == 0 and i < len(data):
            if data[i:i + 1] != b",":
                raise End(EXIT_PROTO)
            self.complete = True

    def _outer_length(self, data):
        """Reads length digits byte by byte up to ':'; returns the index after what it used."""
        for i in range(len(data)):
            self._digits += 1
            if self._digits > OUTER_DIGITS_MAX:
                raise End(EXIT_PROTO)
            self._outer.feed(data[i:i + 1])
            self._check(self._outer)
            if self._outer.pending:
                self.bytesleft = self._outer.pending
                return i + 1
            if data[i:i + 1] == b":":  # length 0: not even room for the message
                raise End(EXIT_PROTO)
        return len(data)

    @staticmethod
    def _check(decoder):
        code = decoder_failure(decoder)
        if code is not None:
            raise End(code)


class Session:
    """One QMQP connection. `controls` is unused (qmail-qmqpd reads no control file) but kept so
    the listener can construct every service's session alike."""

    def __init__(self, reader, writer, env, controls, services):
        self.reader, self.writer, self.env, self.s = reader, writer, env, services
        self.inflater = _zdata.QmqpInflater(detect="NOCOMPRESS" not in env)

    async def run(self):
        """Serves the request; returns qmail-qmqpd's exit code."""
        try:
            async with asyncio.timeout(SESSION_LIMIT):
                return await self.serve()
        except End as e:
            return e.code
        except TimeoutError:
            return EXIT_RESOURCES
        except (ConnectionError, OSError):
            return EXIT_OK  # safewrite()/saferead(): a broken connection ends quietly
        finally:
            self.writer.close()

    async def serve(self):
        request = Request()
        while not request.complete:
            request.feed(await self.read_plain())
        message, sender, *recipients = request.payloads
        if acceptable(sender) and all(acceptable(r) for r in recipients):
            result = await self.queue(message, sender, recipients)
        else:
            result = T_ADDRESSES
        await self.answer(result)
        return EXIT_OK

    async def read_plain(self):
        """The next request bytes, inflated when compressed; End(0) at the end of input."""
        while True:
            if self.inflater.status == _parser.DONE:
                raise End(EXIT_OK)  # the zlib stream ended early: qmail-qmqpd reads no further
            raw = await self.reader.read(CHUNK)
            if not raw:
                raise End(EXIT_OK)
            plain = self.inflater.feed(raw)
            if self.inflater.status == _zdata.ERR_ZLIB:
                await self.answer(self.inflater.reply().decode("utf-8", "replace"))
                raise End(EXIT_RESOURCES)
            if plain:
                return plain

    @property
    def compressed(self):
        return bool(self.inflater.compressed)

    async def queue(self, message, sender, recipients):
        env = self.env
        head = received_header("compressed QMQP" if self.compressed else "QMQP",
                               env.get("TCPLOCALHOST") or env.get("TCPLOCALIP") or "unknown",
                               env.get("TCPREMOTEIP") or "unknown", env.get("TCPREMOTEHOST") or "unknown",
                               env.get("TCPREMOTEINFO"), None, None, None)
        text = lambda a: a.decode("utf-8", "surrogateescape")  # noqa: E731
        result = await self.s.submit(head + message, text(sender), [text(r) for r in recipients],
                                     None, env.get("QMAILQUEUE"))
        if result != "K":
            return result
        ok = f"Kok {int(time.time())} qp {os.getpid()}"
        if self.compressed:
            ok += f" DDC saved {self.inflater.saved_percent()} percent"
        return ok

    async def answer(self, result):
        sys.stderr.write(result[1:] + "\n")
        sys.stderr.flush()
        self.writer.write(netstring(result))
        await self.writer.drain()


async def serve_stdio(home):
    from engine.smtpservices import Services
    from engine.tcpserver import stdio_streams
    reader, writer = await stdio_streams()
    return await Session(reader, writer, dict(os.environ), None, Services(home)).run()


def main(argv=None):
    return asyncio.run(serve_stdio(conf.qmailhome()))


if __name__ == "__main__":
    sys.exit(main())
