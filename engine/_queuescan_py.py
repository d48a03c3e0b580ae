"""Queue scanning, pure-Python twin of ext/queuescan.pyx: message ids in the split directories."""

import os as _os

from engine.conf import SPLIT as _SPLIT


def _number(name):
    return int(name) if name.isdigit() and name.isascii() and len(name) <= 19 else -1


def scan_dir(path):
    """Ids (all-digit names) in one directory, in directory order."""
    out = []
    with _os.scandir(path) as it:
        for e in it:
            v = _number(e.name)
            if v >= 0:
                out.append(v)
    return out


def scan_split(queue, kind, split=_SPLIT):
    """Ids in queue/<kind>/0 .. queue/<kind>/<split-1>."""
    out = []
    for i in range(split):
        out += scan_dir(f"{queue}/{kind}/{i}")
    return out
