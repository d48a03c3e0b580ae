"""Remote delivery over SMTP and QMTP: qmail-remote, as an asyncio client carrying many deliveries at once.

`deliver(host, sender, recipients, message)` does what one run of
`qmail-remote host sender recip...` does and returns its report: one record
per recipient that reached RCPT (b"r" accepted, b"h<text>" permanent,
b"s<text>" temporary) and the final b"K..."/b"Z..."/b"D..." text, byte for
byte as qmail-ldap's qmail-remote.c prints them. `main()` is the program:
message on fd 0, NUL-terminated reports on stdout, exit 0 (qmail-rspawn,
engine.rspawn, merges them into one report).

Routing (qmail-remote.c): control/smtproutes `domain:relay[:port][ user password]`
looked up by the exact host, then each `.suffix`, then the empty key; an
empty relay means the normal MX lookup; `[1.2.3.4]` and bare IPv4 literals
need no DNS. MX hosts are tried in preference order, random among equal
preferences, falling back to the host's own address when it has no MX. MX
entries at or above the best preference that points at this machine are
skipped (none left: "#5.4.6 ... isn't in my control/locals file"). Hosts that
timed out twice recently are skipped (engine.tcpto, queue/lock/tcpto). MX
preferences 12800-13055 with pref%16 == 1 are tried with QMTP first.

SMTP: greeting 5xx = permanent, 4xx = next MX; the control/smtpclustercookie
at the end of the greeting means a loop within the cluster; EHLO helohost,
HELO when EHLO is refused; STARTTLS whenever offered (no certificate or name
verification, control/remotecert as client certificate, tlsremoteciphers);
AUTH LOGIN when the route has credentials; SIZE= when advertised; DATAZ
(zlib-compressed DATA) when advertised. The message goes out as qmail-remote
sends it: LF becomes CRLF, a leading dot is doubled, a final partial line is
refused (#5.6.2), 8-bit data and long lines are sent unchanged (no
8BITMIME parameter, as qmail-remote).

Configuration: control/helohost (default me), timeoutconnect (60),
timeoutremote (120), smtproutes, outgoingip, smtpclustercookie, remotecert,
tlsremoteciphers, tlsdheparams. Test/admin knobs (environment):
QMAIL_DNS_SERVER=ip[:port][,ip[:port]...] replaces /etc/resolv.conf's
nameservers; QMAIL_PORT_SMTP / QMAIL_PORT_QMTP replace ports 25 / 209 (qmail's
PORT_SMTP / PORT_QMTP build options).

Differences from qmail-ldap: a host with no A record is reached over its
AAAA records (qmail-ldap is IPv4 only); such addresses are not kept in
lock/tcpto, whose records hold IPv4 addresses. A QMTP `Z` answer gives an
`s` (temporary) recipient record where qmail-ldap wrote `h`. A TLS handshake
that fails after `220` ends with "ZTLS not available: connect failed: ..."
(the spec's text). The list of this host's addresses is refreshed every 30 s
rather than once per process.
"""

import asyncio
import base64
import hashlib
import ipaddress
import mmap
import os
import ssl
import stat
import sys
import traceback
import zlib
from dataclasses import dataclass, field


from engine import conf, control, qdns, quote, tcpto

HUGESMTPTEXT = 5000
COOKIE_MAX = 32
CHUNK = 65536

# libtls cipher keywords (tls_config_set_ciphers) as OpenSSL cipher strings
TLS_CIPHER_KEYWORDS = {
    "secure": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20",
    "default": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20",
    "compat": "HIGH:!aNULL",
    "legacy": "HIGH:MEDIUM:!aNULL",
    "insecure": "ALL:!aNULL:!eNULL",
    "all": "ALL:!aNULL:!eNULL",
}
TLS_DHEPARAMS = ("none", "auto", "legacy")

