"""Compiled twin of the Maildir/mbox writing kernel: a thin wrapper over ext/maildir.c (cffi).

Same API as engine._maildir_py: deliver() and append_mbox(); failures raise
OSError with .step naming the operation that failed.
"""

import os as _os

from engine._maildir_cffi import ffi as _ffi, lib as _lib

_STEPS = {1: "tmp", 2: "read", 3: "write", 4: "fsync", 5: "link", 6: "syncdir", 7: "name"}
_NAMECAP = 1024


def _error(err, step, path):
    e = OSError(err, _os.strerror(err), path)
    e.step = _STEPS[step]
    return e


def _source(message):
    """(buffer, length, fd) for cffi: a bytes-like message or a readable fd."""
    if isinstance(message, int):
        return _ffi.NULL, 0, message
    buf = _ffi.from_buffer(message)
    return buf, len(buf), -1


def deliver(maildir, prefix, message, host, sync_new=True):
    """Write prefix + message into maildir (bytes path) under a new unique name; returns (name, size).

    sync_new=False leaves the fsync of new/ to the caller (who flushes the file system before
    counting the delivery as done)."""
    body, blen, fd = _source(message)
    name = _ffi.new("char[]", _NAMECAP)
    size = _ffi.new("unsigned long long *")
    step = _ffi.new("int *")
    err = _lib.md_deliver(maildir, prefix, len(prefix), body, blen, fd, host, int(sync_new), name, _NAMECAP, size, step)
    if err:
        raise _error(err, step[0], maildir)
    return _ffi.string(name), size[0]


def append_mbox(fd, head, message):
    """Append head + >From-quoted message + empty line to the mbox open on fd, fsync; returns bytes written."""
    body, blen, src = _source(message)
    written = _ffi.new("unsigned long long *")
    step = _ffi.new("int *")
    err = _lib.md_append_mbox(fd, head, len(head), body, blen, src, written, step)
    if err:
        raise _error(err, step[0], None)
    return written[0]
