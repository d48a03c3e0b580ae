"""Pure-Python twin of the Maildir/mbox writing kernel (ext/maildir.c).

deliver(): tmp/<name> created O_EXCL, prefix + message written, fsync,
linked to new/<name>,S=<size>, tmp unlinked, new/ fsynced. append_mbox():
head + ">From "-quoted message + one empty line, fsync. Failures raise
OSError with .step naming the operation ("tmp", "read", "write", "fsync",
"link", "syncdir", "name").
"""

import errno as _errno
import itertools as _itertools
import os as _os
import re as _re
import stat as _stat
import time as _time

_TRIES = 3
_BUF = 65536
_counter = _itertools.count()
_WRITE_ERRNOS = {_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG, _errno.EIO}
_NO_COPY_RANGE = {_errno.EXDEV, _errno.EINVAL, _errno.ENOSYS, _errno.EOPNOTSUPP}
_FROM_LINE = _re.compile(rb"^(?=>*From )", _re.M)


def _step(e, step):
    e.step = step
    return e


def _name(host):
    ns = _time.time_ns()
    sec, usec = divmod(ns // 1000, 1000000)
    return b"%d.M%dP%dQ%d.%s" % (sec, usec, _os.getpid(), next(_counter), host)


def _create_tmp(maildir, host):
    for _ in range(_TRIES):
        name = _name(host)
        tmp = maildir + b"/tmp/" + name
        try:
            return name, tmp, _os.open(tmp, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL | _os.O_CLOEXEC, 0o600)
        except FileExistsError as e:
            last = e
        except OSError as e:
            raise _step(e, "tmp")
    raise _step(last, "tmp")


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[_os.write(fd, view):]


def _writev_all(fd, prefix, body):
    parts = [memoryview(prefix), memoryview(body).cast("B")]
    while parts:
        done = _os.writev(fd, parts)
        while parts and done >= len(parts[0]):
            done -= len(parts[0])
            parts.pop(0)
        if parts:
            parts[0] = parts[0][done:]


def _copy_range(out, src):
    """In-kernel copy of a regular file's remainder; None when the file system cannot."""
    total = 0
    while True:
        try:
            n = _os.copy_file_range(src, out, 1 << 30)
        except OSError as e:
            if e.errno in _NO_COPY_RANGE and not total:
                return None
            raise _step(e, "write" if e.errno in _WRITE_ERRNOS else "read")
        if n == 0:
            return total
        total += n


def _copy_fd(out, src):
    if _stat.S_ISREG(_os.fstat(src).st_mode):
        copied = _copy_range(out, src)
        if copied is not None:
            return copied
    total = 0
    while True:
        try:
            chunk = _os.read(src, _BUF)
        except OSError as e:
            raise _step(e, "read")
        if not chunk:
            return total
        try:
            _write_all(out, chunk)
        except OSError as e:
            raise _step(e, "write")
        total += len(chunk)


def _fill(fd, prefix, message):
    if isinstance(message, int):
        try:
            _write_all(fd, prefix)
        except OSError as e:
            raise _step(e, "write")
        return len(prefix) + _copy_fd(fd, message)
    try:
        _writev_all(fd, prefix, message)
    except OSError as e:
        raise _step(e, "write")
    return len(prefix) + memoryview(message).nbytes


def _sync_dir(path):
    fd = _os.open(path, _os.O_RDONLY | _os.O_DIRECTORY | _os.O_CLOEXEC)
    try:
        _os.fsync(fd)
    finally:
        _os.close(fd)


def deliver(maildir, prefix, message, host, sync_new=True):
    """Write prefix + message into maildir (bytes path) under a new unique name; returns (name, size).

    sync_new=False leaves the fsync of new/ to the caller (who flushes the file system before
    counting the delivery as done)."""
    name, tmp, fd = _create_tmp(maildir, host)
    try:
        try:
            size = _fill(fd, prefix, message)
            _os.fsync(fd)
        finally:
            _os.close(fd)
    except OSError as e:
        _os.unlink(tmp)
        raise _step(e, getattr(e, "step", "fsync"))
    name += b",S=%d" % size
    try:
        _os.link(tmp, maildir + b"/new/" + name)
    except OSError as e:
        _os.unlink(tmp)
        raise _step(e, "link")
    _os.unlink(tmp)
    if not sync_new:
        return name, size
    try:
        _sync_dir(maildir + b"/new")
    except OSError as e:
        raise _step(e, "syncdir")
    return name, size


def _quote(data):
    return _FROM_LINE.sub(b">", data)


def _quoted_chunks(message):
    """The message with >From quoting, in pieces; a line split across reads is carried over."""
    if not isinstance(message, int):
        yield _quote(bytes(message))
        return
    carry = b""
    while True:
        try:
            chunk = _os.read(message, _BUF)
        except OSError as e:
            raise _step(e, "read")
        if not chunk:
            yield _quote(carry)
            return
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        yield _quote(data[:cut])


def append_mbox(fd, head, message):
    """Append head + >From-quoted message + empty line to the mbox open on fd, fsync; returns bytes written."""
    written = 0
    last = b"\n"
    try:
        _write_all(fd, head)
        written += len(head)
        for piece in _quoted_chunks(message):
            if piece:
                _write_all(fd, piece)
                written += len(piece)
                last = piece[-1:]
        tail = b"\n\n" if last != b"\n" else b"\n"
        _write_all(fd, tail)
        written += len(tail)
    except OSError as e:
        raise _step(e, getattr(e, "step", "write"))
    try:
        _os.fsync(fd)
    except OSError as e:
        raise _step(e, "fsync")
    return written
