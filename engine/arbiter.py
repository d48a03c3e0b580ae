"""The prefork arbiter under qmail-start: forks, watches and restarts the queue's processes.

qmail-start starts qmail-send, qmail-lspawn, qmail-rspawn, qmail-clean and
qmail-todo once, each under its own uid, and the set dies together. Here a
long-lived arbiter keeps every role's processes at the wanted number, like
gunicorn's arbiter: signal handlers only queue the signal; the main loop
reaps children, dispatches signals by name and respawns what is missing,
with a back-off for children that die young and without respawning a role
whose child reports BOOT_ERROR.

Signals: TERM/INT = stop taking work, let children finish, exit;
HUP = every child re-reads its control files (and pool sizes are
recomputed); ALRM = forwarded to the roles that retry (qmail-send).
"""

import ctypes
import ctypes.util
import errno
import os
import pwd
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

BOOT_ERROR = 3            # a child's exit code for "cannot start": do not respawn it
YOUNG = 10.0              # a child dying before this many seconds counts towards the back-off
BACKOFF_MAX = 60.0
GRACE = 60.0              # seconds children get to finish after TERM before SIGKILL
TICK = 1.0


@dataclass
class Role:
    name: str                       # qmail program name, used in logs
    target: Callable[[int], int]    # body run in the child with its index; returns the exit code
    count: Callable[[], int] = lambda: 1   # wanted number of children; re-evaluated on HUP
    user: str | None = None         # qmail user to run as when the arbiter runs as root
    alarm: bool = False             # receives SIGALRM ("retry everything now")
    on_exit: Callable[[int], None] | None = None  # called in the arbiter when a child of this role ends
    close_fds: tuple = ()           # inherited descriptors this role must not keep (other roles' sockets)
    socket_fds: tuple = ()          # listening sockets this role serves


def log(text):
    """One line on stdout for multilog/journald, like the qmail daemons' log lines."""
    try:
        os.write(1, f"{text}\n".encode("utf-8", "surrogateescape"))
    except OSError:
        pass


