"""qmail-send: the scheduler (qmail-send.c).

Keeps, per channel (local, remote), a priority queue of messages by next
attempt. When a message's turn comes its channel file (local/<id> or
remote/<id>) is read and every recipient still marked `T` is handed to the
channel's pool over the spawn protocol (engine.spawn), up to the channel's
concurrency. Results: K marks the record `D` (delivered), Z leaves it for
the next attempt at birth + (floor(sqrt(age)) + skip)² (skip 10 local, 20
remote), D appends a failure report to bounce/<id> and marks it done. A
message older than queuelifetime turns a deferral into a failure. When no
channel file is left, the bounce (if any) is injected, info/ is removed and
qmail-clean removes mess/ and intd/.

New messages come from qmail-todo (`DL<id>`, ... on the send socket); at
start info/ is scanned so nothing preprocessed is forgotten. `F<id>` is a
message with only local recipients to deliver straight from its envelope in
todo/ (engine/todo.py): it lives in memory until every recipient has
succeeded, then qmail-clean removes todo/ and mess/; the first deferral or
failure writes info/ and local/ (durably, delivered recipients marked D)
before todo/ goes, and from then on it is an ordinary queued message. Signals: HUP
re-reads bouncemaxbytes, custombouncetext, locals, virtualdomains and (a
difference from qmail) concurrencylocal/concurrencyremote, passes `H` to
qmail-todo and the 0xBEEF message to the local pool; ALRM retries every
message now; TERM stops starting deliveries and exits when none is running.

Test knob: PYQMAIL_RETRY_SCALE=N divides every retry interval by N (a
documented short clock for tests; never set it in production).
"""

import collections
import concurrent.futures
import heapq
import math
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field

from engine import bounce, compiled, conf, control, hier, qq, spawn
from engine.arbiter import log
from engine.durable import fsync_path, syncfs
from engine.todo import Rewriter, _safe, parse_envelope, records, write_channel_files

_scan = compiled.load("queuescan")
LOCAL, REMOTE = 0, 1
CHANNEL_NAMES = ("local", "remote")
CHANNEL_DIRS = ("local", "remote")
CHANSKIP = (10, 20)
SLEEP_SYSFAIL = 123
OSSIFIED = 129600    # 36 hours: a mess file this old without info/ or todo/ is an orphan
CLEANUP_EVERY = 3600
DYING_TEXT = b"I'm not going to try again; this message has been in the queue too long.\n"


@dataclass
class Job:
    """One message's turn on one channel."""
    msgid: int
    channel: int
    sender: bytes
    retry: float
    dying: bool
    pending: list = field(default_factory=list)  # (offset of the T byte, recipient) not yet started
    running: int = 0
    todo: int = 0          # recipients still undelivered after this pass
    direct: list | None = None  # delivered from todo/: every (offset, recipient) of its local/ to be
    done: set = field(default_factory=set)  # offsets delivered so far, while `direct`
    birth: float = 0.0     # todo/'s mtime, info/'s when a direct job is preprocessed


@dataclass
class Delivery:
    delid: int
    job: Job
    offset: int
    recipient: bytes


class PoolConnection:
    """One connection to a pool: ready after the pool's 2-byte limit, then carries up to `capacity` slots."""

    def __init__(self, path, channel):
        self.channel = channel
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.capacity = 0
        self.inbuf = bytearray()
        self.replies = spawn.ReplyReader()
        self.slots = {}  # slot -> Delivery

    def free_slot(self):
        for s in range(self.capacity):
            if s not in self.slots:
                return s
        return None

    def feed(self, data):
        if not self.capacity:
            self.inbuf += data
            if len(self.inbuf) < 2:
                return []
            self.capacity = max(1, int.from_bytes(self.inbuf[:2], "little"))
            data = bytes(self.inbuf[2:])
        return self.replies.feed(data)


