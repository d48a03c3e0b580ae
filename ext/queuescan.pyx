# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled queue scanning (twin of engine/_queuescan_py.py): message ids in the split directories.

readdir() straight into C integers: no str object per directory entry,
which is what costs when qmail-todo or qmail-send looks at 100,000 queued
messages.
"""

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR
    struct dirent:
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *d)
    int closedir(DIR *d)

DEF SPLIT_DEFAULT = SPLIT


cdef long long _number(const char *name):
    """The decimal value of an all-digit name, or -1."""
    cdef long long v = 0
    cdef int i = 0
    if name[0] == 0:
        return -1
    while name[i] != 0:
        if name[i] < 48 or name[i] > 57 or i > 18:
            return -1
        v = v * 10 + (name[i] - 48)
        i += 1
    return v


cdef int _scan_dir(bytes path, list out) except -1:
    cdef DIR *d = opendir(path)
    cdef dirent *e
    cdef long long v
    if d == NULL:
        raise FileNotFoundError(2, "unable to open directory", path.decode("utf-8", "surrogateescape"))
    try:
        while True:
            e = readdir(d)
            if e == NULL:
                break
            v = _number(e.d_name)
            if v >= 0:
                out.append(v)
    finally:
        closedir(d)
    return 0


def scan_dir(path):
    """Ids (all-digit names) in one directory, in directory order."""
    cdef list out = []
    _scan_dir(path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path, out)
    return out


def scan_split(queue, kind, int split=SPLIT_DEFAULT):
    """Ids in queue/<kind>/0 .. queue/<kind>/<split-1>."""
    cdef list out = []
    cdef int i
    base = (queue.encode("utf-8", "surrogateescape") if isinstance(queue, str) else queue) + b"/" + \
        (kind.encode() if isinstance(kind, str) else kind) + b"/"
    for i in range(split):
        _scan_dir(base + str(i).encode(), out)
    return out
