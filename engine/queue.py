"""qmail-queue: puts a message into the queue (qmail-queue.c), as a program and as a library.

    qmail-queue      (message on fd 0, envelope on fd 1: F sender NUL, T recipient NUL ..., NUL)

Steps, exactly qmail's (see INTERNALS.md): create pid/<pid>.<time>.<seq>,
whose inode number is the message id; hard-link it to mess/<id mod
split>/<id> and remove the pid name; write our Received line and the
message; fsync; write the envelope (u<uid>, p<pid>, F<sender>, T<rcpt>...,
plus the control/bigbrother copies) to intd/<split>/<id>; fsync; link
intd to todo/<split>/<id> — only now does the scheduler see the message —
and pull lock/trigger. A failure before the todo link removes what was
made, so nothing half-written is ever picked up.

enqueue() is the same sequence for in-process callers (the SMTP and QMTP
services): no process is spawned, the message is on disk and fsynced when
it returns. Exit codes and their texts are qmail's (spec 1.3): EXIT_*.
"""

import os
import pwd
import signal
import sys
import time

from engine import conf, control, hier, qq
from engine.date822 import date822

ADDR_MAX = 1003          # an envelope address of this length or more: exit 11
DEATH = 86400            # qmail-queue gives up after a day: exit 52
PID_TRIES = 9

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
EXIT_MESS_LINK = 64
EXIT_INTD = 65
EXIT_TODO_LINK = 66
EXIT_BUG = 81
EXIT_FORMAT = 91

# what the program says on stderr for each exit (one line naming the problem)
_WHY = {
    EXIT_ADDR_TOO_LONG: "envelope address too long", EXIT_TIMEOUT: "timed out after a day",
    EXIT_WRITE: "write error or disk full", EXIT_READ: "read error", EXIT_CONFIG: "unable to read control/bigbrother",
    EXIT_HOME: "unable to switch to the qmail home", EXIT_QUEUE_DIR: "unable to switch to the queue directory",
    EXIT_PID: "trouble with a pid file", EXIT_MESS_LINK: "unable to link the message into mess/",
    EXIT_INTD: "unable to create the envelope in intd/", EXIT_TODO_LINK: "unable to link the envelope into todo/",
    EXIT_FORMAT: "malformed envelope on fd 1", EXIT_BUG: "internal bug",
}


def exit_text(code):
    """qmail_close(): the D/Z text a caller reports for this exit code (engine.qq's table)."""
    return qq.result_text(code)


class QueueError(Exception):
    """The message was not queued; `code` is qmail-queue's exit code, `text` the caller's D/Z text."""

    def __init__(self, code, detail=""):
        self.code = code
        self.text = exit_text(code)
        self.detail = detail
        super().__init__(f"{_WHY.get(code, 'queue failure')}{': ' + detail if detail else ''}")


# --- the Received line ----------------------------------------------------------------

