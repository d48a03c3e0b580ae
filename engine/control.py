"""Control files (qmail's control.c): ~/control/<name> read as line, list, int or raw.

Rules, as in qmail: "line" is the first line with trailing spaces, tabs and
newline stripped; "list" is every line so stripped, empty lines and lines
starting with '#' dropped; "int" is a line parsed as a decimal number
(leading digits, like scan_ulong); "raw" is the file verbatim. A missing
file gives the caller's default. Files are decoded as UTF-8 with
surrogateescape so 8-bit addresses survive unchanged.
"""

import errno
import os

from engine import conf

INT_MAX = 2**31 - 1
ULONG_MAX = 2**64 - 1
_TRAILING = " \t\r\n"


class ControlError(Exception):
    """A control file exists but cannot be read or parsed; the message names it."""


def control_dir(home=None):
    return os.path.join(home or conf.qmailhome(), "control")


def path(name, home=None):
    return os.path.join(control_dir(home), name)


def _read_bytes(name, home):
    """File contents, or None when it does not exist; other errors are ControlError."""
    p = path(name, home)
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ControlError(f"unable to read {p}: {os.strerror(e.errno or errno.EIO)}") from e


def _decode(data):
    return data.decode("utf-8", "surrogateescape")


def read_raw(name, default=None, home=None):
    """The whole file as bytes, unchanged; `default` when missing."""
    data = _read_bytes(name, home)
    return default if data is None else data


def read_line(name, default=None, home=None):
    """First line, trailing whitespace stripped; `default` when missing."""
    data = _read_bytes(name, home)
    if data is None:
        return default
    return _decode(data.split(b"\n", 1)[0]).rstrip(_TRAILING)


def read_list(name, default=None, home=None):
    """Non-empty, non-comment lines with trailing whitespace stripped; `default` when missing."""
    data = _read_bytes(name, home)
    if data is None:
        return default
    lines = (_decode(raw).rstrip(_TRAILING) for raw in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith("#")]


def _parse_number(name, line, home, limit):
    digits = len(line) - len(line.lstrip("0123456789"))
    if digits == 0:
        raise ControlError(f"{path(name, home)}: line 1: not a number: {line!r}")
    value = int(line[:digits])
    if value > limit:
        raise ControlError(f"{path(name, home)}: line 1: number too large: {line[:digits]}")
    return value


def read_int(name, default, home=None):
    """Decimal int (leading digits, like scan_ulong); `default` when missing; above INT_MAX is an error."""
    line = read_line(name, None, home)
    return default if line is None else _parse_number(name, line, home, INT_MAX)


def read_ulong(name, default, home=None):
    """Like read_int without the INT_MAX bound (qmail's control_readulong)."""
    line = read_line(name, None, home)
    return default if line is None else _parse_number(name, line, home, ULONG_MAX)


def me(home=None):
    """control/me, or None when the host has no name configured."""
    return read_line("me", None, home)


class ConstMap:
    """qmail's constmap: a set (or key:value map) looked up ASCII-case-insensitively."""

    __slots__ = ("_map",)

    def __init__(self, items=(), values=False, sep=":"):
        self._map = {}
        for item in items:
            if values:
                key, _, value = item.partition(sep)
            else:
                key, value = item, ""
            self._map[_ascii_lower(key)] = value  # a later duplicate wins, as in constmap's chains

    def __contains__(self, key):
        return _ascii_lower(key) in self._map

    def get(self, key, default=None):
        return self._map.get(_ascii_lower(key), default)

    def __len__(self):
        return len(self._map)


def _ascii_lower(s):
    return s.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
