"""qmail-queue: puts a message into the queue (qmail-queue.c), as a program and as a library.

    qmail-queue      (message on fd 0, envelope on fd 1: F sender NUL, T recipient NUL ..., NUL)

Steps (INTERNALS.md has the states and what a crash leaves at each one):
create pid/<pid>.<time>.<seq>, whose inode number is the message id;
rename it to mess/<id mod split>/<id>; write our Received line and the
message; fsync; write the envelope (u<uid>, p<pid>, F<sender>, T<rcpt>...,
plus the control/bigbrother copies) to intd/<split>/<id>; fsync; rename
intd to todo/<split>/<id> — only now does the scheduler see the message —
fsync the todo subdirectory, so the rename is on disk before we say yes;
pull lock/trigger. Seven file operations per message. A failure before the
todo rename truncates and removes what was made, so nothing half-written
is ever picked up.

qmail links and then unlinks where we rename (pid -> mess, intd -> todo):
the message id is an inode we hold, so the target name cannot exist, and
one rename does the work of a link and an unlink. qmail's states are kept:
intd is simply gone once todo exists (INTERNALS.md allows `?intd` there).

enqueue() is the same sequence for in-process callers (the SMTP and QMTP
services): no process is spawned; the message is on disk and fsynced when
it returns. Exit codes are qmail's (spec 1.3), named EXIT_*; the text a
caller reports for each is engine.qq's table (qmail.c qmail_close).
"""

import errno
import functools
import itertools
import os
import pwd
import signal
import sys
import time

from engine import conf, control, durable, hier, qq
from engine.date822 import date822

ADDR_MAX = 1003          # an envelope address of this length or more: exit 11
DEATH = 86400            # qmail-queue gives up after a day (below qmail-send's 36 h OSSIFIED): exit 52
PID_TRIES = 9            # pid/<pid>.<time>.<seq> names tried, as qmail's seq 1..9
READ_SIZE = 65536

EXIT_OK = 0
EXIT_ADDR_TOO_LONG = 11
EXIT_NOMEM = 51
EXIT_TIMEOUT = 52
EXIT_WRITE = 53
EXIT_READ = 54
EXIT_CONFIG = 55
EXIT_HOME = 61
EXIT_QUEUE_DIR = 62
EXIT_PID = 63
EXIT_MESS = 64
EXIT_INTD = 65
EXIT_TODO = 66
EXIT_BUG = 81
EXIT_FORMAT = 91

# the one-line complaint on stderr for each exit (the details follow it)
_WHY = {
    EXIT_ADDR_TOO_LONG: "envelope address too long", EXIT_NOMEM: "out of memory",
    EXIT_TIMEOUT: "timed out after a day", EXIT_WRITE: "write error or disk full",
    EXIT_READ: "read error", EXIT_CONFIG: "unable to read control/bigbrother",
    EXIT_HOME: "trouble with the qmail home", EXIT_QUEUE_DIR: "trouble with the queue directory",
    EXIT_PID: "trouble with queue/pid", EXIT_MESS: "trouble with queue/mess",
    EXIT_INTD: "trouble with queue/intd", EXIT_TODO: "trouble with queue/todo",
    EXIT_BUG: "internal bug", EXIT_FORMAT: "envelope format error",
}

# who handed us the message, for the Received line (qmail-queue.c receivedfmt)
RECEIVED_ALIAS = "alias"       # invoked by alias: a .qmail forward
RECEIVED_NETWORK = "network"   # invoked from network: qmail-smtpd, qmail-qmtpd, qmail-qmqpd
RECEIVED_BOUNCE = "bounce"     # invoked for bounce: qmail-send
_RECEIVED_WORDS = {RECEIVED_ALIAS: "by alias", RECEIVED_NETWORK: "from network", RECEIVED_BOUNCE: "for bounce"}
_RECEIVED_USERS = ((conf.USER_ALIAS, RECEIVED_ALIAS), (conf.USER_DAEMON, RECEIVED_NETWORK),
                   (conf.USER_SEND, RECEIVED_BOUNCE))


