"""qmail-todo: preprocesses new messages from todo/ (qmail-todo.c, EXTERNAL_TODO).

For each message qmail-queue left in todo/, every recipient is rewritten
(envnoathost for a missing domain, percenthack, locals / locals.cdb, then
virtualdomains with their prepend) and sorted into the local or remote
channel. info/<id> (the sender; its mtime is the message's birth),
local/<id> and remote/<id> (`T<addr>\\0` records) are written, made
durable together, then todo/ and intd/ are removed by qmail-clean and
qmail-send is told about the message.

Durability with few file operations: a whole batch of messages is written
first and then flushed with one syncfs(2) of the queue's filesystem
(falling back to an fsync per file where syncfs is unavailable), so the
per-message cost is the creates, not a flush each.

Talks to qmail-send over the send socket: `DL<id>` / `DR<id>` / `DB<id>` /
`DX<id>` NUL-terminated (local, remote, both, no recipients); qmail-send
answers single bytes `H` (re-read control files) or `X` (exit).
Log lines (`new msg`, `info msg`) are written to stdout directly.
"""

import ctypes
import ctypes.util
import os
import select
import socket
import time

from engine import cdb, compiled, control, hier
from engine.arbiter import log

_scan = compiled.load("queuescan")
RESCAN = 1500  # qmail-todo rescans todo/ at least every 25 minutes
BATCH = 256

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(fd):
    """syncfs(2) of the file system holding fd; False where the call is unavailable or fails."""
    return _syncfs is not None and _syncfs(fd) == 0


def sync_files(queue_fd, paths):
    """Make every written file durable: one syncfs, else fsync each."""
    if syncfs(queue_fd):
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Rewriter:
    """qmail-todo's rewrite(): which channel a recipient goes to, and how it is written there."""

    def __init__(self, home):
        self.home = home
        self.reload()

    def reload(self):
        me = control.me(self.home)
        self.envnoathost = (control.read_line("envnoathost", None, self.home) or me or "envnoathost").encode()
        self.percenthack = control.ConstMap(control.read_list("percenthack", [], self.home))
        self.locals = control.ConstMap(control.read_list("locals", [me] if me else [], self.home))
        self.vdoms = control.ConstMap(control.read_list("virtualdomains", [], self.home), values=True)
        self.locals_cdb = control.path("locals.cdb", self.home)

    def is_local(self, domain):
        """locals.cdb when it exists (read on every lookup, no HUP needed), else control/locals."""
        try:
            return cdb.contains(self.locals_cdb, domain.lower())
        except FileNotFoundError:
            return domain.decode("utf-8", "surrogateescape") in self.locals

    def _in(self, cmap, key):
        return key.decode("utf-8", "surrogateescape") in cmap

    def rewrite(self, recipient):
        """(b"L" or b"R", the address as written to the channel file)."""
        addr = recipient
        at = addr.rfind(b"@")
        if at < 0:
            addr += b"@" + self.envnoathost
            at = len(recipient)
        while self._in(self.percenthack, addr[at + 1:]):
            pct = addr.rfind(b"%", 0, at)
            if pct < 0:
                break
            addr = addr[:pct] + b"@" + addr[pct + 1:at]
            at = pct
        at = addr.rfind(b"@")
        if self.is_local(addr[at + 1:]):
            return b"L", addr
        for i in range(len(addr) + 1):
            if i == 0 or i == at + 1 or i == len(addr) or (i > at and addr[i:i + 1] == b"."):
                prepend = self.vdoms.get(addr[i:].decode("utf-8", "surrogateescape"))
                if prepend is not None:
                    if not prepend:
                        break
                    return b"L", prepend.encode("utf-8", "surrogateescape") + b"-" + addr
        return b"R", addr


def parse_envelope(data):
    """todo/ file -> (uid, pid, sender, [recipients]); ValueError when it is not qmail's format.

    Records are NUL-terminated: u<uid>, p<pid>, F<sender>, then T<recipient>...
    """
    if not data.endswith(b"\0"):
        raise ValueError("envelope not terminated")
    uid = pid = b"?"
    sender, recipients = None, []
    for f in data[:-1].split(b"\0"):
        kind, value = f[:1], f[1:]
        if kind == b"u":
            uid = value
        elif kind == b"p":
            pid = value
        elif kind == b"F":
            sender = value
        elif kind == b"T":
            recipients.append(value)
        elif f:
            raise ValueError(f"unknown record {kind!r}")
    if sender is None:
        raise ValueError("no sender")
    return uid, pid, sender, recipients


