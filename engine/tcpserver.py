"""tcpserver's role for the master's preforked listeners (SMTP, QMTP, QMQP), and the qmail-smtpd program.

For each service NAME (smtp, qmtp, qmqp) the master binds the sockets listed in
control/NAMElisten (`ip:port` lines, IPv6 as `[addr]:port`) before it drops
privileges, and preforks control/NAMEworkers workers (default 2) running as
qmaild. Every worker accepts on every socket of its service and carries
many sessions on one asyncio loop. Per connection, like tcpserver: the
total (control/NAMEconcurrency, tcpserver's -c, default 40) and per-client
(control/NAMEperip, default 0 = no limit) limits, shared by the workers
(engine.connlimit); the tcprules in control/NAMErules, compiled to
control/NAMErules.cdb when the text is newer and re-read when the cdb
changes; the UCSPI variables TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST,
TCPREMOTEIP, TCPREMOTEPORT, TCPREMOTEHOST (PTR lookup through the system
resolver, /etc/hosts included) and the rule's settings (RELAYCLIENT,
RCPTCHECK, SMTPAUTH, ...) become the session's environment.

`qmail-smtpd` (main) serves one connection on fd 0/1 under an external
tcpserver, reading the same variables from its environment.
"""

import asyncio
import fcntl
import os
import socket
import stat
import sys

from engine import conf, control, pbscheck, smtppolicy, tcprules
from engine.arbiter import log
from engine.connlimit import ConnLimits
from engine.qmqpd import Session as QmqpSession
from engine.qmtpd import Session as QmtpSession
from engine.smtpd import R_CONTROLS, Session as SmtpSession
from engine.smtpservices import Services

SESSIONS = {"smtp": SmtpSession, "qmtp": QmtpSession, "qmqp": QmqpSession}

PTR_TIMEOUT = 2.0


def parse_listen(spec):
    """`127.0.0.1:25` or `[::1]:25` -> (family, host, port)."""
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]:")
        return socket.AF_INET6, host, int(port)
    host, _, port = spec.rpartition(":")
    return socket.AF_INET, host, int(port)


def bind_listeners(home, service):
    """The master binds every control/<service>listen address (as root for port 25) before forking."""
    socks = []
    for spec in control.read_list(f"{service}listen", [], home):
        family, host, port = parse_listen(spec)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(1024)
        s.setblocking(False)
        socks.append(s)
    return socks