class QueueError(Exception):
    """Not queued. `code`: qmail-queue's exit code; `text`: the caller's D/Z text (qmail_close);
    `detail`: what exactly failed. str() is the one-line complaint naming the problem."""

    def __init__(self, code, detail=""):
        self.code = code
        self.text = qq.result_text(code)
        self.detail = detail
        super().__init__(_WHY.get(code, "queue failure") + (f": {detail}" if detail else ""))


def _fail(code, what, e):
    return QueueError(code, f"{what}: {e.strerror or os.strerror(e.errno or errno.EIO)}")


# --- the Received line ----------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _uid_of(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def received_by_uid(uid):
    """qmail's choice from the caller's uid: the alias, qmaild and qmails users by name, else None."""
    for user, who in _RECEIVED_USERS:
        if uid == _uid_of(user):
            return who
    return None


def received_line(pid, uid, received=None, when=None):
    """`Received: (qmail PID invoked ...); DATE` + newline; `received` None means: judge by uid."""
    who = received or received_by_uid(uid)
    words = _RECEIVED_WORDS[who] if who else f"by uid {uid}"
    return f"Received: (qmail {pid} invoked {words}); {date822(when)}\n".encode()


# --- BIGBROTHER -----------------------------------------------------------------------

def bigbrother(home):
    """control/bigbrother as a ConstMap (address or @domain -> copy-to), or None when absent."""
    try:
        items = control.read_list("bigbrother", None, home)
    except control.ControlError as e:
        raise QueueError(EXIT_CONFIG, str(e)) from None
    return None if items is None else control.ConstMap(items, values=True)


def bigbrother_copies(bb, addresses):
    """The extra recipients for the sender and each recipient: full address first, then @domain."""
    extra = []
    for addr in addresses:
        text = addr.decode("utf-8", "surrogateescape")
        copy = bb.get(text)
        if copy is None:
            at = text.rfind("@")
            if at >= 0:
                copy = bb.get(text[at:])
        if copy:
            extra.append(copy.encode("utf-8", "surrogateescape"))
    return extra


# --- the envelope ---------------------------------------------------------------------

def envelope_bytes(uid, pid, sender, recipients, extra=()):
    """intd/todo contents: u<uid>, p<pid>, F<sender>, T<rcpt>... each NUL-terminated (no final NUL,
    as qmail-queue writes it)."""
    parts = [b"u%d\0p%d\0F" % (uid, pid), sender, b"\0"]
    for r in (*recipients, *extra):
        parts += [b"T", r, b"\0"]
    return b"".join(parts)


def check_address(addr, what):
    if len(addr) >= ADDR_MAX:
        raise QueueError(EXIT_ADDR_TOO_LONG, f"{what} is {len(addr)} bytes, the limit is {ADDR_MAX - 1}")
    if b"\0" in addr:
        raise QueueError(EXIT_FORMAT, f"{what} contains a NUL byte")


class EnvelopeReader:
    """qmail-queue's envelope parser on a descriptor: F<sender>NUL, T<rcpt>NUL ..., NUL.

    It checks in qmail's order while reading: a first byte other than F or
    a record not starting with T is 91, an address reaching 1003 bytes is
    11 (even before its NUL arrives), end of input before the final NUL is 54.
    It stops at the final NUL, so the writer need not close its end.
    """

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.pos = 0

    def _more(self):
        try:
            data = os.read(self.fd, READ_SIZE)
        except OSError as e:
            raise _fail(EXIT_READ, "envelope on fd 1", e) from None
        if not data:
            raise QueueError(EXIT_READ, "envelope on fd 1 ended before its final NUL")
        self.buf = self.buf[self.pos:] + data
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.buf):
            self._more()
        self.pos += 1
        return self.buf[self.pos - 1:self.pos]

    def address(self, what):
        while True:
            end = self.buf.find(b"\0", self.pos, self.pos + ADDR_MAX)
            if end >= 0:
                addr, self.pos = self.buf[self.pos:end], end + 1
                return addr
            if len(self.buf) - self.pos >= ADDR_MAX:
                raise QueueError(EXIT_ADDR_TOO_LONG, f"{what} reaches {ADDR_MAX} bytes")
            self._more()

    def read(self):
        """(sender, [recipients])."""
        if self.byte() != b"F":
            raise QueueError(EXIT_FORMAT, "envelope on fd 1 does not start with F")
        sender = self.address("sender")
        recipients = []
        while True:
            kind = self.byte()
            if kind == b"\0":
                return sender, recipients
            if kind != b"T":
                raise QueueError(EXIT_FORMAT, f"recipient record {len(recipients) + 1} starts with {kind!r}, not T")
            recipients.append(self.address(f"recipient {len(recipients) + 1}"))


