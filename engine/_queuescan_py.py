"""Queue scanning, pure-Python twin of ext/queuescan.pyx (same API, same results).

    scan_dir(path)                  ids (all-digit names) in one directory
    scan_split(queue, kind)         ids in queue/<kind>/0 .. <kind>/<split-1>
    scan_todo(queue)                ids in todo/ (BIGTODO: split like mess/)
    parse_records(data)             NUL-terminated records, an unterminated tail dropped
    read_records(path)              parse_records() of a file
"""

import os as _os

from engine.conf import SPLIT as _SPLIT

_ID_DIGITS_MAX = 19  # 19 decimal digits fit an unsigned 64-bit id; longer names are not message ids


def _number(name):
    """The decimal value of an all-digit (ASCII) name, or -1."""
    if not name or len(name) > _ID_DIGITS_MAX or not (name.isascii() and name.isdigit()):
        return -1
    return int(name)


def scan_dir(path):
    """Ids (all-digit names) in one directory, in directory order."""
    out = []
    with _os.scandir(_os.fsdecode(path)) as it:
        for e in it:
            v = _number(e.name)
            if v >= 0:
                out.append(v)
    return out


def scan_split(queue, kind, split=_SPLIT):
    """Ids in queue/<kind>/0 .. queue/<kind>/<split-1>, subdirectory by subdirectory."""
    base = f"{_os.fsdecode(queue)}/{_os.fsdecode(kind)}/"
    out = []
    for i in range(split):
        out += scan_dir(f"{base}{i}")
    return out


def scan_todo(queue, split=_SPLIT):
    """Ids waiting for preprocessing in todo/ (split like mess/: BIGTODO)."""
    return scan_split(queue, "todo", split)


def parse_records(data):
    """The NUL-terminated records of a queue file (u/p/F/T/D...), NULs removed.

    An unterminated tail is dropped, as qmail's getln(..., 0) readers ignore it.
    """
    return bytes(data).split(b"\0")[:-1]


def read_records(path):
    """parse_records() of the file at `path`."""
    with open(path, "rb") as f:
        return parse_records(f.read())