# The texts of qmail-remote.c, letter first, each ending in LF.
TEMP_NOIP = b"Zinvalid ipaddr in control/outgoingip (#4.3.0)\n"
TEMP_NOMEM = b"ZOut of memory. (#4.3.0)\n"
TEMP_OSERR = b"ZSystem resources temporarily unavailable. (#4.3.0)\n"
TEMP_NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
TEMP_READ = b"ZUnable to read message. (#4.3.0)\n"
TEMP_DNS = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"
TEMP_CHDIR = b"ZUnable to switch to home directory. (#4.3.0)\n"
TEMP_CONTROL = b"ZUnable to read control files. (#4.3.0)\n"
TEMP_PROTO = b"Zrecipient did not talk proper QMTP (#4.3.0)\n"
PERM_PARTIALLINE = b"DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
PERM_USAGE = b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n"
PERM_NOMX = b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
PERM_AMBIGMX = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
                b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")
PERM_LOOPING = b"DSorry. Message is looping within cluster, giving up. (#5.4.6)\n"


def perm_dns(host):
    return b"DSorry, I couldn't find any host named " + outsafe(host.encode("utf-8", "surrogateescape")) + b". (#5.1.2)\n"


def outsafe(b):
    """qmail-remote's outsafe: bytes outside 33..126 become '?'."""
    return bytes(c if 33 <= c <= 126 else 63 for c in b)


class Final(Exception):
    """Ends the delivery with this message report (qmail-remote's zerodie)."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


class _Dropped(Exception):
    """The connection died, timed out or failed in TLS while talking to the partner."""

    def __init__(self, tls_error=None, timed_out=False):
        super().__init__(tls_error)
        self.tls_error = tls_error
        self.timed_out = timed_out


@dataclass
class RemoteResult:
    """What qmail-remote printed: per-recipient records (maybe fewer than recipients) and the message report."""

    records: list = field(default_factory=list)
    final: bytes = b""

    def output(self):
        """The bytes qmail-remote writes to stdout: every report NUL-terminated."""
        return b"".join(r + b"\0" for r in self.records) + self.final + b"\0"


# ---------------------------------------------------------------------------------------------- controls

@dataclass(frozen=True)
class Controls:
    """qmail-remote's control files and port knobs, read once (getcontrols)."""

    helohost: bytes
    cookie: bytes
    timeout: int
    timeoutconnect: int
    routes: control.ConstMap
    outgoingip: str
    remotecert: str
    tlsciphers: str
    tlsdheparams: str
    smtp_port: int = 25
    qmtp_port: int = 209


def load_controls(home=None):
    """Read the controls; raises Final with qmail-remote's text when they cannot be read."""
    home = home or conf.qmailhome()
    try:
        helohost = control.read_line("helohost", None, home)
        if helohost is None:
            helohost = control.me(home)
        if helohost is None:
            raise Final(TEMP_CONTROL)
        outgoingip = control.read_line("outgoingip", "0.0.0.0", home)
        controls = Controls(
            helohost=helohost.encode("utf-8", "surrogateescape"),
            cookie=control.read_line("smtpclustercookie", "", home).encode("utf-8", "surrogateescape")[:COOKIE_MAX],
            timeout=control.read_int("timeoutremote", 120, home),
            timeoutconnect=control.read_int("timeoutconnect", 60, home),
            routes=control.ConstMap(control.read_list("smtproutes", [], home), values=True),
            outgoingip=outgoingip,
            remotecert=control.read_line("remotecert", "", home),
            tlsciphers=control.read_line("tlsremoteciphers", "compat", home),
            tlsdheparams=control.read_line("tlsdheparams", "none", home),
            smtp_port=int(os.environ.get("QMAIL_PORT_SMTP") or 25),
            qmtp_port=int(os.environ.get("QMAIL_PORT_QMTP") or 209),
        )
    except control.ControlError as e:
        raise Final(TEMP_CONTROL) from e
    if not _is_ipv4(outgoingip):
        raise Final(TEMP_NOIP)
    return controls


def _is_ipv4(s):
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- routing

@dataclass
class Route:
    host: str
    port: int
    relay: bool
    auth_login: bytes = b""
    auth_passwd: bytes = b""


