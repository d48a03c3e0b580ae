"""qmail-todo: preprocesses new messages from todo/ (qmail-todo.c, EXTERNAL_TODO).

For each message qmail-queue left in todo/, every recipient is rewritten
(envnoathost for a missing domain, percenthack, locals / locals.cdb, then
virtualdomains with their prepend) and sorted into the local or remote
channel. info/<id> (the sender; its mtime is the message's birth),
local/<id> and remote/<id> (`T<addr>\\0` records) are written, made
durable together, then todo/ and intd/ are removed by qmail-clean and
qmail-send is told about the message.

qmail-queue announces each message on lock/trigger with its id
(`<id>\\0`), so qmail-todo reads that one envelope instead of listing the
23 todo/ subdirectories for every message (0.3 ms of CPU each); anything
else on the trigger, a pipe drained full, start-up and every 25 minutes
still mean a full scan.

Durability with few file operations: a whole batch of messages is written
first and then flushed with one syncfs(2) of the queue's filesystem
(falling back to an fsync per file where syncfs is unavailable), so the
per-message cost is the creates, not a flush each.

First delivery straight from todo/: a message whose recipients are all
local is not preprocessed into info/ and local/ at all. qmail-todo sends
`F<id>` and qmail-send delivers from the envelope in todo/, which stays as
the durable record until every recipient has succeeded (then todo/ and
mess/ go); only when a delivery defers or fails does qmail-send write info/
and local/ (marking the recipients already delivered) and remove todo/.
That saves four file operations and a flush per message in the common
case; a crash meanwhile repeats the deliveries (at least once, as qmail).

Talks to qmail-send over the send socket: `DL<id>` / `DR<id>` / `DB<id>` /
`DX<id>` NUL-terminated (local, remote, both, no recipients) and `F<id>`
(deliver from todo/); qmail-send answers single bytes `H` (re-read
control files) or `X` (exit), and `R<id>` once it had todo/<id> of an `F`
removed: mess/ names are inode numbers, so the id may come back with a new
message, which must not be taken for the one already handed over.
Log lines (`new msg`, `info msg`) are written to stdout directly.
"""

import fcntl
import os
import select
import socket
import time

from engine import cdb, compiled, control, hier
from engine.durable import sync_files
from engine.arbiter import log

_scan = compiled.load("queuescan")
RESCAN = 1500  # qmail-todo rescans todo/ at least every 25 minutes
BATCH = 256

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


def records(addresses, done=()):
    """A channel file's contents: `T<addr>\\0` per recipient, `D` for those in `done` (their indexes)."""
    return b"".join((b"D" if i in done else b"T") + a + b"\0" for i, a in enumerate(addresses))


