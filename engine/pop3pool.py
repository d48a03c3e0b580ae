"""The master's POP3 service: `tcpserver qmail-popup auth_pop qmail-pop3d` as a preforked pool.

For control/pop3listen (`ip:port` lines, port 110 in production; IPv6 as
`[addr]:port`) the master binds the sockets and starts control/pop3workers
workers (default 2), with control/pop3concurrency, control/pop3perip and
control/pop3rules(.cdb) exactly as for SMTP (engine.tcpserver). Each worker
carries many authorization dialogues on one asyncio loop — qmail-popup's
part, engine.popup.Dialogue, greeting with control/me as the hostname.
On PASS/APOP it forks one child for that connection, which does auth_pop's
part with engine.checkpassword (LDAP, then passwd; accountStatus; the
password) and then qmail-pop3d's (engine.pop3d) on the same socket:

* qmail's least-privilege split: the worker stays root only so that the
  child can become the user — the child drops to the entry's qmailUID /
  qmailGID (never root) before it touches HOME or the Maildir; a session
  for another cluster host is relayed to mailHost:110 as qmaild/nofiles.
* The worker waits for the child (a pidfd on the loop) and, like
  qmail-popup, turns its exit code into the -ERR line (`-ERR authorization
  failed` for 3, ...), then closes the connection.
* A single-user instance (the master not root, or the queue not owned by
  qmailq) has one user: the session runs as the instance's owner, as its
  deliveries do, whatever qmailUID the entry names.

qmail-pop3d's Maildir argument is qmail-start's default delivery when that
is a Maildir (ends with `/`), else `./Maildir/`; $MAILDIR from the entry
wins as in the chain.
"""

import asyncio
import os
import signal

from engine import checkpassword as cp
from engine import authpop, control, pbsadd, pbscheck, pop3d, popup
from engine.arbiter import log
from engine.pop3io import TIMEOUT

SERVICE = "pop3"
PROGRAM = "qmail-popup"
DEFAULT_MAILDIR = "./Maildir/"


def maildir_argument(aliasempty):
    return aliasempty if aliasempty and aliasempty.endswith("/") else DEFAULT_MAILDIR


def register_login(env, home):
    """POP-before-SMTP: what `auth_pop -d pbsadd` does, when control/pbsservers lists a pbsdbd."""
    if "NOPBS" in env or not pbscheck.enabled(home):
        return
    try:
        pbsadd.register({k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
                         for k, v in env.items()}, home)
    except pbsadd.Refused as e:
        log(f"warning: {PROGRAM}: pbsadd {e}")


def session(fd, pending, user, password, env, home, maildir, separate):
    """The forked child: auth_pop then qmail-pop3d on the socket `fd`; returns the exit code."""
    try:
        settings = cp.Settings.load(home)
        creds = cp.authenticate(user.decode("utf-8", "surrogateescape"), password, settings)
        if creds.forwarder:
            register_login(env, home)  # before relaying, so the whole cluster knows the client
            if separate:
                cp.drop_privileges(*cp.forwarding_ids())
            sock = authpop.forward_login(creds.forwarder, user, password)
            authpop.relay(fd, fd, sock)
            return 0
        if separate:
            cp.drop_privileges(creds.uid, creds.gid)
        cp.apply_env(env, creds.env())
        cp.prepare_home(creds, maildir, settings.dirmaker)
        register_login(env, home)
    except cp.AuthError as e:
        if e.code != cp.BADPASS:
            log(f"warning: {PROGRAM}: login {user.decode('utf-8', 'replace')!r} refused ({e.code}): {e}")
        return e.code
    except MemoryError:
        return cp.NOMEM
    os.environ.clear()
    os.environ.update(env)
    return pop3d.serve(fd, fd, maildir, env, initial=pending)


def close_others(keep):
    """The child keeps stdio and its connection only: another client's socket held open here would
    not close when the worker ends that dialogue."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


async def wait_child(pid):
    """The wait status of `pid`, waiting on a pidfd so the loop keeps serving other dialogues."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]


