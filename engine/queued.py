"""qmail-queue as a service of the master, for the network servers of a root installation.

Under qmail the SMTP, QMTP and QMQP servers run as qmaild and start the
setuid-qmailq qmail-queue for each message. Here that would start a Python
process per message (~90 ms of CPU), so the master runs this role as qmailq
instead: it accepts on a Unix socket and queues each message with
engine.queue in a thread, exactly as the qmail-queue program does (same
steps, fsyncs, exit codes, Received line from the caller's uid taken from
SO_PEERCRED). Anyone local may connect, as anyone may run qmail-queue.

Protocol, one message per connection: `<length>:` and that many message
bytes, then qmail-queue's envelope (F<sender>NUL, T<rcpt>NUL ..., NUL); the
answer is one byte, qmail-queue's exit code. The socket is in the abstract
namespace (queue/ is closed to qmaild); a client only talks to a server
whose uid is root or the queue's owner, so no local user can pose as it.
`submit()` falls back to the qmail-queue program when the service is not there.
"""

import hashlib
import os
import socket
import struct
import threading
import time

from engine import conf, qq, queue

LENGTH_DIGITS = 20
_PEERCRED = struct.Struct("3i")


def address(home):
    """The abstract socket name of the service of qmail home `home`."""
    return b"\0pyqmail-queue-" + hashlib.sha1(os.fsencode(os.path.realpath(home))).hexdigest()[:20].encode()


def make_listener(home, backlog):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(address(home))
    s.listen(backlog)
    return s


def peer(sock):
    """(pid, uid, gid) of the process at the other end."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


# --- the server -----------------------------------------------------------------------

def run_service(home, listener):
    """Arbiter target: one thread per connection (fsyncs release the GIL, so messages overlap)."""
    os.umask(0o033)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            if listener.fileno() < 0:  # closed: the service ends
                return 0
            time.sleep(0.1)  # e.g. out of descriptors: the callers wait, nothing is lost
            continue
        threading.Thread(target=_serve_and_close, args=(conn, home), daemon=True).start()


def _serve_and_close(conn, home):
    with conn:
        # a kernel receive timeout keeps the descriptor blocking for EnvelopeReader's os.read
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", queue.DEATH, 0))
        try:
            code = serve(conn, home)
        except OSError:
            return  # the client went away; whatever was begun has been removed by abort()
        try:
            conn.sendall(bytes([code]))
        except OSError:
            pass


def _read_length(conn):
    digits = b""
    while len(digits) <= LENGTH_DIGITS:
        c = conn.recv(1)
        if not c:
            raise queue.QueueError(queue.EXIT_READ, "connection ended before the message length")
        if c == b":":
            if digits:
                return int(digits)
            break
        if not c.isdigit():
            break
        digits += c
    raise queue.QueueError(queue.EXIT_FORMAT, "bad message length")


def _copy_exactly(conn, m, length):
    while length:
        data = conn.recv(min(length, queue.READ_SIZE))
        if not data:
            m.abort()
            raise queue.QueueError(queue.EXIT_READ, "connection ended inside the message")
        m.write(data)
        length -= len(data)


def serve(conn, home):
    """Queue one message from the connection; qmail-queue's exit code."""
    pid, uid, _ = peer(conn)
    try:
        length = _read_length(conn)
        m = queue.Message(home, uid=uid, pid=pid).create()
        _copy_exactly(conn, m, length)
        try:
            sender, recipients = queue.EnvelopeReader(conn.fileno()).read()
        except BaseException:
            m.abort()
            raise
        m.commit(sender, recipients)
    except queue.QueueError as e:
        return e.code
    except MemoryError:
        return queue.EXIT_NOMEM
    return queue.EXIT_OK


# --- the client -----------------------------------------------------------------------

def _trusted(sock, home):
    _, uid, _ = peer(sock)
    return uid in (0, os.stat(os.path.join(home, "queue")).st_uid)


def connect(home):
    """A connection to the service of `home`, or None when it is not running (or is not ours)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address(home))
        if _trusted(s, home):
            return s
    except OSError:
        pass
    s.close()
    return None


def submit(message, sender, recipients, home=None, env=None):
    """Queue `message` (bytes) as qq.submit() does: "" on success, else the D/Z text. Through the
    service when it runs, else through the qmail-queue program."""
    home = home or conf.qmailhome()
    s = connect(home)
    if s is None:
        return qq.submit(message, sender, recipients, env=env, home=home)
    envelope = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in recipients) + b"\0"
    with s:
        try:
            s.sendall(b"%d:" % len(message))
            s.sendall(message)
            s.sendall(envelope)
        except OSError:
            pass  # the service may have refused early (e.g. queue/pid trouble): its code is still there
        try:
            code = s.recv(1)
        except OSError:
            code = b""
    return qq.result_text(code[0]) if code else qq.TEMPORARY
