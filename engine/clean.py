"""qmail-clean: removes queue files on request, as the queue's owner (qmail-clean.c).

Requests are NUL-terminated: `foop/<id>` removes intd/ and mess/ of a
finished message, `todo/<id>` removes intd/ and todo/ of a preprocessed
one (a split prefix `todo/<n>/<id>` is accepted too). Each request is
answered with one byte: `+` done, `!` could not unlink, `x` bad request.
Every 30 requests (and at start) pid/ files older than 36 hours — left by
qmail-queue runs that died — are removed.
"""

import os
import signal
import threading
import time

from engine import hier

PID_MAX_AGE = 129600  # 36 hours
CLEANUP_EVERY = 30


def cleanup_pid(queue, now=None):
    now = time.time() if now is None else now
    piddir = os.path.join(queue, "pid")
    for name in os.listdir(piddir):
        path = os.path.join(piddir, name)
        try:
            if now > os.stat(path).st_atime + PID_MAX_AGE:
                os.unlink(path)
        except FileNotFoundError:
            pass


def parse_request(line):
    """(kind, id) of a request, or None when it is malformed."""
    if not 7 <= len(line) + 1 <= 100:
        return None
    kind, digits = line[:5], line[5:].rsplit(b"/", 1)[-1]
    if kind not in (b"foop/", b"todo/") or not digits.isdigit():
        return None
    return kind[:4].decode(), int(digits)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def clean(queue, kind, msgid):
    """Remove the files of one request; False when an unlink failed.

    Both requests remove intd/ first, as qmail-clean.c does: our qmail-queue renames intd/ to
    todo/ and leaves none, but a queue taken over from qmail has intd/ linked beside todo/."""
    try:
        _unlink(hier.queue_file(queue, "intd", msgid))
        _unlink(hier.queue_file(queue, "mess" if kind == "foop" else "todo", msgid))
    except OSError:
        return False
    return True


def answer(queue, line):
    parsed = parse_request(line)
    if parsed is None:
        return b"x"
    return b"+" if clean(queue, *parsed) else b"!"


def serve(conn, queue):
    """Answer one client (qmail-send or qmail-todo) until it disconnects."""
    buf = b""
    served = 0
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\0")
        replies = bytearray()
        for line in lines:
            if served % CLEANUP_EVERY == 0:
                cleanup_pid(queue)
            served += 1
            replies += answer(queue, line)
        try:
            conn.sendall(replies)
        except (BrokenPipeError, ConnectionResetError):
            return  # qmail-send exited without waiting for its last answers: the work is done


def _serve_and_close(conn, queue):
    with conn:
        serve(conn, queue)


class Stopping(Exception):
    pass


def _stop(signum, frame):
    raise Stopping


def run_clean(queue, listener):
    """Arbiter target: one thread per client (qmail-send and qmail-todo both talk to us).

    SIGTERM stops taking new clients but finishes the requests of the connected ones,
    which end when their clients exit: qmail-send's last requests (the todo/ and mess/ of
    messages it has just delivered) must not be lost with a stop, or the next start would
    deliver them again."""
    cleanup_pid(queue)
    signal.signal(signal.SIGTERM, _stop)
    clients = []
    try:
        while True:
            conn, _ = listener.accept()
            # a TERM now would leave a started client thread unjoined: it waits for the next accept
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
            clients = [t for t in clients if t.is_alive()]
            t = threading.Thread(target=_serve_and_close, args=(conn, queue))
            t.start()
            clients.append(t)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    except Stopping:
        pass
    for t in clients:
        t.join()
    return 0