def _uid_of(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def invoked_by(uid, invoked=None):
    """qmail-queue's words for who called it: `invoked by alias`, `from network`, `for bounce`, `by uid N`."""
    if invoked == "network" or (invoked is None and uid == _uid_of(conf.USER_DAEMON)):
        return "invoked from network"
    if invoked == "bounce" or (invoked is None and uid == _uid_of(conf.USER_SEND)):
        return "invoked for bounce"
    if invoked == "alias" or (invoked is None and uid == _uid_of(conf.USER_ALIAS)):
        return "invoked by alias"
    return f"invoked by uid {uid}"


def received_line(pid, uid, invoked=None, when=None):
    return f"Received: (qmail {pid} {invoked_by(uid, invoked)}); {date822(when)}\n".encode()


# --- BIGBROTHER -----------------------------------------------------------------------

def bigbrother(home):
    """control/bigbrother as a ConstMap (address or @domain -> copy-to), or None."""
    try:
        items = control.read_list("bigbrother", None, home)
    except control.ControlError:
        raise QueueError(EXIT_CONFIG) from None
    return None if items is None else control.ConstMap(items, values=True)


def bigbrother_copies(bb, addresses):
    """The extra recipients for the sender and each recipient (full address first, then @domain)."""
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


# --- the steps ------------------------------------------------------------------------

def envelope_bytes(uid, pid, sender, recipients, extra=()):
    """intd/todo contents: u<uid>, p<pid>, F<sender>, T<rcpt>... each NUL-terminated."""
    parts = [b"u%d\0p%d\0F" % (uid, pid), sender, b"\0"]
    for r in recipients:
        parts += [b"T", r, b"\0"]
    for r in extra:
        parts += [b"T", r, b"\0"]
    return b"".join(parts)


def check_address(addr):
    if len(addr) >= ADDR_MAX:
        raise QueueError(EXIT_ADDR_TOO_LONG, f"{len(addr)} bytes")
    if b"\0" in addr:
        raise QueueError(EXIT_FORMAT, "NUL inside an address")


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


_seq = [0]


def open_pid_file(queue, pid, start):
    """pid/<pid>.<time>.<seq>, created exclusively; its inode becomes the message id."""
    for _ in range(PID_TRIES):
        _seq[0] += 1
        path = f"{queue}/pid/{pid}.{int(start)}.{_seq[0]}"
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise QueueError(EXIT_PID, f"{path}: {e.strerror}") from None
    raise QueueError(EXIT_PID, "no free pid file name")


class Message:
    """One message being queued: create(), write() the body in pieces, then commit() the envelope."""

    def __init__(self, home=None, uid=None, pid=None, invoked=None):
        self.home = home or conf.qmailhome()
        self.queue = os.path.join(self.home, "queue")
        self.uid = os.getuid() if uid is None else uid
        self.pid = os.getpid() if pid is None else pid
        self.invoked = invoked
        self.fd = self.intd_fd = None
        self.mess = self.intd = None
        self.id = None

    def create(self):
        start = time.time()
        if not os.path.isdir(self.home):
            raise QueueError(EXIT_HOME, self.home)
        if not os.path.isdir(self.queue):
            raise QueueError(EXIT_QUEUE_DIR, self.queue)
        pidpath, self.fd = open_pid_file(self.queue, self.pid, start)
        try:
            self.id = os.fstat(self.fd).st_ino
            self.mess = hier.queue_file(self.queue, "mess", self.id)
            self.intd = hier.queue_file(self.queue, "intd", self.id)
            try:
                os.link(pidpath, self.mess)
            except OSError as e:
                raise QueueError(EXIT_MESS_LINK, f"{self.mess}: {e.strerror}") from None
        finally:
            try:
                os.unlink(pidpath)
            except OSError:
                pass
        self.write(received_line(self.pid, self.uid, self.invoked, start))
        return self

    def write(self, data):
        try:
            _write_all(self.fd, data)
        except OSError as e:
            self.abort()
            raise QueueError(EXIT_WRITE, f"{self.mess}: {e.strerror}") from None

    def commit(self, sender, recipients):
        """fsync the message, write and fsync the envelope, link it into todo/; returns the id."""
        try:
            check_address(sender)
            for r in recipients:
                check_address(r)
            bb = bigbrother(self.home)
            extra = bigbrother_copies(bb, [sender, *recipients]) if bb else []
            try:
                os.fsync(self.fd)
            except OSError as e:
                raise QueueError(EXIT_WRITE, f"{self.mess}: {e.strerror}") from None
            self.write_envelope(envelope_bytes(self.uid, self.pid, sender, recipients, extra))
            todo = hier.queue_file(self.queue, "todo", self.id)
            try:
                os.link(self.intd, todo)
            except OSError as e:
                raise QueueError(EXIT_TODO_LINK, e.strerror) from None
            try:
                self.sync_dir(os.path.dirname(todo))
            except QueueError:
                os.unlink(todo)  # not acknowledged: take it back before the rest is removed
                raise
        except QueueError:
            self.abort()
            raise
        self.close()
        pull_trigger(self.queue)
        return self.id

    def sync_dir(self, path):
        """Make the todo/ link durable before we report success (ext4 without a journal needs it)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise QueueError(EXIT_WRITE, f"{path}: {e.strerror}") from None

    def write_envelope(self, data):
        try:
            self.intd_fd = os.open(self.intd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise QueueError(EXIT_INTD, f"{self.intd}: {e.strerror}") from None
        try:
            _write_all(self.intd_fd, data)
            os.fsync(self.intd_fd)
        except OSError as e:
            raise QueueError(EXIT_WRITE, f"{self.intd}: {e.strerror}") from None

    def close(self):
        for fd in (self.fd, self.intd_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.intd_fd = None

    def abort(self):
        """qmail-queue's cleanup(): truncate and remove what was made; the scheduler never sees it."""
        for fd, path in ((self.intd_fd, self.intd), (self.fd, self.mess)):
            if path is None:
                continue
            try:
                if fd is not None:
                    os.ftruncate(fd, 0)
            except OSError:
                pass
            try:
                os.unlink(path)
            except OSError:
                pass
        self.close()


def pull_trigger(queue):
    """Wake qmail-todo with one byte on lock/trigger; nobody listening is fine."""
    try:
        fd = os.open(f"{queue}/lock/trigger", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def enqueue(message, sender, recipients, *, home=None, invoked=None, uid=None, pid=None):
    """Queue `message` (bytes) for `recipients` (bytes) from `sender`; returns the message id.

    Raises QueueError (code, text) when it was not queued; then nothing is left in the queue.
    """
    m = Message(home, uid, pid, invoked).create()
    m.write(message)
    return m.commit(sender, recipients)


# --- the program ----------------------------------------------------------------------

def read_envelope(fd):
    """(sender, recipients) from fd 1 as qmail-queue reads it; QueueError 91/11/54 on bad input."""
    chunks = []
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\0\0") or (len(chunks) > 1 and b"".join(chunks[-2:]).endswith(b"\0\0")):
                break
    except OSError as e:
        raise QueueError(EXIT_READ, f"envelope: {e.strerror}") from None
    data = b"".join(chunks)
    if not data:
        raise QueueError(EXIT_READ, "empty envelope")
    if not data.startswith(b"F"):
        raise QueueError(EXIT_FORMAT, "envelope does not start with F")
    fields = data.split(b"\0")
    sender = fields[0][1:]
    if len(sender) >= ADDR_MAX:
        raise QueueError(EXIT_ADDR_TOO_LONG, "sender")
    recipients = []
    for i, f in enumerate(fields[1:], 1):
        if f == b"":
            if i == len(fields) - 1:
                raise QueueError(EXIT_READ, "envelope ends early")
            return sender, recipients
        if not f.startswith(b"T"):
            raise QueueError(EXIT_FORMAT, "recipient record does not start with T")
        if len(f) - 1 >= ADDR_MAX:
            raise QueueError(EXIT_ADDR_TOO_LONG, "recipient")
        recipients.append(f[1:])
    raise QueueError(EXIT_READ, "envelope ends early")


def copy_message(m, fd):
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            m.abort()
            raise QueueError(EXIT_READ, f"message: {e.strerror}") from None
        if not data:
            return
        m.write(data)


def die_on_alarm(signum, frame):
    raise QueueError(EXIT_TIMEOUT)


def main(argv=None):
    os.umask(0o033)  # as qmail-queue: queue files readable by qmail-send and qmail-todo whatever our caller's umask
    signal.signal(signal.SIGALRM, die_on_alarm)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.alarm(DEATH)
    m = None
    try:
        m = Message().create()
        copy_message(m, 0)
        sender, recipients = read_envelope(1)
        m.commit(sender, recipients)
    except QueueError as e:
        if m is not None:
            m.abort()
        sys.stderr.write(f"qmail-queue: {e}\n")
        return e.code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
