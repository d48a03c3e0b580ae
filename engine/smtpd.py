"""qmail-smtpd: the SMTP server session (qmail-smtpd.c, received.c), with qmail-ldap's checks.

One Session per connection, on asyncio streams, so one worker process
carries many sessions. The same code serves the master's preforked SMTP
workers (engine.smtpserver) and the `qmail-smtpd` program run by an
external tcpserver with the connection on fd 0/1. Greeting, HELO/EHLO,
MAIL and RCPT checks in qmail-ldap's order, DATA/DATAZ, AUTH and STARTTLS
follow spec section 5.3 with its exact reply lines; replies are buffered
and flushed before each read (PIPELINING). Accepted messages go into the
queue through engine.queue's in-process entry (qmail-queue's durability:
on disk and fsynced before `250 ok`), or through $QMAILQUEUE when set.
"""

import asyncio
import base64
import os
import ssl
import time

from engine import compiled, smtppolicy
from engine.date822 import date822

AUTH_FAIL_DELAY, AUTH_FAIL_EXTRA = 1, 4

R_HELP = (b"214-qmail home page: http://pobox.com/~djb/qmail.html\r\n"
          b"214 qmail-ldap patch home page: http://www.nrg4u.com\r\n")
R_UNIMPL = b"502 unimplemented (#5.5.1)\r\n"
R_SYNTAX = b"555 syntax error (#5.5.4)\r\n"
R_WANTMAIL = b"503 MAIL first (#5.5.1)\r\n"
R_WANTRCPT = b"503 RCPT first (#5.5.1)\r\n"
R_BADSEQ = b"503 bad sequence of commands (#5.5.1)\r\n"
R_421SEQ = b"421 Service temporarily not available (#4.3.2)\r\n"
R_NOOP = b"250 ok\r\n"
R_VRFY = b"252 send some mail, i'll try my best\r\n"
R_RSET = b"250 flushed\r\n"
R_AUTHNEEDED = b"530 authentication needed\r\n"
R_SIZE = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
R_BMF = b"553 sorry, your mail was administratively denied. (#5.7.1)\r\n"
R_BADRCPTTO = b"553 sorry, mail to that recipient is not accepted (#5.7.1)\r\n"
R_MAXRCPT = b"553 sorry, too many recipients (#5.7.1)\r\n"
R_BADBOUNCE = (b"550 sorry, I don't accept bounce messages with more than one recipient. "
               b"Go read RFC2821. (#5.7.1)\r\n")
R_GOAHEAD = b"354 go ahead punk, make my day\r\n"
R_QQT = b"451 qqt failure (#4.3.0)\r\n"
R_LOOP = b"554 too many hops, this message is looping (#5.4.6)\r\n"
R_EXEC = b"552 we don't accept email with this MIME content (#5.3.4)\r\n"
R_STRAYLF = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
R_LONGLINE = b"500 Text line too long."          # qmail-ldap sends it without CRLF
R_TIMEOUT = b"451 timeout (#4.4.2)\r\n"
R_CONTROLS = b"421 unable to read controls (#4.3.0)\r\n"
R_AUTHAGAIN = b"503 you are already authenticated\r\n"
R_NEEDTLS = b"538 Encryption required for requested authentication mechanism"  # sic, no CRLF
R_AUTHTYPE = b"504 authentication type not supported\r\n"
R_AUTHOK = b"235 nice to meet you\r\n"
R_AUTHFAIL = b"535 authentication failure\r\n"
R_AUTHTEMP = b"454 temporary authentication failure (#4.3.0)\r\n"
R_AUTHABORT = b"501 authentication exchange aborted. (#4.3.0)\r\n"
R_AUTHBAD = b"501 authentication exchange failed\r\n"
R_TLSPARAM = b"501 Syntax error (no parameters allowed) (#5.5.4)\r\n"
R_TLSCTX = b"454 TLS not available: unable to initialize ctx (#4.3.0)\r\n"
R_TLSREADY = b"220 ready for tls\r\n"
R_SENDERSTRICT = b"554 refused mailfrom because valid local sender address required\r\n"
R_RUSH = b"554 SMTP protocol violation\r\n"