class Worker:
    """One preforked POP3 worker: the dialogues of many clients, a fork per login."""

    def __init__(self, home, index, listeners, limits, maildir, separate):
        from engine.tcpserver import Rules
        self.home, self.index, self.listeners, self.limits = home, index, listeners, limits
        self.maildir, self.separate = maildir, separate
        self.rules = Rules(home, SERVICE)

    async def handle(self, reader, writer):
        peer, sockname = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        ip = peer[0]
        if self.limits is not None and not self.limits.acquire(self.index, ip):
            writer.close()
            return
        try:
            await self.serve(reader, writer, ip, peer[1], sockname)
        except (ConnectionError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        except Exception as e:  # a bug ends this dialogue only
            log(f"alert: {SERVICE} session from {ip}: {type(e).__name__}: {e}")
        finally:
            writer.close()
            if self.limits is not None:
                self.limits.release(self.index, ip)

    async def serve(self, reader, writer, ip, port, sockname):
        from engine.tcpserver import remote_host
        host = await remote_host(ip)
        decision = self.rules.decide(ip, host)
        if not decision.allow:
            return
        me = control.me(self.home) or "localhost"
        env = {**os.environ, "TCPREMOTEIP": ip, "TCPREMOTEPORT": str(port), "TCPLOCALIP": sockname[0],
               "TCPLOCALPORT": str(sockname[1]), "TCPLOCALHOST": me, "PROTO": "TCP"}
        if host:
            env["TCPREMOTEHOST"] = host
        env.update(decision.env)
        d = popup.Dialogue(me.encode("utf-8", "surrogateescape"))
        writer.write(d.greeting())
        await asyncio.wait_for(writer.drain(), TIMEOUT)
        while True:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), TIMEOUT)
            reply, action = d.handle(line[:-1])
            if reply:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), TIMEOUT)
            if action == "quit":
                return
            if action:
                _, user, password = action
                status = await self.login(writer, reader, user, password, env)
                reply = popup.exit_reply(status)
                if reply:
                    writer.write(reply)
                    await asyncio.wait_for(writer.drain(), TIMEOUT)
                return

    async def login(self, writer, reader, user, password, env):
        """Fork the session child with the socket and what the client already sent; its wait status."""
        fd = writer.get_extra_info("socket").fileno()
        writer.transport.pause_reading()  # from now on the child alone reads the client
        pending = bytes(reader._buffer)  # pipelined commands after PASS belong to qmail-pop3d
        pid = os.fork()
        if pid == 0:
            code = 111
            try:
                conn = os.dup(fd)
                close_others(conn)
                os.set_blocking(conn, True)
                code = session(conn, pending, user, password, dict(env), self.home, self.maildir,
                               self.separate)
            except Exception as e:  # a bug ends this session (-ERR temporary error), logged
                log(f"alert: {PROGRAM} session: {type(e).__name__}: {e}")
            finally:
                os._exit(code)
        return await wait_child(pid)

    async def main(self):
        servers = [await asyncio.start_server(self.handle, sock=s, limit=1 << 16) for s in self.listeners]
        await asyncio.gather(*(s.serve_forever() for s in servers))


def run_worker(home, index, listeners, limits, aliasempty, separate):
    """Arbiter target for one POP3 worker."""
    # every control file is read per connection or per login, so a HUP has nothing to reload here and
    # must not cut the dialogues in progress
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    asyncio.run(Worker(home, index, listeners, limits, maildir_argument(aliasempty), separate).main())
    return 0


def role(home, aliasempty, separate):
    """The arbiter Role for control/pop3listen, or None when the file lists no address.

    The workers stay root (when the master is) so a login can become its user."""
    from engine import tcpserver
    from engine.arbiter import Role
    socks = tcpserver.bind_listeners(home, SERVICE)
    if not socks:
        return None
    limits = tcpserver.limits_for(home, SERVICE)
    log(f"status: {PROGRAM} listening on " + " ".join(control.read_list(f"{SERVICE}listen", [], home)))
    return Role(PROGRAM,
                lambda i: run_worker(home, i, socks, limits, aliasempty, separate),
                count=lambda: tcpserver.pool_size(home, SERVICE),
                on_exit=lambda i: limits.reset_row(i),
                socket_fds=tuple(s.fileno() for s in socks))