def write_channel_files(queue, msgid, sender, local, remote, birth=None):
    """Create info/<id> (mtime `birth` when given) and the non-empty local/ and remote/ files.

    Returns the paths written; the caller makes them durable before todo/<id> goes."""
    paths = []
    for kind, data in (("info", b"F" + sender + b"\0"), ("local", local), ("remote", remote)):
        if kind != "info" and not data:
            continue
        path = hier.queue_file(queue, kind, msgid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if kind == "info" and birth is not None:
                os.utime(fd, (birth, birth))
        finally:
            os.close(fd)
        paths.append(path)
    return paths


class Trigger:
    """lock/trigger's reading end: which new messages qmail-queue announced, or "rescan todo/".

    Our qmail-queue writes `<id>\\0` after the rename into todo/; any other content (qmail's
    single byte, an administrator's echo) asks for a full scan, and so does a drain as large
    as the pipe itself, since a writer that met a full pipe could not add its id."""

    def __init__(self, queue):
        path = os.path.join(queue, "lock", "trigger")
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # a writer of our own keeps the fifo from reading EOF whenever no qmail-queue has it open
        self.keep_open = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            self.capacity = fcntl.fcntl(self.fd, fcntl.F_GETPIPE_SZ)
        except OSError:
            self.capacity = 65536
        self.partial = b""

    def drain(self):
        """(ids announced, whether todo/ must be scanned) from everything waiting in the pipe."""
        data, total = self.partial, 0
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
            total += len(chunk)
        *tokens, self.partial = data.split(b"\0")
        ids, scan = [], total >= self.capacity - 4096
        for t in tokens:
            if t.isdigit():
                ids.append(int(t))
            else:
                scan = True
        return ids, scan

    def close(self):
        os.close(self.keep_open)
        os.close(self.fd)


class Todo:
    def __init__(self, home, send_path, clean_path):
        self.home = home
        self.queue = os.path.join(home, "queue")
        self.rewriter = Rewriter(home)
        self.send = self._connect(send_path)
        self.clean = self._connect(clean_path)
        self.queue_fd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)
        self.handed = set()  # ids qmail-send delivers from todo/: not to be preprocessed again
        self.release = []    # ids qmail-send has removed from todo/ (its R<id>), to forget
        self.send_buf = b""

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

    def read_envelope(self, msgid):
        """(uid, pid, sender, {b"L": [addr], b"R": [addr]}) of todo/<id>, or None when unreadable."""
        todo = hier.queue_file(self.queue, "todo", msgid)
        try:
            with open(todo, "rb") as f:
                uid, pid, sender, recipients = parse_envelope(f.read())
        except FileNotFoundError:
            return None
        except ValueError as e:
            log(f"warning: {todo}: malformed envelope ({e}); leaving it for the administrator")
            return None
        channels = {b"L": [], b"R": []}
        for r in recipients:
            ch, addr = self.rewriter.rewrite(r)
            channels[ch].append(addr)
        return uid, pid, sender, channels

    def log_new(self, msgid, uid, pid, sender):
        size = os.path.getsize(hier.queue_file(self.queue, "mess", msgid))
        log(f"new msg {msgid}")
        log(f"info msg {msgid}: bytes {size} from <{_safe(sender)}> qp {_safe(pid)} uid {_safe(uid)}")

    def preprocess(self, msgid):
        """b"F" (deliver from todo/), or (letter, channel files written), or None when unreadable."""
        envelope = self.read_envelope(msgid)
        if envelope is None:
            return None
        uid, pid, sender, channels = envelope
        self.log_new(msgid, uid, pid, sender)
        if channels[b"L"] and not channels[b"R"]:
            return b"F"
        paths = write_channel_files(self.queue, msgid, sender,
                                    records(channels[b"L"]), records(channels[b"R"]))
        letter = {(True, True): b"B", (True, False): b"L", (False, True): b"R",
                  (False, False): b"X"}[(bool(channels[b"L"]), bool(channels[b"R"]))]
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
        """Preprocess the ids not yet handed to qmail-send for delivery from todo/."""
        ids = [i for i in ids if i not in self.handed]
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            done, paths, direct = [], [], []
            for msgid in batch:
                result = self.preprocess(msgid)
                if result == b"F":
                    direct.append(msgid)
                elif result:
                    done.append((msgid, result[0]))
                    paths += result[1]
            if paths:
                sync_files(self.queue_fd, paths)
            self.clean_todo([m for m, _ in done])
            self.handed.update(direct)
            self.send.sendall(b"".join(b"D" + letter + str(m).encode() + b"\0" for m, letter in done)
                              + b"".join(b"F" + str(m).encode() + b"\0" for m in direct))

    def run(self):
        trigger = Trigger(self.queue)
        last_scan = 0.0
        scan, ids = True, []
        while True:
            now = time.monotonic()
            if scan:
                self.process(self.pending())
                last_scan = now
            elif ids:
                self.process(list(dict.fromkeys(ids)))
            ready, _, _ = select.select([trigger.fd, self.send], [], [], max(0.0, last_scan + RESCAN - now))
            scan, ids = not ready, []
            if trigger.fd in ready:
                ids, scan = trigger.drain()
            if self.send in ready:
                data = self.send.recv(4096)
                self.send_buf += data
                if not data or not self.from_send():
                    trigger.close()
                    return 0
                ids += self.released()

    def from_send(self):
        """Read qmail-send's `H`, `X` and `R<id>\\0` (todo/<id> removed); False on X."""
        buf = self.send_buf
        while buf:
            if buf[:1] == b"X":
                return False
            if buf[:1] == b"H":
                self.rewriter.reload()
                buf = buf[1:]
            elif buf[:1] == b"R":
                end = buf.find(b"\0")
                if end < 0:
                    break
                if buf[1:end].isdigit():
                    self.release.append(int(buf[1:end]))
                buf = buf[end + 1:]
            else:
                buf = buf[1:]
        self.send_buf = buf
        return True

    def released(self):
        """Forget ids qmail-send has finished with; those whose id is already reused by a new message
        (mess/ names are inode numbers) are preprocessed at once."""
        ids, self.release = self.release, []
        self.handed.difference_update(ids)
        return [i for i in ids if os.path.exists(hier.queue_file(self.queue, "todo", i))]


def _safe(b):
    """qmail's logsafe: newline becomes '/', other unprintable bytes '_'."""
    out = []
    for ch in b:
        out.append("/" if ch == 10 else chr(ch) if 33 <= ch <= 126 and ch != 37 else "_")
    return "".join(out)


def run_todo(home, send_path, clean_path):
    """Arbiter target."""
    return Todo(home, send_path, clean_path).run()
