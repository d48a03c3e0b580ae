# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled queue scanning (twin of engine/_queuescan_py.py).

readdir() straight into C integers, with no str object per directory
entry, which is what costs when qmail-todo or qmail-send looks at 100,000
queued messages; and memchr() over a queue file's NUL-terminated records.

    scan_dir(path)                  ids (all-digit names) in one directory
    scan_split(queue, kind)         ids in queue/<kind>/0 .. <kind>/<split-1>
    scan_todo(queue)                ids in todo/ (BIGTODO: split like mess/)
    parse_records(data)             NUL-terminated records, an unterminated tail dropped
    read_records(path)              parse_records() of a file
"""

from libc.errno cimport errno
from libc.string cimport memchr

cdef extern from "<dirent.h>" nogil:  # Cython 3.0 ships no posix/dirent.pxd
    ctypedef struct DIR
    struct dirent:
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *d)
    int closedir(DIR *d)

cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags)
    int O_RDONLY
    int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    int close(int fd)

from libc.errno cimport EINTR

import os as _os

DEF READ_CHUNK = 8192  # info/local/remote/todo files are a few hundred bytes: one read() each

DEF SPLIT_DEFAULT = SPLIT
DEF ID_DIGITS_MAX = 19  # 19 decimal digits fit an unsigned 64-bit id; longer names are not message ids


cdef bint _number(const char *name, unsigned long long *v) noexcept:
    """Whether `name` is all ASCII digits (1..19 of them); its value in *v."""
    cdef int i = 0
    v[0] = 0
    if name[0] == 0:
        return False
    while name[i] != 0:
        if name[i] < 48 or name[i] > 57 or i >= ID_DIGITS_MAX:
            return False
        v[0] = v[0] * 10 + <unsigned long long> (name[i] - 48)
        i += 1
    return True


cdef int _scan_dir(bytes path, list out) except -1:
    cdef DIR *d = opendir(path)
    cdef dirent *e
    cdef unsigned long long v
    if d == NULL:
        err = errno
        raise OSError(err, _os.strerror(err), _os.fsdecode(path))
    try:
        while True:
            e = readdir(d)
            if e == NULL:
                break
            if _number(e.d_name, &v):
                out.append(v)
    finally:
        closedir(d)
    return 0


def scan_dir(path):
    """Ids (all-digit names) in one directory, in directory order."""
    cdef list out = []
    _scan_dir(_os.fsencode(path), out)
    return out


def scan_split(queue, kind, int split=SPLIT_DEFAULT):
    """Ids in queue/<kind>/0 .. queue/<kind>/<split-1>, subdirectory by subdirectory."""
    cdef list out = []
    cdef int i
    cdef bytes base = _os.fsencode(queue) + b"/" + _os.fsencode(kind) + b"/"
    for i in range(split):
        _scan_dir(base + str(i).encode(), out)
    return out


def scan_todo(queue, int split=SPLIT_DEFAULT):
    """Ids waiting for preprocessing in todo/ (split like mess/: BIGTODO)."""
    return scan_split(queue, "todo", split)


def parse_records(data):
    """The NUL-terminated records of a queue file (u/p/F/T/D...), NULs removed.

    An unterminated tail is dropped, as qmail's getln(..., 0) readers ignore it.
    """
    cdef const unsigned char[:] view = data
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t start = 0
    cdef const unsigned char *base
    cdef const unsigned char *hit
    cdef list out = []
    if n == 0:
        return out
    base = &view[0]
    while start < n:
        hit = <const unsigned char *> memchr(base + start, 0, n - start)
        if hit == NULL:
            break
        out.append((base + start)[:hit - base - start])
        start = hit - base + 1
    return out


cdef bytes _read_file(bytes path):
    """The whole file, by open()/read() with no Python file object (that is most of the cost)."""
    cdef char buf[READ_CHUNK]
    cdef ssize_t n
    cdef int fd = open(path, O_RDONLY | O_CLOEXEC)
    cdef list chunks = []
    if fd < 0:
        err = errno
        raise OSError(err, _os.strerror(err), _os.fsdecode(path))
    try:
        while True:
            with nogil:
                n = read(fd, buf, READ_CHUNK)
            if n < 0:
                err = errno
                if err == EINTR:
                    continue
                raise OSError(err, _os.strerror(err), _os.fsdecode(path))
            if n == 0:
                break
            chunks.append(buf[:n])
    finally:
        close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_records(path):
    """parse_records() of the file at `path`."""
    return parse_records(_read_file(_os.fsencode(path)))