class Controls:
    def __init__(self, home):
        self.home = home
        self.read_all()

    def read_all(self):
        h = self.home
        me = control.me(h) or "me"
        self.lifetime = control.read_int("queuelifetime", 604800, h)
        bouncehost = control.read_line("bouncehost", me, h)
        dbhost = control.read_line("doublebouncehost", me, h)
        dbto = control.read_line("doublebounceto", "postmaster", h)
        self.bounce = bounce.Settings(
            bouncefrom=control.read_line("bouncefrom", "MAILER-DAEMON", h).encode(),
            bouncehost=bouncehost.encode(), doublebounce=f"{dbto}@{dbhost}".encode(),
            custom=control.read_raw("custombouncetext", b"", h),
            maxbytes=control.read_int("bouncemaxbytes", 0, h))
        self.read_concurrency()

    def read_concurrency(self):
        h = self.home
        self.concurrency = [min(conf.SPAWN, control.read_int("concurrencylocal", 10, h)),
                            min(conf.SPAWN, control.read_int("concurrencyremote", 20, h))]

    def reload(self):
        """HUP: bouncemaxbytes, custombouncetext and the concurrency limits."""
        h = self.home
        self.bounce = bounce.Settings(self.bounce.bouncefrom, self.bounce.bouncehost, self.bounce.doublebounce,
                                      control.read_raw("custombouncetext", b"", h),
                                      control.read_int("bouncemaxbytes", 0, h))
        self.read_concurrency()