_PR_SET_NAME = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def set_process_name(name):
    """The kernel's name for this process (ps -o comm, top, killall): qmail's program name.

    Every role is a fork of one Python process, so without this ps shows the arbiter's
    name for all of them; the kernel keeps at most 15 bytes."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def drop_privileges(user):
    """Become `user` (its primary group only, as qmail's prot_gid/prot_uid) when running as root."""
    if user is None or os.getuid() != 0:
        return
    pw = pwd.getpwnam(user)
    os.setgroups([pw.pw_gid])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


class Arbiter:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD)

    def __init__(self, roles, grace=GRACE, on_hup=None):
        self.roles = {r.name: r for r in roles}
        self.on_hup = on_hup      # the master's own re-reading on SIGHUP, before the children's
        self.grace = grace
        self.children = {}        # pid -> (role name, index, start time)
        self.wanted = {}          # role name -> count
        self.failures = {}        # (role name, index) -> consecutive young deaths
        self.not_before = {}      # (role name, index) -> monotonic time of the next spawn
        self.given_up = set()     # role names that reported BOOT_ERROR
        self.pending = []         # signals queued by the handlers
        self.stopping = False

    # --- signal plumbing: handlers only record -------------------------------------------
    def install_signals(self):
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum, frame):
        self.pending.append(signum)

    def _wait(self, timeout):
        try:
            select.select([self._wake_r], [], [], timeout)
            os.read(self._wake_r, 4096)
        except (InterruptedError, BlockingIOError):
            pass

    # --- main loop ---------------------------------------------------------------------
    def run(self):
        self.install_signals()
        self.recount()
        log(f"status: arbiter {os.getpid()} started: " +
            " ".join(f"{n}={c}" for n, c in self.wanted.items()))
        while True:
            self.reap()
            while self.pending:
                self.dispatch(self.pending.pop(0))
            if self.stopping:
                return self.finish()
            self.spawn_missing()
            self._wait(TICK)

    def dispatch(self, signum):
        handler = {signal.SIGTERM: self.handle_term, signal.SIGINT: self.handle_term,
                   signal.SIGHUP: self.handle_hup, signal.SIGALRM: self.handle_alrm,
                   signal.SIGCHLD: lambda: None}[signum]
        handler()

    def handle_term(self):
        if not self.stopping:
            log("status: exiting: waiting for deliveries in progress")
        self.stopping = True

    def handle_hup(self):
        if self.on_hup is not None:
            self.on_hup()
        self.recount()
        self.signal_children(signal.SIGHUP, lambda role: True)
        self.retire_extra()

    def handle_alrm(self):
        self.signal_children(signal.SIGALRM, lambda role: role.alarm)

    # --- children ----------------------------------------------------------------------
    def recount(self):
        for name, role in self.roles.items():
            self.wanted[name] = max(0, int(role.count()))

    def signal_children(self, sig, which):
        for pid, (name, _, _) in list(self.children.items()):
            if which(self.roles[name]):
                self._kill(pid, sig)

    def retire_extra(self):
        """After a HUP lowered a pool size, stop the highest-numbered children gracefully."""
        for pid, (name, index, _) in list(self.children.items()):
            if index >= self.wanted[name]:
                self._kill(pid, signal.SIGTERM)

    def spawn_missing(self):
        now = time.monotonic()
        running = {(name, index) for name, index, _ in self.children.values()}
        for name, count in self.wanted.items():
            if name in self.given_up:
                continue
            for index in range(count):
                key = (name, index)
                if key not in running and self.not_before.get(key, 0) <= now:
                    self.spawn(self.roles[name], index)

    def spawn(self, role, index):
        pid = os.fork()
        if pid:
            self.children[pid] = (role.name, index, time.monotonic())
            return
        code = 111
        try:
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # Ctrl-C reaches the whole process group; only the arbiter decides how to stop
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for fd in role.close_fds:
                os.close(fd)
            set_process_name(role.name)
            drop_privileges(role.user)
            code = role.target(index)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 111
        except BaseException as e:  # the child must never return into the arbiter's loop
            log(f"alert: {role.name} {index}: {type(e).__name__}: {e}")
        finally:
            sys.stdout.flush()
            os._exit(code if isinstance(code, int) else 0)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry:
                self.child_exited(pid, *entry, status)

    def child_exited(self, pid, name, index, started, status):
        key = (name, index)
        if self.roles[name].on_exit is not None:
            self.roles[name].on_exit(index)
        lived = time.monotonic() - started
        if os.WIFSIGNALED(status):
            how = f"killed by signal {os.WTERMSIG(status)}"
        else:
            how = f"exited {os.WEXITSTATUS(status)}"
        if self.stopping or index >= self.wanted.get(name, 0):
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_ERROR:
            self.given_up.add(name)
            log(f"alert: {name} {index} (pid {pid}) could not start; not restarting it")
            return
        fails = self.failures.get(key, 0) + 1 if lived < YOUNG else 0
        self.failures[key] = fails
        delay = min(BACKOFF_MAX, 2 ** (fails - 1)) if fails else 0
        self.not_before[key] = time.monotonic() + delay
        log(f"alert: {name} {index} (pid {pid}) {how}; restarting in {delay:g} s")

    def _kill(self, pid, sig):
        try:
            os.kill(pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise

    def finish(self):
        """TERM every child, give them `grace` seconds, then KILL what is left."""
        self.signal_children(signal.SIGTERM, lambda role: True)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            self._wait(0.05)
        for pid in list(self.children):
            log(f"alert: pid {pid} did not stop within {self.grace:g} s; killing it")
            self._kill(pid, signal.SIGKILL)
        while self.children:
            self.reap()
            time.sleep(0.01)
        log("status: exiting")
        return 0