def find_route(host, controls):
    """smtproutes lookup: exact host, then each .suffix, then the empty key; empty relay = MX."""
    relay = None
    for i in range(len(host) + 1):
        if i == 0 or i == len(host) or host[i] == ".":
            relay = controls.routes.get(host[i:])
            if relay is not None:
                break
    if not relay:
        return Route(host, controls.smtp_port, False)
    target, _, creds = relay.partition(" ")
    user, _, password = creds.partition(" ")
    name, colon, port = target.partition(":")
    digits = port[:len(port) - len(port.lstrip("0123456789"))]
    route = Route(name, int(digits) if colon and digits else controls.smtp_port, True)
    if user and password:
        route.auth_login = base64.b64encode(user.encode("utf-8", "surrogateescape"))
        route.auth_passwd = base64.b64encode(password.encode("utf-8", "surrogateescape"))
    return route


def addrmangle(addr):
    """qmail-remote's addrmangle: quote the box of box@host when needed (quote.c); no @ = unchanged."""
    j = addr.rfind(b"@")
    if j < 0:
        return addr
    return quote.quote_box(addr[:j]) + addr[j:]


def xtext(b):
    """RFC 3461 xtext as xtext.c: bytes outside 33..126, '=' and '+' become +XX (lower-case hex)."""
    return b"".join(b"+%02x" % c if c < 33 or c > 126 or c in b"=+" else bytes([c]) for c in b)


# ---------------------------------------------------------------------------------------------- the session