class Rules:
    """control/<service>rules(.cdb): compiled when the text is newer, re-opened when the cdb changes."""

    def __init__(self, home, service):
        self.text = control.path(f"{service}rules", home)
        self.cdb_path = control.path(f"{service}rules.cdb", home)
        self.reader, self.stamp = None, None

    def refresh(self):
        try:
            text_mtime = os.stat(self.text).st_mtime_ns
        except FileNotFoundError:
            text_mtime = None
        try:
            cdb_mtime = os.stat(self.cdb_path).st_mtime_ns
        except FileNotFoundError:
            cdb_mtime = None
        if text_mtime is not None and (cdb_mtime is None or text_mtime > cdb_mtime):
            self.compile()
            cdb_mtime = os.stat(self.cdb_path).st_mtime_ns
        if cdb_mtime != self.stamp:
            from engine import cdb
            self.reader = cdb.Cdb(self.cdb_path) if cdb_mtime is not None else None
            self.stamp = cdb_mtime

    def compile(self):
        lock = os.open(self.text, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(self.text, "rb") as f:
                tcprules.compile_rules(f.read(), self.cdb_path, self.cdb_path + f".tmp{os.getpid()}")
        except tcprules.RuleError as e:
            log(f"alert: {self.text}: {e}; keeping the old rules")
        except OSError as e:  # a worker running as qmaild cannot write control/: the master compiles on HUP
            log(f"alert: {self.text}: cannot compile to {self.cdb_path}: {e.strerror}; keeping the old rules "
                f"until qmail-start gets a HUP")
        finally:
            os.close(lock)

    def decide(self, ip, host):
        self.refresh()
        if self.reader is None:
            return tcprules.Decision()
        return tcprules.lookup(self.reader, ip, host)


async def remote_host(ip):
    """TCPREMOTEHOST: the PTR name of the client, or None (tcpserver leaves it unset then)."""
    loop = asyncio.get_running_loop()
    try:
        host, _ = await asyncio.wait_for(loop.getnameinfo((ip, 0), socket.NI_NAMEREQD), PTR_TIMEOUT)
        return host
    except (OSError, asyncio.TimeoutError):
        return None


class Worker:
    def __init__(self, home, service, index, listeners, limits):
        self.home, self.service, self.index = home, service, index
        self.listeners, self.limits = listeners, limits
        self.session_class = SESSIONS[service]
        self.cache = smtppolicy.ControlCache(home)
        self.rules = Rules(home, service)
        self.services = Services(home)
        self.sessions = set()

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername")
        sockname = writer.get_extra_info("sockname")
        ip = peer[0]
        if self.limits is not None and not self.limits.acquire(self.index, ip):
            writer.close()
            return
        try:
            await self.serve(reader, writer, ip, peer[1], sockname)
        except (ConnectionError, OSError):
            pass
        except Exception as e:  # a bug ends this session only, never the worker's others
            log(f"alert: {self.service} session from {ip}: {type(e).__name__}: {e}")
        finally:
            writer.close()  # whatever happened, the client is not left waiting for a greeting
            if self.limits is not None:
                self.limits.release(self.index, ip)

    async def serve(self, reader, writer, ip, port, sockname):
        host = await remote_host(ip)
        decision = self.rules.decide(ip, host)
        if not decision.allow:
            writer.close()
            return
        try:
            controls = self.cache.get()
        except (control.ControlError, OSError):
            if self.service == "smtp":  # QMTP and QMQP clients get no SMTP text, only the closed connection
                writer.write(R_CONTROLS)
            writer.close()
            return
        env = {"TCPREMOTEIP": ip, "TCPREMOTEPORT": str(port), "TCPLOCALIP": sockname[0],
               "TCPLOCALPORT": str(sockname[1]), "TCPLOCALHOST": controls.me, "PROTO": "TCP"}
        if host:
            env["TCPREMOTEHOST"] = host
        env.update(decision.env)
        if self.service == "smtp" and "RELAYCLIENT" not in env and pbscheck.enabled(self.home):
            # POP-before-SMTP, what `pbscheck qmail-smtpd` does under tcpserver
            env.update(await asyncio.get_running_loop().run_in_executor(None, pbscheck.relay_env, env, self.home))
        await self.session_class(reader, writer, env, controls, self.services).run()

    async def main(self):
        servers = [await asyncio.start_server(self.handle, sock=s, limit=1 << 20) for s in self.listeners]
        await asyncio.gather(*(s.serve_forever() for s in servers))


def compile_rules(home, service):
    """Bring control/<service>rules.cdb up to date with the text (the master does it as root)."""
    Rules(home, service).refresh()


def run_worker(home, service, index, listeners, limits):
    """Arbiter target for one listener worker."""
    asyncio.run(Worker(home, service, index, listeners, limits).main())
    return 0


def pool_size(home, service):
    return max(1, min(MAX_WORKERS, control.read_int(f"{service}workers", 2, home)))


MAX_WORKERS = 64  # rows in the shared limits table: a HUP may grow a pool up to this


def limits_for(home, service):
    """The shared ConnLimits of a service, with a row for every worker a HUP may start."""
    return ConnLimits(MAX_WORKERS,
                      control.read_int(f"{service}concurrency", 40, home),
                      control.read_int(f"{service}perip", 0, home))


async def stdio_streams():
    """Streams on fd 0/1: the socket tcpserver hands us, or two pipes (`sendmail -bs`)."""
    loop = asyncio.get_running_loop()
    if stat.S_ISSOCK(os.fstat(0).st_mode):
        # the server side of an accepted connection (not open_connection's client side), so STARTTLS
        # upgrades it as a TLS server
        reader = asyncio.StreamReader(limit=1 << 20)
        connected = loop.create_future()
        protocol = asyncio.StreamReaderProtocol(reader, lambda r, w: connected.set_result(w))
        await loop.connect_accepted_socket(lambda: protocol, sock=socket.socket(fileno=os.dup(0)))
        return reader, await connected
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(0), "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(os.dup(1), "wb", 0))
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def serve_stdio(home):
    """One session on fd 0/1 (the connection tcpserver hands us), environment from tcpserver."""
    reader, writer = await stdio_streams()
    controls = smtppolicy.Controls(home)
    await SmtpSession(reader, writer, dict(os.environ), controls, Services(home)).run()


def main(argv=None):
    home = conf.qmailhome()
    try:
        smtppolicy.Controls(home)
    except (control.ControlError, OSError):
        sys.stdout.buffer.write(R_CONTROLS)
        sys.stdout.flush()
        return 1
    asyncio.run(serve_stdio(home))
    return 0


if __name__ == "__main__":
    sys.exit(main())