class Todo:
    def __init__(self, home, send_path, clean_path):
        self.home = home
        self.queue = os.path.join(home, "queue")
        self.rewriter = Rewriter(home)
        self.send = self._connect(send_path)
        self.clean = self._connect(clean_path)
        self.queue_fd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)

    @staticmethod
    def _connect(path):
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                time.sleep(0.1)
        raise ConnectionError(f"unable to connect to {path}")

    def pending(self):
        """Ids waiting in todo/ (compiled scan: this runs over every queued message)."""
        return _scan.scan_split(self.queue, "todo")

    def write_channel_files(self, msgid):
        """info/local/remote for one message; returns (letter, paths written) or None if unreadable."""
        todo = hier.queue_file(self.queue, "todo", msgid)
        try:
            with open(todo, "rb") as f:
                uid, pid, sender, recipients = parse_envelope(f.read())
        except FileNotFoundError:
            return None
        except ValueError as e:
            log(f"warning: {todo}: malformed envelope ({e}); leaving it for the administrator")
            return None
        channels = {b"L": bytearray(), b"R": bytearray()}
        for r in recipients:
            ch, addr = self.rewriter.rewrite(r)
            channels[ch] += b"T" + addr + b"\0"
        paths = []
        for kind, data in (("info", b"F" + sender + b"\0"), ("local", channels[b"L"]),
                           ("remote", channels[b"R"])):
            if kind != "info" and not data:
                continue
            path = hier.queue_file(self.queue, kind, msgid)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(data))
            finally:
                os.close(fd)
            paths.append(path)
        letter = {(True, True): b"B", (True, False): b"L", (False, True): b"R",
                  (False, False): b"X"}[(bool(channels[b"L"]), bool(channels[b"R"]))]
        size = os.path.getsize(hier.queue_file(self.queue, "mess", msgid))
        log(f"new msg {msgid}")
        log(f"info msg {msgid}: bytes {size} from <{_safe(sender)}> qp {_safe(pid)} uid {_safe(uid)}")
        return letter, paths

    def clean_todo(self, ids):
        if not ids:
            return
        self.clean.sendall(b"".join(f"todo/{i}".encode() + b"\0" for i in ids))
        got = b""
        while len(got) < len(ids):
            chunk = self.clean.recv(len(ids) - len(got))
            if not chunk:
                raise ConnectionError("lost qmail-clean connection")
            got += chunk
        for i, answer in zip(ids, got):
            if answer != ord("+"):
                log(f"warning: qmail-clean unable to clean up todo/{i}")

    def process(self, ids):
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            done, paths = [], []
            for msgid in batch:
                result = self.write_channel_files(msgid)
                if result:
                    done.append((msgid, result[0]))
                    paths += result[1]
            sync_files(self.queue_fd, paths)
            self.clean_todo([m for m, _ in done])
            self.send.sendall(b"".join(b"D" + letter + str(m).encode() + b"\0" for m, letter in done))

    def run(self):
        trigger = os.open(os.path.join(self.queue, "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
        keep_open = os.open(os.path.join(self.queue, "lock", "trigger"), os.O_WRONLY | os.O_NONBLOCK)
        last_scan = 0.0
        while True:
            now = time.monotonic()
            self.process(self.pending())
            last_scan = now
            ready, _, _ = select.select([trigger, self.send], [], [], max(0.0, last_scan + RESCAN - now))
            if trigger in ready:
                os.read(trigger, 4096)
            if self.send in ready:
                cmd = self.send.recv(64)
                if not cmd or b"X" in cmd:
                    os.close(keep_open)
                    return 0
                if b"H" in cmd:
                    self.rewriter.reload()


def _safe(b):
    """qmail's logsafe: newline becomes '/', other unprintable bytes '_'."""
    out = []
    for ch in b:
        out.append("/" if ch == 10 else chr(ch) if 33 <= ch <= 126 and ch != 37 else "_")
    return "".join(out)


def run_todo(home, send_path, clean_path):
    """Arbiter target."""
    return Todo(home, send_path, clean_path).run()