class _Session:
    """One delivery: what qmail-remote's globals hold, per delivery so many can run in one process."""

    def __init__(self, host, sender, recipients, message, home, resolver, controls):
        self.host = host
        self.sender = sender
        self.recipients = recipients
        self.message = message
        self.home = home
        self.resolver = resolver
        self.controls = controls
        self.records = []
        self.route = None
        self.sender_m, self.recips_m = b"", []
        self.reader = self.writer = None
        self.partner = ""
        self.smtptext = bytearray()
        self.buf = bytearray()
        self.flagcritical = False
        self.tls_info = b""
        self.ddc = None  # (total_in, total_out) after a DATAZ transfer

    # -- connection I/O with timeouts

    async def _fill(self):
        """Append what the partner sends next to the input buffer; a timeout, EOF or error drops the session."""
        try:
            async with asyncio.timeout(self.controls.timeout):
                data = await self.reader.read(4096)
        except TimeoutError as e:
            raise _Dropped(timed_out=True) from e
        except ssl.SSLError as e:
            raise _Dropped(tls_error=e.reason or str(e)) from e
        except OSError as e:
            raise _Dropped() from e
        if not data:
            raise _Dropped()
        self.buf += data

    async def get(self):
        """One byte from the partner; CR is not kept in smtptext (qmail-remote's get)."""
        if not self.buf:
            await self._fill()
        ch = self.buf[0]
        del self.buf[0]
        if ch != 13 and len(self.smtptext) < HUGESMTPTEXT:
            self.smtptext.append(ch)
        return ch

    async def smtpcode(self):
        """Read a (multi-line) reply into smtptext; the code is its first three characters."""
        while (parsed := parse_reply(self.buf)) is None:
            await self._fill()
        code, used = parsed
        self.smtptext = bytearray(self.buf[:used].replace(b"\r", b"")[:HUGESMTPTEXT])
        del self.buf[:used]
        return code

    async def send(self, data):
        """Write; wait (with the timeout) only while the kernel does not take the data at once."""
        try:
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.controls.timeout):
                    await self.writer.drain()
        except TimeoutError as e:
            raise _Dropped(timed_out=True) from e
        except ssl.SSLError as e:
            raise _Dropped(tls_error=e.reason or str(e)) from e
        except OSError as e:
            raise _Dropped() from e

    def dropped(self, err):
        if err.tls_error is not None or (err.timed_out and self.tls_info):
            reason = b"timeout " if err.timed_out else err.tls_error.encode("utf-8", "replace") + b" "
            return Final(b"ZConnected to " + self.partner.encode() + b" but TLS connection died: " + reason
                         + (b"Possible duplicate! " if self.flagcritical else b"") + b"(#4.4.2)\n")
        return Final(b"ZConnected to " + self.partner.encode() + b" but connection died. "
                     + (b"Possible duplicate! " if self.flagcritical else b"") + b"(#4.4.2)\n")

    def outsmtptext(self):
        if not self.smtptext:
            return b""
        return b"Remote host said: " + bytes(self.smtptext).replace(b"\0", b"?")

    def quit(self, prepend, append):
        """Send QUIT without waiting for the answer and end with prepend+partner+append."""
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(b"QUIT\r\n")
        text = prepend + self.partner.encode() + append + b".\n"
        if self.ddc and prepend == b"K":  # qmail-remote reports the saving only for an accepted message
            total_in, total_out = self.ddc
            saved = 100 - int(100.0 * total_out / total_in)
            text += b"DDC saved " + (b"-" if saved < 0 else b" ") + str(abs(saved)).encode() + b" percent.\n"
        text += self.tls_info + self.outsmtptext()
        return Final(text)

    # -- the delivery

    async def run(self):
        """The message report when no host could be reached; every other ending raises Final."""
        if not os.path.isdir(self.home):
            raise Final(TEMP_CHDIR)
        if self.controls is None:
            self.controls = load_controls(self.home)
        self.route = route = find_route(self.host, self.controls)
        self.sender_m = addrmangle(self.sender)
        self.recips_m = [addrmangle(r) for r in self.recipients]
        resolver = self.resolver or qdns.make_resolver()
        status, ips = await (qdns.dns_ip(resolver, route.host) if route.relay else qdns.dns_mxip(resolver, route.host))
        if status == qdns.DNS_SOFT or (status == 1 and not ips):
            raise Final(TEMP_DNS)
        if status == qdns.DNS_HARD:
            raise Final(perm_dns(route.host))
        if not ips:
            raise Final(PERM_NOMX)
        prefme = 300000 if route.relay else self.my_preference(ips)
        candidates = [(ip, pref) for ip, pref in ips if pref < prefme]
        if not candidates:
            raise Final(PERM_AMBIGMX)
        for ip, pref in candidates:
            await self.try_host(ip, pref)
        return TEMP_NOCONN

    @staticmethod
    def my_preference(ips):
        """The best preference at which this host itself is listed (100000: not listed)."""
        try:
            ipme = qdns.local_ips()
        except OSError as e:
            raise Final(TEMP_OSERR) from e
        return min((pref for ip, pref in ips if ip in ipme), default=100000)

    async def try_host(self, ip, pref):
        """Connect to one address (QMTP first for QMTP preferences); returns when the next one should be tried."""
        dead, was_there = tcpto.check(ip, self.home)
        if dead:
            return
        if qmtp_priority(pref):
            try:
                await self.connect(ip, self.controls.qmtp_port)
            except OSError:
                pass
            else:
                tcpto.report(ip, False, was_there, self.home)
                self.partner = ip
                await self.talk(self.qmtp)
        try:
            await self.connect(ip, self.route.port)
        except OSError as e:
            tcpto.report(ip, isinstance(e, TimeoutError), was_there, self.home)
            return
        tcpto.report(ip, False, was_there, self.home)
        self.partner = ip
        await self.talk(self.smtp)
        self.close()

    async def connect(self, ip, port):
        """Open a connection (bound to control/outgoingip for IPv4) with timeoutconnect; a fresh input buffer."""
        self.buf = bytearray()
        local = None
        if ":" not in ip and self.controls.outgoingip != "0.0.0.0":
            local = (self.controls.outgoingip, 0)
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(ip, port, local_addr=local), self.controls.timeoutconnect)
        except asyncio.TimeoutError as e:
            raise TimeoutError(f"connect to {ip} timed out") from e

    async def talk(self, protocol):
        try:
            await protocol()
        except _Dropped as e:
            raise self.dropped(e) from e

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def command(self, line):
        await self.send(line)
        return await self.smtpcode()

    async def smtp(self):
        c = self.controls
        code = await self.smtpcode()
        if code >= 500:
            raise self.quit(b"DConnected to ", b" but greeting failed")
        if code >= 400:
            return
        if code != 220:
            raise self.quit(b"ZConnected to ", b" but greeting failed")
        if c.cookie and len(self.smtptext) > len(c.cookie) + 1 and \
                self.smtptext[-len(c.cookie) - 1:-1] == c.cookie:
            raise Final(PERM_LOOPING)
        code = await self.command(b"EHLO " + c.helohost + b"\r\n")
        if code != 250:
            code = await self.command(b"HELO " + c.helohost + b"\r\n")
            if code >= 500:
                raise self.quit(b"DConnected to ", b" but my name was rejected")
            if code >= 400:
                return
            if code != 250:
                raise self.quit(b"ZConnected to ", b" but my name was rejected")
        ext = parse_extensions(self.smtptext)
        if "STARTTLS" in ext:
            ext |= await self.starttls()
        await self.auth(ext)
        await self.mail(ext)
        await self.rcpts()
        await self.data(ext)

    async def starttls(self):
        """STARTTLS as qmail-ldap's libtls client; returns the extensions of the EHLO after the handshake."""
        if await self.command(b"STARTTLS\r\n") != 220:
            return set()
        context = self.tls_context()
        hostname = self.route.host if not qdns.ip_literal(self.route.host) and self.route.host else None
        try:
            await asyncio.wait_for(
                self.writer.start_tls(context, server_hostname=hostname, ssl_handshake_timeout=self.controls.timeout),
                self.controls.timeout + 1)
        except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as e:
            reason = "timeout" if isinstance(e, asyncio.TimeoutError) else (getattr(e, "reason", None) or str(e))
            raise Final(b"ZTLS not available: connect failed: " + str(reason).encode("utf-8", "replace") + b"\n") from e
        self.tls_info = tls_description(self.writer.get_extra_info("ssl_object"))
        if await self.command(b"EHLO " + self.controls.helohost + b"\r\n") != 250:
            raise self.quit(b"ZTLS connected to ", b" but my name was rejected")
        return parse_extensions(self.smtptext) - {"STARTTLS"}

    def tls_context(self):
        c = self.controls
        if c.tlsdheparams not in TLS_DHEPARAMS:  # a server-side setting; libtls still validates it
            raise Final(b"ZTLS not available: error initializing ssl: invalid dhe param '"
                        + c.tlsdheparams.encode("utf-8", "surrogateescape") + b"'\n")
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.set_ciphers(TLS_CIPHER_KEYWORDS.get(c.tlsciphers.lower(), c.tlsciphers))
            if c.remotecert:
                context.load_cert_chain(os.path.join(self.home, c.remotecert))
        except (ssl.SSLError, OSError) as e:
            reason = getattr(e, "reason", None) or e.strerror or str(e)
            raise Final(b"ZTLS not available: error initializing ssl: " + str(reason).encode("utf-8", "replace") + b"\n") from e
        return context

    async def auth(self, ext):
        r = self.route
        if not (r.auth_login and r.auth_passwd):
            return
        if "AUTH LOGIN" not in ext:
            raise self.quit(b"ZConnected to ", b" but no SMTP AUTH support detected but needed.")
        for line, what in ((b"AUTH LOGIN", b"AUTH LOGIN"), (r.auth_login, b"username"), (r.auth_passwd, b"password")):
            code = await self.command(line + b"\r\n")
            if code >= 500:
                raise self.quit(b"DConnected to ", b" but authentication was rejected (" + what + b")")
            if code >= 400:
                raise self.quit(b"ZConnected to ", b" but authentication was rejected (" + what + b")")

    async def mail(self, ext):
        line = b"MAIL FROM:<" + self.sender_m + b">"
        if "SIZE" in ext:
            size = len(self.message)
            line += b" SIZE=" + str(size + (size >> 5) + 1).encode()
        if self.route.auth_login and self.route.auth_passwd:
            line += b" AUTH=<" + xtext(self.sender_m) + b">"
        code = await self.command(line + b"\r\n")
        if code >= 500:
            raise self.quit(b"DConnected to ", b" but sender was rejected")
        if code >= 400:
            raise self.quit(b"ZConnected to ", b" but sender was rejected")

    async def rcpts(self):
        accepted = False
        for recip in self.recips_m:
            code = await self.command(b"RCPT TO:<" + recip + b">\r\n")
            if code >= 400:
                letter = b"h" if code >= 500 else b"s"
                self.records.append(letter + self.partner.encode() + b" does not like recipient.\n" + self.outsmtptext())
            else:
                self.records.append(b"r")
                accepted = True
        if not accepted:
            raise self.quit(b"DGiving up on ", b"")

    async def data(self, ext):
        compress = "DATAZ" in ext
        verb = b"DATAZ" if compress else b"DATA"
        code = await self.command(verb + b"\r\n")
        if code >= 500:
            raise self.quit(b"D", b" failed on " + verb + b" command")
        if code >= 400:
            raise self.quit(b"Z", b" failed on " + verb + b" command")
        await self.blast(zlib.compressobj() if compress else None)
        code = await self.smtpcode()
        self.flagcritical = False
        if code >= 500:
            raise self.quit(b"D", b" failed after I sent the message")
        if code >= 400:
            raise self.quit(b"Z", b" failed after I sent the message")
        raise self.quit(b"K", b" accepted message")

    async def blast(self, compressor):
        """Send the message dot-stuffed with CRLF line ends, then the final dot (compressed for DATAZ)."""
        message = self.message
        if len(message) and message[-1:] != b"\n":
            raise Final(PERM_PARTIALLINE)
        total_in = total_out = 0
        at_line_start = True
        for start in range(0, len(message), CHUNK):
            chunk = bytes(message[start:start + CHUNK])
            data = chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
            if at_line_start and chunk[:1] == b".":
                data = b"." + data
            at_line_start = chunk[-1:] == b"\n"
            total_in += len(data)
            if compressor:
                data = compressor.compress(data)
                total_out += len(data)
            if data:
                await self.send(data)
        self.flagcritical = True
        end = b".\r\n"
        if compressor:
            total_in += len(end)
            end = compressor.compress(end) + compressor.flush()
            total_out += len(end)
            self.ddc = (total_in, total_out)
        await self.send(end)

    async def qmtp(self):
        """QMTP (serialqmtp): one message, per-recipient netstring answers."""
        await self.send(qmtp_request(self.message, self.sender_m, self.recips_m))
        accepted = False
        for _ in self.recips_m:
            letter = await self.qmtp_response()
            if letter == b"K":
                self.records.append(b"r")
                accepted = True
            else:
                code = b"h" if letter == b"D" else b"s"  # qmail-ldap also says h for Z: a bug
                self.records.append(code + self.partner.encode() + b"  does not like recipient.\n" + self.outsmtptext())
        if not accepted:
            raise Final(b"DGiving up on " + self.partner.encode() + b".\n" + self.outsmtptext())
        raise Final(b"K" + self.partner.encode() + b" accepted message.\n" + self.outsmtptext())

    async def qmtp_response(self):
        length = 0
        while (ch := await self.get()) != 58:  # ':'
            if length > 200000000 or not 48 <= ch <= 57:
                raise Final(TEMP_PROTO)
            length = 10 * length + ch - 48
        if not length:
            raise Final(TEMP_PROTO)
        letter = bytes([await self.get()])
        if letter not in (b"K", b"Z", b"D"):
            raise Final(TEMP_PROTO)
        self.smtptext = bytearray(b"qmtp: ")
        for _ in range(length - 1):
            await self.get()
        if await self.get() != 44:  # ','
            raise Final(TEMP_PROTO)
        self.smtptext[-1:] = b"\n"
        return letter