class Scheduler:
    def __init__(self, home, sockets, clock=time.time):
        self.home = home
        self.queue = os.path.join(home, "queue")
        self.paths = sockets            # {"local", "remote", "clean", "send"} -> socket path or listener
        self.clock = clock
        self.scale = max(1.0, float(os.environ.get("PYQMAIL_RETRY_SCALE", "1") or 1))
        self.controls = Controls(home)
        self.rewriter = Rewriter(home)  # virtualdomains for stripping prepends in bounces
        self.pq = ([], [])              # per channel: heap of (when, msgid)
        self.queued = (set(), set())    # ids in each heap or running, to avoid duplicates
        self.done = []                  # ids whose channel files are gone
        self.reports = []               # (Delivery, letter, text) received, not yet applied
        self.syncing = None             # reports waiting for the syncfs in flight
        self.sync_thread = concurrent.futures.ThreadPoolExecutor(1, "syncfs")
        self.synced_r, self.synced_w = os.pipe()
        self.clean_waiting = collections.deque()  # (id, log line on success) sent to qmail-clean
        self.queue_fd = None
        self.conns = ([], [])
        self.jobs = {}
        self.direct = {}                # msgid -> Job delivered from todo/ (qmail-todo's F<id>)
        # direct messages whose todo/ and mess/ qmail-clean has not yet removed: an F<id> for one of
        # them comes from a restarted qmail-todo that read the old todo/ file, and taking it would
        # have qmail-clean remove mess/<id> twice, the second time a new message's (inodes are reused)
        self.removing = set()
        self.retake = set()             # of those, ids qmail-todo handed over again: new messages
        self.todo_going = set()         # ids whose todo/ qmail-clean is asked to remove
        self.delid = 0
        self.exiting = False
        self.sel = selectors.DefaultSelector()
        self.signals = []
        self.todo_conn = None
        self.todo_buf = b""

    # --- setup ------------------------------------------------------------------------
    def connect_pools(self):
        for ch, name in ((LOCAL, "local"), (REMOTE, "remote")):
            want = self.controls.concurrency[ch] if ch == LOCAL else 1
            alive = [c for c in self.conns[ch]]
            while len(alive) < want:
                try:
                    c = PoolConnection(self.paths[name], ch)
                except OSError:
                    break
                self.sel.register(c.sock, selectors.EVENT_READ, ("pool", c))
                alive.append(c)
                self.conns[ch].append(c)

    def connect_clean(self):
        self.clean = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.clean.connect(self.paths["clean"])
        self.sel.register(self.clean, selectors.EVENT_READ, ("clean", None))

    def accept_todo(self, listener):
        conn, _ = listener.accept()
        if self.todo_conn is not None:
            self.sel.unregister(self.todo_conn)
            self.todo_conn.close()
        self.todo_conn = conn
        self.sel.register(conn, selectors.EVENT_READ, ("todo", None))

    def scan_info(self):
        """pqstart(): every preprocessed message on disk gets scheduled."""
        for msgid in _scan.scan_split(self.queue, "info"):
            self.pqadd(msgid)

    def pqadd(self, msgid):
        if not os.path.exists(hier.queue_file(self.queue, "info", msgid)):
            return
        if msgid not in self.todo_going and os.path.exists(hier.queue_file(self.queue, "todo", msgid)):
            return  # qmail-todo has not finished with it
        found = False
        for ch in (LOCAL, REMOTE):
            path = hier.queue_file(self.queue, CHANNEL_DIRS[ch], msgid)
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            found = True
            if msgid not in self.queued[ch]:
                self.queued[ch].add(msgid)
                heapq.heappush(self.pq[ch], (mtime, msgid))
        if not found:
            self.done.append(msgid)

    def take_direct(self, msgid, now):
        """`F<id>` from qmail-todo: schedule a local-only message from its envelope in todo/.

        Every F is answered by one `R<id>` (send_release) once todo/<id> is gone or not ours to
        take, after which qmail-todo may take the id for a new message."""
        if msgid in self.direct or msgid in self.todo_going:
            return  # a restarted qmail-todo again: our R<id> follows when todo/ is removed
        if msgid in self.removing:
            self.retake.add(msgid)  # a new message reusing the id: take it once mess/ is gone
            return
        if msgid in self.queued[LOCAL] or msgid in self.queued[REMOTE]:
            self.send_release(msgid)
            return
        path = hier.queue_file(self.queue, "todo", msgid)
        try:
            birth = os.stat(path).st_mtime
            with open(path, "rb") as f:
                _, _, sender, recipients = parse_envelope(f.read())
        except FileNotFoundError:
            self.send_release(msgid)
            return
        except (OSError, ValueError) as e:
            log(f"warning: trouble reading {path} ({e}); leaving it for the administrator")
            return
        addrs = [self.rewriter.rewrite(r) for r in recipients]
        if any(ch != b"L" for ch, _ in addrs):  # locals changed under a HUP: preprocess it here
            channels = {b"L": [a for ch, a in addrs if ch == b"L"], b"R": [a for ch, a in addrs if ch == b"R"]}
            self.write_durably(msgid, sender, records(channels[b"L"]), records(channels[b"R"]), birth)
            self.remove_todo(msgid)
            self.pqadd(msgid)
            return
        job = Job(msgid, LOCAL, sender, self.next_retry(birth, LOCAL, now), False, direct=[], birth=birth)
        offset = 0
        for _, addr in addrs:
            job.direct.append((offset, addr))
            offset += len(addr) + 2
        job.pending = list(job.direct)
        job.todo = len(job.pending)
        self.direct[msgid] = job
        self.queued[LOCAL].add(msgid)
        heapq.heappush(self.pq[LOCAL], (birth, msgid))

    def remove_todo(self, msgid):
        """qmail-clean removes todo/<id> of a message now in info/ (or done); qmail-todo hears R<id>."""
        self.todo_going.add(msgid)
        self.ask_clean(msgid, None, "todo")

    def send_release(self, msgid):
        if self.todo_conn is not None:
            self.todo_conn.sendall(b"R" + str(msgid).encode() + b"\0")

    def write_durably(self, msgid, sender, local, remote, birth):
        """info/ and the channel files, fsynced, before qmail-clean is asked to remove todo/."""
        for path in write_channel_files(self.queue, msgid, sender, local, remote, birth):
            fsync_path(path)

    def preprocess_direct(self, job):
        """A direct job meets its first deferral or failure: from now on it lives in info/ and local/."""
        index = {offset: i for i, (offset, _) in enumerate(job.direct)}
        local = records([a for _, a in job.direct], {index[o] for o in job.done})
        self.write_durably(job.msgid, job.sender, local, b"", job.birth)
        self.remove_todo(job.msgid)
        del self.direct[job.msgid]
        job.direct = None

    # --- scheduling -------------------------------------------------------------------
    def next_retry(self, birth, ch, now):
        """birth + (floor(sqrt(age)) + skip)^2, on a clock running `scale` times faster for tests."""
        n = 0 if birth > now else math.isqrt(int((now - birth) * self.scale))
        n += CHANSKIP[ch]
        return birth + (n * n) / self.scale

    def birth_and_sender(self, msgid):
        path = hier.queue_file(self.queue, "info", msgid)
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(b"F"):
            raise ValueError("bad info file")
        return st.st_mtime, data[1:].split(b"\0", 1)[0]

    def open_job(self, ch, msgid, now):
        if ch == LOCAL and msgid in self.direct:
            return self.direct[msgid]
        path = hier.queue_file(self.queue, CHANNEL_DIRS[ch], msgid)
        try:
            birth, sender = self.birth_and_sender(msgid)
            with open(path, "rb") as f:
                data = f.read()
        except (OSError, ValueError):
            log(f"warning: trouble opening {path}; will try again later")
            heapq.heappush(self.pq[ch], (now + SLEEP_SYSFAIL / self.scale, msgid))
            return None
        job = Job(msgid, ch, sender, self.next_retry(birth, ch, now),
                  now > birth + self.controls.lifetime)
        pos = 0
        for rec in data.split(b"\0")[:-1]:
            if rec[:1] == b"T":
                job.pending.append((pos, rec[1:]))
            elif rec[:1] != b"D":
                log(f"warning: unknown record type in {path}!")
                job.pending.clear()
                break
            pos += len(rec) + 1
        job.todo = len(job.pending)
        return job

    def free_connection(self, ch):
        for c in self.conns[ch]:
            if c.capacity and len(c.slots) < c.capacity:
                return c
        return None

    def in_use(self, ch):
        return sum(len(c.slots) for c in self.conns[ch])

    def start_deliveries(self, now):
        for ch in (LOCAL, REMOTE):
            while not self.exiting and self.in_use(ch) < self.controls.concurrency[ch]:
                conn = self.free_connection(ch)
                if conn is None:
                    break
                job = self.jobs.get(ch)
                if job is None or not job.pending:
                    if not self.pq[ch] or self.pq[ch][0][0] > now:
                        break
                    _, msgid = heapq.heappop(self.pq[ch])
                    job = self.open_job(ch, msgid, now)
                    if job is None:
                        continue
                    self.jobs[ch] = job
                    if not job.pending:
                        self.close_job(job, now)
                        continue
                offset, rcpt = job.pending.pop(0)
                self.start_one(conn, job, offset, rcpt)
                if not job.pending:
                    del self.jobs[ch]

    def start_one(self, conn, job, offset, recipient):
        slot = conn.free_slot()
        self.delid += 1
        d = Delivery(self.delid, job, offset, recipient)
        conn.slots[slot] = d
        job.running += 1
        sender = bounce.owner_sender(job.sender, recipient)
        messid = f"{job.msgid % conf.SPLIT}/{job.msgid}".encode()
        conn.sock.sendall(spawn.encode_request(slot, messid, sender, recipient))
        log(f"starting delivery {d.delid}: msg {job.msgid} to {CHANNEL_NAMES[job.channel]} {_safe(recipient)}")
        self.log_status()

    def log_status(self):
        c = self.controls.concurrency
        log(f"status: local {self.in_use(LOCAL)}/{c[LOCAL]} remote {self.in_use(REMOTE)}/{c[REMOTE]}"
            + (" exitasap" if self.exiting else ""))

    def finish_one(self, d, letter, text, now):
        job = d.job
        if job.direct is not None and letter != b"K":
            self.preprocess_direct(job)
        if letter == b"Z" and job.dying:
            letter, text = b"D", text + DYING_TEXT
        if letter == b"K":
            log(f"delivery {d.delid}: success: {_safe(text)}")
            self.mark_done(job, d.offset)
        elif letter == b"Z":
            log(f"delivery {d.delid}: deferral: {_safe(text)}")
        elif letter == b"D":
            log(f"delivery {d.delid}: failure: {_safe(text)}")
            self.add_bounce(job.msgid, d.recipient, text)
            self.mark_done(job, d.offset)
        else:
            log(f"delivery {d.delid}: report mangled, will defer")
        job.running -= 1
        if not job.running and not job.pending and self.jobs.get(job.channel) is not job:
            self.close_job(job, now)
        self.log_status()

    def mark_done(self, job, offset):
        """Mark one recipient done (D), unflushed as in qmail: a lost mark means a second delivery.

        The last recipient of a job is not marked: close_job unlinks the file next, and a crash
        before that unlink repeats the delivery just as a lost mark would."""
        job.todo -= 1
        if job.direct is not None:
            job.done.add(offset)
            return
        if job.todo <= 0:
            return
        path = hier.queue_file(self.queue, CHANNEL_DIRS[job.channel], job.msgid)
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, b"D", offset)
            finally:
                os.close(fd)
        except OSError:
            log(f"warning: trouble marking {path}; message will be delivered twice!")

    def add_bounce(self, msgid, recipient, report):
        path = hier.queue_file(self.queue, "bounce", msgid)
        record = bounce.failure_record(recipient, report, self.rewriter.vdoms)
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, record)
                finally:
                    os.close(fd)
                return
            except OSError:
                log("alert: unable to append to bounce message; HELP! sleeping...")
                time.sleep(10)

    def close_job(self, job, now):
        ch = job.channel
        if job.direct is not None:  # every recipient succeeded: nothing was ever preprocessed
            del self.direct[job.msgid]
            self.queued[ch].discard(job.msgid)
            self.removing.add(job.msgid)
            log(f"end msg {job.msgid}")
            self.remove_todo(job.msgid)
            self.ask_clean(job.msgid, None)
            return
        if job.todo <= 0:
            path = hier.queue_file(self.queue, CHANNEL_DIRS[ch], job.msgid)
            try:
                os.unlink(path)
            except OSError:
                log(f"warning: unable to unlink {path}; will try again later")
                heapq.heappush(self.pq[ch], (now + SLEEP_SYSFAIL / self.scale, job.msgid))
                return
            self.queued[ch].discard(job.msgid)
            other = hier.queue_file(self.queue, CHANNEL_DIRS[1 - ch], job.msgid)
            if not os.path.exists(other):
                self.done.append(job.msgid)
            return
        heapq.heappush(self.pq[ch], (job.retry, job.msgid))

    # --- finished messages ------------------------------------------------------------
    def message_done(self, msgid):
        """messdone(): inject the bounce, remove info/, ask qmail-clean for mess/ and intd/."""
        q = self.queue
        for kind in ("local", "remote", "todo"):
            if kind == "todo" and msgid in self.todo_going:
                continue  # qmail-clean removes it before the foop/ request that follows
            if os.path.exists(hier.queue_file(q, kind, msgid)):
                return True
        if not os.path.exists(hier.queue_file(q, "info", msgid)):
            return True
        if not self.inject_bounce(msgid):
            return False
        log(f"end msg {msgid}")
        os.unlink(hier.queue_file(q, "info", msgid))
        self.ask_clean(msgid, None)
        return True

    def ask_clean(self, msgid, success_note, kind="foop"):
        """foop/<id> (or todo/<id>) to qmail-clean without waiting: answers come in order, read by on_clean."""
        self.clean.sendall(f"{kind}/{msgid}".encode() + b"\0")
        self.clean_waiting.append((kind, msgid, success_note))

    def on_clean(self):
        answers = self.clean.recv(4096)
        if not answers:
            raise ConnectionError("lost qmail-clean connection")
        for answer in answers:
            kind, msgid, success_note = self.clean_waiting.popleft()
            if answer != ord("+"):
                log(f"warning: qmail-clean unable to clean up {kind}/{msgid}")
            elif success_note:
                log(success_note)
            if kind == "todo":
                self.todo_going.discard(msgid)
                if answer == ord("+"):  # else todo/ stays, and so does qmail-todo's hold on the id
                    self.send_release(msgid)
            elif msgid in self.removing:
                self.removing.discard(msgid)
                if msgid in self.retake:
                    self.retake.discard(msgid)
                    self.take_direct(msgid, self.clock())

    def inject_bounce(self, msgid):
        path = hier.queue_file(self.queue, "bounce", msgid)
        try:
            with open(path, "rb") as f:
                records = f.read()
        except FileNotFoundError:
            return True
        _, sender = self.birth_and_sender(msgid)
        with open(hier.queue_file(self.queue, "mess", msgid), "rb") as f:
            message = f.read()
        composed = bounce.compose(sender, records, message, self.controls.bounce)
        if composed is None:
            log(f"triple bounce: discarding {path}")
        else:
            env_sender, recipient, text = composed
            try:
                with qq.Queue() as q:
                    q.put(text)
                    q.sender(env_sender)
                    q.to(recipient)
                    err, qp = q.close(), q.qp
            except OSError as e:
                err, qp = f"Z{e.strerror}", None
            if err:
                log("warning: trouble injecting bounce message, will try later")
                return False
            log(f"bounce msg {msgid}" + (f" qp {qp}" if qp else ""))
        os.unlink(path)
        return True

    def cleanup_orphans(self, now):
        """qmail-send's cleanup: mess files older than 36 h with neither info/ nor todo/ are removed."""
        for msgid in _scan.scan_split(self.queue, "mess"):
            try:
                if now - os.stat(hier.queue_file(self.queue, "mess", msgid)).st_mtime < OSSIFIED:
                    continue
            except FileNotFoundError:
                continue
            if any(os.path.exists(hier.queue_file(self.queue, k, msgid)) for k in ("info", "todo")):
                continue
            self.ask_clean(msgid, f"warning: removed ossified message {msgid}")

    # --- events -----------------------------------------------------------------------
    def on_pool(self, conn, now):
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.lost_pool(conn, now)
            return
        for slot, letter, text in conn.feed(data):
            d = conn.slots.pop(slot, None)
            if d is None:
                log("warning: internal error: delivery report out of range")
                continue
            self.reports.append((d, letter, text))

    def apply_reports(self, now):
        """Apply the reports gathered so far, after one syncfs when a local delivery succeeded.

        The local pool skips the fsync of new/ for Maildirs on the queue's file system
        (engine.maildir.defer_new_sync): the syncfs makes those deliveries durable before any
        of them is marked done. It runs in a thread so the scheduler keeps starting
        deliveries meanwhile; reports arriving during one flush wait for the next, so a slow
        flush covers a larger batch (group commit)."""
        if not self.reports or self.syncing is not None:
            return
        reports, self.reports = self.reports, []
        if any(letter == b"K" and d.job.channel == LOCAL for d, letter, _ in reports):
            self.syncing = reports
            self.sync_thread.submit(self.sync_queue_filesystem)
            return
        self.finish_reports(reports, now)

    def finish_reports(self, reports, now):
        for d, letter, text in reports:
            self.finish_one(d, letter, text, now)

    def on_synced(self, now):
        """The flush started by apply_reports is done: its reports can mark recipients done."""
        os.read(self.synced_r, 4096)
        reports, self.syncing = self.syncing, None
        self.finish_reports(reports, now)

    def sync_queue_filesystem(self):
        """Runs in the sync thread; wakes the event loop through the synced pipe when done."""
        try:
            if self.queue_fd is None:
                self.queue_fd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)
            if not syncfs(self.queue_fd):
                os.sync()
        finally:
            os.write(self.synced_w, b"s")

    def lost_pool(self, conn, now):
        self.sel.unregister(conn.sock)
        conn.sock.close()
        self.conns[conn.channel].remove(conn)
        for d in list(conn.slots.values()):
            log(f"alert: lost connection to the {CHANNEL_NAMES[conn.channel]} pool during delivery {d.delid}")
            self.finish_one(d, b"Z", b"Delivery process died; will try again. (#4.3.0)", now)
        conn.slots.clear()

    def on_todo(self, now):
        data = self.todo_conn.recv(65536)
        if not data:
            self.sel.unregister(self.todo_conn)
            self.todo_conn.close()
            self.todo_conn = None
            return
        self.todo_buf += data
        *lines, self.todo_buf = self.todo_buf.split(b"\0")
        for line in lines:
            if line[:1] == b"D" and line[2:].isdigit():
                self.pqadd(int(line[2:]))
            elif line[:1] == b"F" and line[1:].isdigit():
                self.take_direct(int(line[1:]), now)
            elif line[:1] == b"L":
                log(_safe(line[1:]))

    def handle_hup(self):
        self.controls.reload()
        self.rewriter.reload()
        if self.todo_conn is not None:
            self.todo_conn.sendall(b"H")
        for c in self.conns[LOCAL]:
            if c.capacity and not c.slots:
                c.sock.sendall(spawn.encode_request(spawn.HUP_SLOT, b"", b"", b""))
        self.trim_local()

    def trim_local(self):
        """After HUP lowered concurrencylocal, close idle surplus connections."""
        surplus = len(self.conns[LOCAL]) - self.controls.concurrency[LOCAL]
        for c in [c for c in self.conns[LOCAL] if not c.slots][:max(0, surplus)]:
            self.sel.unregister(c.sock)
            c.sock.close()
            self.conns[LOCAL].remove(c)

    def handle_alrm(self):
        for ch in (LOCAL, REMOTE):
            self.pq[ch][:] = [(0, m) for _, m in self.pq[ch]]
            heapq.heapify(self.pq[ch])

    def run(self, send_listener):
        for sig in (signal.SIGHUP, signal.SIGALRM, signal.SIGTERM):
            signal.signal(sig, lambda s, f: self.signals.append(s))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
        self.sel.register(self.synced_r, selectors.EVENT_READ, ("synced", None))
        self.sel.register(send_listener, selectors.EVENT_READ, ("listen", send_listener))
        self.connect_clean()
        self.scan_info()
        last_connect = 0.0
        last_cleanup = 0.0
        while True:
            now = self.clock()
            self.apply_reports(now)
            while self.signals:
                s = self.signals.pop(0)
                if s == signal.SIGHUP:
                    self.handle_hup()
                elif s == signal.SIGALRM:
                    self.handle_alrm()
                elif s == signal.SIGTERM:
                    self.exiting = True
                    self.log_status()
            if (self.exiting and not self.in_use(LOCAL) and not self.in_use(REMOTE)
                    and not self.reports and self.syncing is None):
                if self.todo_conn is not None:
                    self.todo_conn.sendall(b"X")
                return 0
            if time.monotonic() - last_connect > 1.0:
                self.connect_pools()
                last_connect = time.monotonic()
            if time.monotonic() - last_cleanup > CLEANUP_EVERY:
                self.cleanup_orphans(now)
                last_cleanup = time.monotonic()
            while self.done:
                msgid = self.done.pop(0)
                if not self.message_done(msgid):
                    heapq.heappush(self.pq[LOCAL], (now + SLEEP_SYSFAIL / self.scale, msgid))
            self.start_deliveries(now)
            timeout = self.timeout(now)
            for key, _ in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "synced":
                    self.on_synced(self.clock())
                elif kind == "wake":
                    os.read(wake_r, 4096)
                elif kind == "pool":
                    self.on_pool(obj, self.clock())
                elif kind == "todo":
                    self.on_todo(self.clock())
                elif kind == "clean":
                    self.on_clean()
                elif kind == "listen":
                    self.accept_todo(obj)

    def timeout(self, now):
        t = 1.0
        for ch in (LOCAL, REMOTE):
            if self.pq[ch] and self.free_connection(ch):
                t = min(t, max(0.0, self.pq[ch][0][0] - now))
        return t


def run_send(home, sockets, send_listener):
    """Arbiter target for qmail-send."""
    return Scheduler(home, sockets).run(send_listener)