_parser = compiled.load("smtpparse")
_zdata = compiled.load("zdata")


class Closed(Exception):
    """The session ends (QUIT, a fatal error, a timeout or the client went away)."""


def _safe(text):
    """received.c's safeput: anything but [A-Za-z0-9.@%+/=:-_#[]] becomes `?`."""
    ok = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-_#[]")
    return bytes(c if c in ok else 0x3F for c in text)


def received_header(proto, local, remoteip, remotehost, remoteinfo, helo, mailfrom, rcpt, when=None):
    """The Received line qmail-ldap's received() writes."""
    b = lambda s: s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s  # noqa: E731
    out = [b"Received: from ", _safe(b(remotehost))]
    if helo is not None:
        out += [b" (HELO ", _safe(b(helo)), b")"]
    out.append(b" (")
    if remoteinfo:
        out += [_safe(b(remoteinfo)), b"@"]
    out += [b"[", _safe(b(remoteip)), b"])"]
    if mailfrom is not None:
        out += [b"\n          (envelope-sender <", _safe(b(mailfrom)), b">)"]
    out += [b"\n          by ", _safe(b(local)), b" (qmail-ldap-1.03) with ", b(proto)]
    if rcpt is not None:
        out += [b"\n          for <", _safe(b(rcpt)), b">"]
    out += [b"; ", date822(when).encode(), b"\n"]
    return b"".join(out)


class Env:
    """The connection's environment: UCSPI variables and tcprules settings (read-only view + RELAYCLIENT)."""

    def __init__(self, values):
        self.values = dict(values)

    def get(self, name, default=None):
        return self.values.get(name, default)

    def flag(self, name):
        return name in self.values

    def number(self, name, default=0):
        value = self.values.get(name)
        if value is None:
            return default
        digits = len(value) - len(value.lstrip("0123456789"))
        return int(value[:digits]) if digits else 0