def parse_reply(data):
    """qmail-remote's smtpcode() over buffered input: (code, bytes used) or None while incomplete.

    The code is the first three characters; a line whose fourth character is '-' continues the reply,
    and the next line's first three characters are skipped unread, exactly as the C loop does."""
    n = len(data)
    if n < 4:
        return None
    code = ((data[0] - 48) * 100 + (data[1] - 48) * 10 + (data[2] - 48)) % 2**64
    i = 3
    while True:
        if i >= n:
            return None
        ch = data[i]
        if ch != 45:  # '-'
            break
        end = data.find(b"\n", i)
        if end < 0:
            return None
        i = end + 4
    end = data.find(b"\n", i)
    return None if end < 0 else (code, end + 1)


def qmtp_priority(pref):
    return 12800 <= pref <= 13055 and pref % 16 == 1


def qmtp_request(message, sender, recipients):
    """netstring(LF-text message) netstring(sender) netstring(recipient netstrings)."""
    def netstring(b):
        return str(len(b)).encode() + b":" + b + b","
    body = b"\n" + bytes(message)
    return netstring(body) + netstring(sender) + netstring(b"".join(netstring(r) for r in recipients))


def parse_extensions(text):
    """The EHLO keywords qmail-remote looks for at column 4 of each reply line: SIZE, DATAZ, STARTTLS,
    and AUTH followed anywhere later by a LOGIN word (offsets checked against the whole text, as qmail)."""
    text = bytes(text).upper()
    n = len(text)
    found = set()
    i = 0
    while i < n:
        if i + 8 < n and text.startswith(b"SIZE", i + 4):
            found.add("SIZE")
        elif i + 9 < n and text.startswith(b"DATAZ", i + 4):
            found.add("DATAZ")
        elif i + 12 < n and text.startswith(b"STARTTLS", i + 4):
            found.add("STARTTLS")
        elif i + 9 < n and text.startswith(b"AUTH ", i + 4):
            j = text.find(b" LOGIN", i + 4)
            if j >= 0 and j + 6 < n:
                found.add("AUTH LOGIN")
        nl = text.find(b"\n", i)
        if nl < 0:
            break
        i = nl + 1
    return found