# --- the steps ------------------------------------------------------------------------

_seq = itertools.count(1)  # pid file sequence numbers, process-wide: threads queueing at once get distinct names


def _check_dir(path, code):
    """What qmail's chdir() checks: the directory exists and we may search it."""
    try:
        os.stat(os.path.join(path, "."))
    except OSError as e:
        raise _fail(code, path, e) from None


def _write_all(fd, chunks):
    for data in chunks:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]


class Message:
    """One message being queued: create(), write() the body in pieces, then commit() the envelope.

    Any QueueError leaves the queue as it was (abort() has run); after
    commit() returns, the message belongs to the scheduler.
    """

    def __init__(self, home=None, received=None, uid=None, pid=None):
        self.home = home or conf.qmailhome()
        self.queue = os.path.join(self.home, "queue")
        self.uid = os.getuid() if uid is None else uid
        self.pid = os.getpid() if pid is None else pid
        self.received = received
        self.bigbrother = None
        self.fd = self.intd_fd = None
        self.mess = self.intd = None
        self.id = None

    def create(self):
        """Checks home, control/bigbrother and queue (qmail's order), makes mess/, writes Received."""
        start = time.time()
        _check_dir(self.home, EXIT_HOME)
        self.bigbrother = bigbrother(self.home)
        _check_dir(self.queue, EXIT_QUEUE_DIR)
        pidpath = self._open_pid_file(int(start))
        try:
            self.id = os.fstat(self.fd).st_ino
        except OSError as e:
            self._drop_pid_file(pidpath)
            raise _fail(EXIT_PID, pidpath, e) from None
        mess = hier.queue_file(self.queue, "mess", self.id)
        try:
            os.rename(pidpath, mess)
        except OSError as e:
            self._drop_pid_file(pidpath)
            raise _fail(EXIT_MESS, mess, e) from None
        self.mess = mess
        self.write(received_line(self.pid, self.uid, self.received, start))
        return self

    def _open_pid_file(self, start):
        """pid/<pid>.<time>.<seq>, created exclusively; its inode becomes the message id."""
        for _ in range(PID_TRIES):
            path = f"{self.queue}/pid/{self.pid}.{start}.{next(_seq)}"
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                return path
            except FileExistsError:
                continue
            except OSError as e:
                raise _fail(EXIT_PID, path, e) from None
        raise QueueError(EXIT_PID, f"{self.queue}/pid: {PID_TRIES} names for pid {self.pid} all taken")

    def _drop_pid_file(self, path):
        try:
            os.unlink(path)
        except OSError:
            pass  # qmail-clean removes pid/ leftovers after 36 hours
        os.close(self.fd)
        self.fd = None

    def write(self, *chunks):
        try:
            _write_all(self.fd, chunks)
        except OSError as e:
            err = _fail(EXIT_WRITE, self.mess, e)
            self.abort()
            raise err from None

    def copy_from(self, source):
        """Append a readable binary file (or a descriptor number) to the message."""
        read = (lambda: os.read(source, READ_SIZE)) if isinstance(source, int) else \
            (lambda: source.read(READ_SIZE))
        while True:
            try:
                data = read()
            except OSError as e:
                self.abort()
                raise _fail(EXIT_READ, "message" + (" on fd 0" if source == 0 else ""), e) from None
            if not data:
                return
            self.write(data)

    def commit(self, sender, recipients):
        """fsync the message, write the envelope to intd/, fsync, rename it into todo/; returns the id."""
        self.prepare(sender, recipients)
        todo = self.publish()
        try:
            self._sync_dir(os.path.dirname(todo))
        finally:
            pull_trigger(self.queue, self.id)
        return self.id

    def prepare(self, sender, recipients, sync=True):
        """Steps 4-6: the message and its envelope in intd/, each fsynced unless a caller flushes them."""
        try:
            check_address(sender, "sender")
            for i, r in enumerate(recipients, 1):
                check_address(r, f"recipient {i}")
            extra = bigbrother_copies(self.bigbrother, [sender, *recipients]) if self.bigbrother else ()
            if sync:
                self._sync(self.fd, self.mess)
            self._write_envelope(envelope_bytes(self.uid, self.pid, sender, recipients, extra), sync)
        except BaseException:
            self.abort()
            raise

    def publish(self):
        """Step 7: rename intd/ into todo/, after which the message is queued; returns the todo/ path."""
        todo = hier.queue_file(self.queue, "todo", self.id)
        try:
            os.rename(self.intd, todo)
        except OSError as e:
            err = _fail(EXIT_TODO, todo, e)
            self.abort()
            raise err from None
        self.intd = None  # renamed: the message is queued and is no longer ours to remove
        self.close()
        return todo

    def _write_envelope(self, data, sync=True):
        try:
            self.intd_fd = os.open(hier.queue_file(self.queue, "intd", self.id),
                                   os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise _fail(EXIT_INTD, hier.queue_file(self.queue, "intd", self.id), e) from None
        self.intd = hier.queue_file(self.queue, "intd", self.id)
        try:
            _write_all(self.intd_fd, (data,))
        except OSError as e:
            raise _fail(EXIT_WRITE, self.intd, e) from None
        if sync:
            self._sync(self.intd_fd, self.intd)

    @staticmethod
    def _sync(fd, path):
        try:
            os.fsync(fd)
        except OSError as e:
            raise _fail(EXIT_WRITE, path, e) from None

    @staticmethod
    def _sync_dir(path):
        """Make the todo rename durable. It has happened, so a failure here cannot be undone
        (qmail-todo may already be reading it): the caller hears 53 and may queue a duplicate."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise _fail(EXIT_WRITE, path, e) from None

    def close(self):
        for fd in (self.fd, self.intd_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.intd_fd = None

    def abort(self):
        """qmail-queue's cleanup(): truncate and remove what was made, once; the scheduler never saw it.

        Each name is forgotten as soon as it is removed: once our inode is
        free another qmail-queue may get the same id, and its files must
        not be touched by a second abort().
        """
        for fd, path in ((self.intd_fd, self.intd), (self.fd, self.mess)):
            if path is None:
                continue
            try:
                if fd is not None:
                    os.ftruncate(fd, 0)
                os.unlink(path)
            except OSError:
                pass  # an orphan without todo/: qmail-send removes it after 36 hours
        self.intd = self.mess = None
        self.close()


def pull_trigger(queue, msgid=None):
    """Wake qmail-todo on lock/trigger; nobody listening (ENXIO) is fine.

    qmail writes one byte; we write `<id>\\0`, so qmail-todo looks at this message instead of
    rescanning all of todo/ (a bare byte, from anything else, still means "rescan"). One
    write of a few bytes to a pipe is atomic, so concurrent writers never mix their ids."""
    try:
        fd = os.open(f"{queue}/lock/trigger", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\0" if msgid is None else b"%d\0" % msgid)
    except OSError:
        pass  # a full pipe: qmail-todo rescans after draining that much (todo.Trigger)
    finally:
        os.close(fd)


def enqueue(message, sender, recipients, *, home=None, received=None, uid=None, pid=None):
    """Queue `message` (bytes-like, or a binary file) from `sender` to `recipients` (bytes).

    Returns the message id once the message and its todo/ entry are on
    disk. `received`: RECEIVED_NETWORK, RECEIVED_ALIAS or RECEIVED_BOUNCE
    for the Received line, None to judge by the uid as qmail-queue does.
    Raises QueueError when it was not queued; nothing is left in the queue then.
    """
    m = Message(home, received, uid, pid).create()
    if hasattr(message, "read"):
        m.copy_from(message)
    else:
        m.write(message)
    return m.commit(sender, recipients)


def enqueue_batch(items, *, home=None, received=None):
    """Queue several messages with two flushes for all of them (group commit); returns, per item
    of (message, sender, recipients), its id or the QueueError that refused it.

    The steps are enqueue()'s, but where it fsyncs each message, each envelope and the todo/
    subdirectory, a batch makes every message and envelope durable with one syncfs(2) of
    the queue's file system before any of them is renamed into todo/, and the renames with
    a second one before any id is returned: the crash table in INTERNALS.md holds for each
    message, with steps 4 and 6 done together after step 5. A single item is plain enqueue()."""
    if len(items) == 1:
        message, sender, recipients = items[0]
        try:
            return [enqueue(message, sender, recipients, home=home, received=received)]
        except QueueError as e:
            return [e]
    results, prepared = [None] * len(items), []
    for i, (message, sender, recipients) in enumerate(items):
        try:
            m = Message(home, received).create()
            m.write(message)
            m.prepare(sender, recipients, sync=False)
            prepared.append((i, m))
        except QueueError as e:
            results[i] = e
    if not prepared:
        return results
    queue = prepared[0][1].queue
    try:
        _flush(queue, [p for _, m in prepared for p in (m.mess, m.intd)])
    except OSError as e:
        for i, m in prepared:
            results[i] = _fail(EXIT_WRITE, m.mess, e)
            m.abort()
        return results
    published = []
    for i, m in prepared:
        try:
            published.append((i, m, m.publish()))
        except QueueError as e:
            results[i] = e
    try:
        _flush(queue, sorted({os.path.dirname(todo) for _, _, todo in published}))
        for i, m, _ in published:
            results[i] = m.id
    except OSError as e:  # queued, but not known to be on disk: the caller hears 53, as enqueue() says
        for i, m, todo in published:
            results[i] = _fail(EXIT_WRITE, os.path.dirname(todo), e)
    for _, m, _ in published:
        pull_trigger(queue, m.id)
    return results


def _flush(queue, paths):
    """One syncfs of the queue's file system, else an fsync of each path."""
    fd = os.open(queue, os.O_RDONLY | os.O_DIRECTORY)
    try:
        durable.sync_files(fd, paths)
    finally:
        os.close(fd)


# --- the program ----------------------------------------------------------------------

def _die(code):
    os._exit(code)


def _on_alarm(signum, frame):
    _die(EXIT_TIMEOUT)  # no cleanup, as qmail: the message may already be in todo/


def setup_process():
    """qmail-queue.c's start: umask 033, signals ignored as sig_miscignore, the one-day alarm."""
    os.umask(0o033)  # queue files readable by qmail-send and qmail-todo whatever our caller's umask
    for name in ("SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGQUIT", "SIGINT", "SIGHUP", "SIGXCPU", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)  # SIGXFSZ ignored: a too big file is a 53
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(DEATH)


def queue_from_fds():
    """Message on fd 0, envelope on fd 1, as qmail-queue: the message first, then the envelope."""
    m = Message().create()
    m.copy_from(0)
    try:
        sender, recipients = EnvelopeReader(1).read()
    except BaseException:
        m.abort()
        raise
    return m.commit(sender, recipients)


def main(argv=None):
    setup_process()
    try:
        queue_from_fds()
    except QueueError as e:
        return _complain(e.code, str(e))
    except MemoryError:
        return _complain(EXIT_NOMEM, _WHY[EXIT_NOMEM])
    except Exception as e:  # noqa: BLE001 - an unexpected failure is qmail's "internal bug", never a traceback
        return _complain(EXIT_BUG, f"{_WHY[EXIT_BUG]}: {type(e).__name__}: {e}")
    return EXIT_OK


def _complain(code, text):
    sys.stderr.write(f"qmail-queue: {text}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