class Session:
    def __init__(self, reader, writer, env, controls, services):
        self.reader, self.writer = reader, writer
        self.env = env if isinstance(env, Env) else Env(env)
        env = self.env
        self.c = controls
        self.s = services           # submit(), verify(), authenticate(), log()
        self.out = bytearray()
        self.tls = False
        self.compressed = False
        self.remoteip = env.get("TCPREMOTEIP", "unknown")
        self.remotehost = env.get("TCPREMOTEHOST", "unknown")
        self.remoteinfo = env.get("TCPREMOTEINFO")
        self.local = env.get("TCPLOCALHOST", env.get("TCPLOCALIP", "unknown"))  # set but empty stays empty, as in C
        self.relayok = env.get("RELAYCLIENT")
        self.relayclient = self.relayok
        self.databytes = env.number("DATABYTES", controls.databytes) if env.flag("DATABYTES") \
            else controls.databytes
        self.auth_enabled = env.flag("SMTPAUTH")
        self.auth_needs_tls = (env.get("SMTPAUTH") or "").lower() == "tlsrequired"
        self.auth_required = env.flag("AUTHREQUIRED")
        self.authorized = env.flag("AUTHORIZED")
        self.authuser = None
        self.errdisconnect = env.flag("SMTP550DISCONNECT")
        # $SSLCERT (the path itself) replaces control/smtpcert; either one turns STARTTLS on
        self.tlscert = env.get("SSLCERT") if env.flag("SSLCERT") else controls.smtpcert
        self.timeout = controls.timeout
        self.seenmail = False
        self.mailfrom = None
        self.rcpts = []
        self.rcptcount = 0          # RCPTs past the relay check, refused later or not (qmail-smtpd's rcptcount)
        self.rbl_headers = []
        self.helo(self.remotehost)

    # --- I/O ---------------------------------------------------------------------------
    def reply(self, line):
        self.out += line

    async def flush(self):
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
            await self.writer.drain()

    async def readline(self, strip_cr=True):
        """The next line without its LF (and one CR before it unless strip_cr is false)."""
        await self.flush()
        try:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
        except asyncio.TimeoutError:
            self.reply(R_TIMEOUT)
            raise Closed("timeout")
        except (ConnectionError, ValueError):
            raise Closed("read error")
        if not line.endswith(b"\n"):
            raise Closed("client closed")  # commands.c: a line without its LF is never run
        line = line[:-1]
        return line[:-1] if strip_cr and line.endswith(b"\r") else line

    def line_with_me(self, code):
        return code + self.c.me.encode() + b" " + self.c.greeting.encode() + b"\r\n"

    async def reject(self, line):
        """Send a MAIL/RCPT/DATA/AUTH rejection; with SMTP550DISCONNECT the session ends."""
        self.reply(line)
        if self.errdisconnect:
            raise Closed("SMTP550DISCONNECT")

    # --- session -----------------------------------------------------------------------
    async def run(self):
        try:
            if self.env.flag("RBL") and self.c.rbllist is None:
                self.reply(R_CONTROLS)  # rblinit() could not parse control/rbllist
                raise Closed("bad rbllist")
            if self.env.flag("550GREETING") or self.env.flag("421GREETING"):
                await self.restricted()
            else:
                await self.greet()
                await self.commands()
        except Closed:
            pass
        finally:
            try:
                await self.flush()
            except (ConnectionError, OSError):
                pass
            self.writer.close()

    async def greet(self):
        parts = [b"220 ", self.c.me.encode(), b" ESMTP "]
        budget = self.env.number("GREETDELAY", 0)
        if budget:
            await self.stutter(parts, budget)
        else:
            self.reply(b"".join(parts))
        tail = self.c.greeting.encode()
        if self.c.cookie:
            tail += b" " + self.c.cookie.encode()
        self.reply(tail + b"\r\n")

    async def stutter(self, parts, budget):
        """GREETDELAY: one byte a second (up to the budget); DROPRUSHGREET drops clients that talk early."""
        for part in parts:
            for i in range(len(part)):
                if budget <= 0:
                    self.reply(part[i:])
                    break
                budget -= 1
                self.reply(part[i:i + 1])
                await self.flush()
                if self.env.flag("DROPRUSHGREET"):
                    try:
                        early = await asyncio.wait_for(self.reader.read(1), 1.0)
                    except asyncio.TimeoutError:
                        continue
                    if early:
                        self.reply(R_RUSH)
                    raise Closed("rushed greeting")
                await asyncio.sleep(1)

    async def restricted(self):
        """550GREETING / 421GREETING: refuse at the greeting, then only QUIT is useful."""
        is550 = self.env.flag("550GREETING")
        text = self.env.get("550GREETING" if is550 else "421GREETING") or (
            "Sorry, your mail was administratively denied. (#5.7.1)" if is550
            else "Service temporarily not available (#4.3.2)")
        self.timeout = 20
        self.reply(b"554 " if is550 else b"421 ")
        self.reply(self.c.me.encode() + b" " + text.encode() + b"\r\n")
        if self.errdisconnect:
            raise Closed("greeting refusal")
        while True:
            verb, _ = _parser.split_command(await self.readline(strip_cr=False))
            if verb == b"QUIT":
                self.smtp_quit()
            elif verb in (b"HELO", b"EHLO") and self.env.flag("421GREETING"):
                self.reply(R_421SEQ)
            else:
                self.reply(R_BADSEQ)

    async def commands(self):
        handlers = {b"HELO": self.smtp_helo, b"EHLO": self.smtp_ehlo, b"MAIL": self.smtp_mail,
                    b"RCPT": self.smtp_rcpt, b"DATA": self.smtp_data, b"DATAZ": self.smtp_dataz,
                    b"RSET": self.smtp_rset, b"NOOP": self.smtp_noop, b"VRFY": self.smtp_vrfy,
                    b"HELP": self.smtp_help, b"QUIT": self.smtp_quit, b"AUTH": self.smtp_auth,
                    b"STARTTLS": self.smtp_starttls}
        while True:
            verb, arg = _parser.split_command(await self.readline(strip_cr=False))
            handler = handlers.get(verb)
            if handler is None:
                self.reply(R_UNIMPL)
                continue
            result = handler(arg)
            if asyncio.iscoroutine(result):
                await result

    # --- simple verbs -------------------------------------------------------------------
    def helo(self, arg):
        self.helohost = arg if isinstance(arg, str) else arg.decode("utf-8", "surrogateescape")
        self.fakehelo = None if self.helohost.lower() == self.remotehost.lower() else self.helohost

    def smtp_helo(self, arg):
        self.reply(self.line_with_me(b"250 "))
        self.seenmail = False
        self.helo(arg)

    def smtp_ehlo(self, arg):
        self.reply(self.line_with_me(b"250-"))
        self.reply(b"250-PIPELINING\r\n")
        if self.databytes:
            self.reply(b"250-SIZE %d\r\n" % self.databytes)
        if self.c.dataz:
            self.reply(b"250-DATAZ\r\n")
        if not self.tls and self.tlscert:
            self.reply(b"250-STARTTLS\r\n")
        if self.auth_enabled and (not self.auth_needs_tls or self.tls):
            self.reply(b"250-AUTH LOGIN PLAIN\r\n")
        self.reply(b"250 8BITMIME\r\n")
        self.seenmail = False
        self.helo(arg)

    def smtp_rset(self, arg):
        self.seenmail = False
        self.relayclient = self.relayok
        self.reply(R_RSET)

    def smtp_noop(self, arg):
        self.reply(R_NOOP)

    def smtp_vrfy(self, arg):
        self.reply(R_VRFY)

    def smtp_help(self, arg):
        self.reply(R_HELP)

    def smtp_quit(self, arg=b""):
        self.reply(b"221 " + self.c.me.encode() + b" Goodbye.\r\n")
        raise Closed("quit")

    # --- MAIL -------------------------------------------------------------------------
    def parse_address(self, arg):
        addr = _parser.parse_addr(arg, None)  # the length counts after the localiphost rewrite
        if addr is None:
            return None
        text = self.rewrite_ip_literal(addr.decode("utf-8", "surrogateescape"))
        return None if len(text.encode("utf-8", "surrogateescape")) > _parser.ADDR_MAX else text

    def rewrite_ip_literal(self, addr):
        """`user@[our IP]` becomes `user@localiphost`."""
        at = addr.rfind("@")
        if at >= 0 and addr[at + 1:at + 2] == "[" and addr.endswith("]"):
            if self.s.is_my_ip(addr[at + 2:-1]):
                return addr[:at + 1] + self.c.localiphost
        return addr

    async def smtp_mail(self, arg):
        addr = self.parse_address(arg)
        if addr is None:
            return await self.reject(R_SYNTAX)
        if self.auth_required and not (self.authuser or self.authorized):
            return await self.reject(R_AUTHNEEDED)
        if self.authuser and self.relayclient is None:
            self.relayclient = ""
        if _parser.size_exceeds(arg, self.databytes):
            return await self.reject(R_SIZE)
        good = smtppolicy.in_address_list(self.c.goodmailfrom, addr)
        if not good and smtppolicy.in_address_list(self.c.badmailfrom, addr):
            return await self.reject(R_BMF)
        if not good and self.remotehost.lower() == "unknown" and \
                smtppolicy.in_address_list(self.c.badmailfrom_unknown, addr):
            return await self.reject(b"553 sorry, your mail from a host [" + self.remoteip.encode() +
                                     b"] without valid reverse DNS was administratively denied (#5.7.1)\r\n")
        bounce = addr in ("", "#@[]")
        if bounce and self.env.flag("NOBOUNCE"):
            return await self.reject(b"554 RFC2821 bounces are administratively denied\r\n")
        if not good and self.env.flag("SANITYCHECK") and not bounce:
            problem = smtppolicy.sanity_error(addr)
            if problem:
                return await self.reject(b"554 " + problem.encode() + b"\r\n")
        if self.relayclient is None and smtppolicy.in_relaymailfrom(self.c.relaymailfrom, addr):
            self.relayclient = ""
        self.rbl_headers = []
        if not good and self.env.flag("RBL") and self.relayclient is None:
            listed = await self.s.rbl_check(self, self.remoteip)
            if listed is not None:
                return await self.reject(b"553 sorry, your mailserver [" + self.remoteip.encode() +
                                         b"] is rejected by " + listed.encode() + b"\r\n")
        if not good and self.env.flag("RETURNMXCHECK") and not bounce and "@" in addr:
            found = await self.s.mx_exists(addr[addr.rfind("@") + 1:])
            if found is None:
                return await self.reject(b"421 DNS temporary failure at return MX check, try again later "
                                         b"(#4.3.0)\r\n")
            if not found:
                return await self.reject(b"554 refused mailfrom because return MX does not exist\r\n")
        if not good and self.env.flag("SENDERCHECK") and not bounce and \
                not smtppolicy.in_goodmailaddr(self.c.goodmailaddr, addr):
            refusal = await self.sender_check(addr)
            if refusal:
                return await self.reject(refusal)
        self.seenmail = True
        self.mailfrom = addr
        self.rcpts = []
        self.rcptcount = 0
        self.reply(b"250 ok\r\n")

    async def sender_check(self, addr):
        mode = (self.env.get("SENDERCHECK") or "").upper()
        if self.c.rcpthosts.is_local(addr):
            kind, text = await self.s.verify(addr)
            if kind == "D":
                return b"554 " + text.encode() + b"\r\n"
            if kind == "Z" and not self.env.flag("LDAPSOFTOK"):
                return b"451 " + text.encode() + b"\r\n"
            return None
        if mode == "STRICT":
            return R_SENDERSTRICT
        if mode == "LOOSE" and not self.c.rcpthosts.allowed(addr):
            return R_SENDERSTRICT
        return None

    # --- RCPT -------------------------------------------------------------------------
    async def smtp_rcpt(self, arg):
        if not self.seenmail:
            return await self.reject(R_WANTMAIL)
        addr = self.parse_address(arg)
        if addr is None:
            return await self.reject(R_SYNTAX)
        if self.env.flag("BLOCKRELAYPROBE") and smtppolicy.relay_probe(addr):
            return await self.reject(b"553 sorry, we don't relay for [" + self.remoteip.encode() +
                                     b"] (#5.7.1)\r\n")
        if smtppolicy.in_address_list(self.c.badrcptto, addr):
            return await self.reject(R_BADRCPTTO)
        if self.relayclient is not None:
            addr += self.relayclient
        elif not self.c.rcpthosts.allowed(addr, nolocal=self.env.flag("NOLOCAL")):
            return await self.reject(b"553 sorry, relaying denied from your location [" +
                                     self.remoteip.encode() + b"] (#5.7.1)\r\n")
        self.rcptcount += 1
        count = self.rcptcount
        maxrcpt = self.env.number("MAXRCPTCOUNT", 0)
        if maxrcpt and count > maxrcpt:
            return await self.reject(R_MAXRCPT)
        if count > 1 and self.mailfrom in ("", "#@[]"):
            return await self.reject(R_BADBOUNCE)
        if self.env.flag("RCPTCHECK") and not smtppolicy.in_goodmailaddr(self.c.goodmailaddr, addr) \
                and self.c.rcpthosts.is_local(addr):
            kind, text = await self.s.verify(addr)
            if kind == "D":
                delay = self.env.number("BADRCPTDELAY", 0)
                if delay:
                    await self.flush()
                    await asyncio.sleep(delay)
                return await self.reject(b"554 " + text.encode() + b"\r\n")
            if kind == "Z" and not self.env.flag("LDAPSOFTOK"):
                return await self.reject(b"451 " + text.encode() + b"\r\n")
        self.rcpts.append(addr)
        tarpit = self.env.number("TARPITCOUNT", 0)
        if tarpit and count >= tarpit:
            await self.flush()
            await asyncio.sleep(self.env.number("TARPITDELAY", 5))
        self.reply(b"250 ok\r\n")

    # --- DATA -------------------------------------------------------------------------
    def protocol(self):
        comp = "compressed " if self.compressed else ""
        if not self.tls:
            return f"{comp}SMTP"
        obj = self.writer.get_extra_info("ssl_object")
        version, cipher = obj.version(), obj.cipher()[0]
        cert = obj.getpeercert(binary_form=True)
        finger = "no certificate presented"
        if cert:
            import hashlib
            finger = "SHA256:" + hashlib.sha256(cert).hexdigest()
        return f"{version} {cipher} fingerprint={finger} encrypted {comp}SMTP"

    async def smtp_dataz(self, arg):
        if not self.c.dataz:
            self.reply(R_UNIMPL)
            return
        self.compressed = True
        try:
            await self.smtp_data(arg)
        finally:
            self.compressed = False

    async def smtp_data(self, arg):
        if not self.seenmail:
            return await self.reject(R_WANTMAIL)
        if not self.rcpts:
            return await self.reject(R_WANTRCPT)
        self.seenmail = False
        self.reply(R_GOAHEAD)
        await self.flush()
        head = b"".join(self.rbl_headers) + received_header(
            self.protocol(), self.local, self.remoteip, self.remotehost,
            self.authuser_info(), self.fakehelo, self.mailfrom, self.rcpts[0])
        body, decoder = await self.read_body()
        if decoder.looping:
            return await self.reject(R_LOOP)
        if decoder.too_big(self.databytes):
            return await self.reject(R_SIZE)
        if self.c.signatures and self.env.flag("REJECTEXEC") and self.s.exec_check(body, self.c.signatures):
            return await self.reject(R_EXEC)
        try:
            result = await self.s.submit(head + body, self.mailfrom, self.rcpts, self.queue_env(),
                                         self.env.get("QMAILQUEUE"))
        except OSError:
            return self.reply(R_QQT)
        # the queue's own answers keep the session under SMTP550DISCONNECT, as in qmail-smtpd.c
        if result.startswith("K"):
            self.reply(f"250 ok {int(time.time())} qp {os.getpid()} by {self.c.me}\r\n".encode())
        elif result.startswith("D"):
            self.reply(b"554 " + result[1:].encode() + b"\r\n")
        else:
            self.reply(b"451 " + result[1:].encode() + b"\r\n")

    def queue_env(self):
        """What qmail-smtpd exports to a $QMAILQUEUE program."""
        env = {}
        if self.relayclient is not None:
            env["RELAYCLIENT"] = self.relayclient
        if self.authuser:
            env["SMTPAUTHUSER"] = (self.env.get("AUTHPREPEND") or "") + self.authuser
        return env

    def authuser_info(self):
        if self.authuser:
            return (self.env.get("AUTHPREPEND") or "") + self.authuser
        return self.remoteinfo

    async def read_body(self):
        """Read until the terminating dot; returns (message bytes with LF line ends, decoder state).

        DATAZ sends the dot-stuffed message as one zlib stream; the inflating decoder has the
        same interface. Socket reads stay small so one compressed chunk cannot inflate to much.
        """
        decoder = _zdata.ZDataDecoder() if self.compressed else _parser.DataDecoder()
        chunks = []
        while decoder.status == _parser.MORE:
            try:
                data = await asyncio.wait_for(self.reader.read(16384 if self.compressed else 65536),
                                              self.timeout)
            except asyncio.TimeoutError:
                self.reply(R_TIMEOUT)
                raise Closed("timeout in DATA")
            if not data:
                raise Closed("client closed in DATA")
            chunks.append(decoder.feed(data))
            if decoder.status == _parser.ERR_BARE_LF:
                self.reply(R_STRAYLF)
                raise Closed("bare LF")
            if decoder.status == _parser.ERR_LINE_LONG:
                self.reply(R_LONGLINE)
                raise Closed("long header line")
            if self.compressed and decoder.status == _zdata.ERR_ZLIB:
                self.reply(decoder.reply())
                raise Closed("DATAZ stream broken")
        if decoder.rest:
            # pipelined commands after the final dot go back in front of the stream's buffer
            self.reader._buffer[:0] = decoder.rest
        return b"".join(chunks), decoder

    # --- AUTH -------------------------------------------------------------------------
    async def smtp_auth(self, arg):
        if not self.auth_enabled:
            self.reply(R_UNIMPL)
            return
        if self.authuser:
            return await self.reject(R_AUTHAGAIN)
        if self.auth_needs_tls and not self.tls:
            return await self.reject(R_NEEDTLS)
        mech, _, initial = arg.partition(b" ")
        initial = initial.lstrip(b" ")
        mech = mech.lower()
        try:
            if initial == b"*" and mech in (b"login", b"plain"):
                raise _Abort()
            if mech == b"login":
                user = initial or await self.auth_prompt(b"334 VXNlcm5hbWU6\r\n")
                password = await self.auth_prompt(b"334 UGFzc3dvcmQ6\r\n")
                user, password = base64.b64decode(user, validate=True), base64.b64decode(password, validate=True)
            elif mech == b"plain":
                blob = base64.b64decode(initial or await self.auth_prompt(b"334 \r\n"), validate=True)
                parts = blob.split(b"\0")  # [authzid] NUL authcid NUL password, which ends at a NUL
                if len(parts) < 3:
                    return await self.auth_refused(R_AUTHBAD)
                user, password = parts[1], parts[2]
            else:
                return await self.reject(R_AUTHTYPE)
        except _Abort:
            return await self.auth_refused(R_AUTHABORT)
        except ValueError:
            return await self.auth_refused(R_AUTHBAD)
        kind, name = await self.s.authenticate(user.decode("utf-8", "surrogateescape"),
                                               password.decode("utf-8", "surrogateescape"))
        if kind == "K":
            self.authuser = name
            self.reply(R_AUTHOK)
            return
        await self.auth_refused(R_AUTHFAIL if kind == "D" else R_AUTHTEMP)

    async def auth_refused(self, line):
        """Every 4xx/5xx result of the exchange, as qmail-smtpd sends auth_close()'s: after 1 s, then 4 s more."""
        await self.flush()
        await asyncio.sleep(AUTH_FAIL_DELAY)
        self.reply(line)
        await self.flush()
        await asyncio.sleep(AUTH_FAIL_EXTRA)
        if self.errdisconnect:
            raise Closed("auth failure")

    async def auth_prompt(self, prompt):
        self.reply(prompt)
        line = await self.readline()
        if line == b"*":
            raise _Abort()
        return line

    # --- STARTTLS ---------------------------------------------------------------------
    async def smtp_starttls(self, arg):
        if not self.tlscert or self.tls:
            self.reply(R_UNIMPL)
            return
        if arg:
            self.reply(R_TLSPARAM)
            return
        try:
            ctx = self.s.tls_context(self.c, self.tlscert)
        except (OSError, ssl.SSLError):
            self.reply(R_TLSCTX)
            return
        self.reply(R_TLSREADY)
        await self.flush()
        self.reader._buffer.clear()  # the plaintext-injection fix: drop anything pipelined after STARTTLS
        try:
            await asyncio.wait_for(self.writer.start_tls(ctx), self.timeout)
        except (asyncio.TimeoutError, ssl.SSLError, ConnectionError) as e:
            raise Closed(f"TLS handshake failed: {e}")
        self.tls = True
        self.seenmail = False
        self.helo(self.remotehost)


class _Abort(Exception):
    pass