def tls_description(sslobj):
    """The line qmail-ldap's quit() adds after a TLS session: protocol, cipher, peer certificate hash."""
    text = b"STARTTLS proto=" + (sslobj.version() or "").encode() + b"; cipher=" + sslobj.cipher()[0].encode()
    cert = sslobj.getpeercert(binary_form=True)
    if cert:
        text += b"; fingerprint=SHA256:" + hashlib.sha256(cert).hexdigest().encode()
    return text + b";\n"


async def deliver(host, sender, recipients, message, *, home=None, resolver=None, controls=None):
    """Deliver `message` (bytes or mmap, LF line ends) for `recipients` at `host`: one qmail-remote run.

    host is the recipients' domain (str); sender and recipients are bytes.
    `controls` (from load_controls) and `resolver` (dnspython async) may be shared by many deliveries.
    Never raises for delivery problems: they are in the RemoteResult, as qmail-remote prints them."""
    session = _Session(host, sender, list(recipients), message, home or conf.qmailhome(), resolver, controls)
    try:
        final = await session.run()
    except Final as f:
        final = f.text
    except MemoryError:
        final = TEMP_NOMEM
    finally:
        session.close()
    return RemoteResult(session.records, final)


async def deliver_output(host, sender, recipients, message, **kw):
    """deliver(), returning the bytes qmail-remote would print (what qmail-rspawn reads)."""
    return (await deliver(host, sender, recipients, message, **kw)).output()


def _read_message(fd):
    """The message on fd 0: mapped when it is a regular file (the queue's mess file), else read."""
    st = os.fstat(fd)
    if st.st_size and stat.S_ISREG(st.st_mode):
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    chunks = []
    while chunk := os.read(fd, CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def main(argv=None):
    """qmail-remote host sender recip...: reports on stdout, always exit 0."""
    argv = sys.argv if argv is None else argv
    args = [os.fsencode(a) for a in argv[1:]]
    if len(args) < 3:
        result = RemoteResult([], PERM_USAGE)
    else:
        try:
            message = _read_message(0)
        except OSError:
            result = RemoteResult([], TEMP_READ)
        else:
            try:
                result = asyncio.run(deliver(os.fsdecode(args[0]), args[1], args[2:], message))
            except Exception:  # a bug: exit 111 so qmail-rspawn defers instead of bouncing
                traceback.print_exc()
                return 111
    out = result.output()
    try:
        while out:
            out = out[os.write(1, out):]
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
