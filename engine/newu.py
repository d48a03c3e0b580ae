"""qmail-newu: compiles ~/users/assign into ~/users/cdb (qmail's qmail-newu.c, qmail-users(5)).

users/assign holds one assignment per line and ends with a line starting
with '.':

    =local:user:uid:gid:homedir:dash:ext:       exact address
    +prefix:user:uid:gid:homedir:dash:prepend:  every address starting with prefix

The cdb stores exactly what qmail-newu stores, so qmail's qmail-lspawn and
engine.users read either program's output:

    "!" + lower(local) + NUL   -> "user NUL uid NUL gid NUL homedir NUL dash NUL ext"
    "!" + lower(prefix)        -> "user NUL uid NUL gid NUL homedir NUL dash NUL prepend"
    ""                         -> the distinct last characters of the wildcard prefixes

Only the first six colons after the address separate fields; anything after
the sixth is ignored. A line that does not start with '+' is an exact
assignment whatever its first character is (qmail reads it so). The wildcard
characters are recorded as written (not lower-cased), as qmail-newu does.
The cdb is written to users/cdb.tmp, fsynced and renamed over users/cdb.

Errors exit 111 with qmail-newu's "qmail-newu: fatal: ..." messages; a bad
line (no colon, empty address, fewer than six fields, a NUL, no '.' line at
the end) is "bad format in users/assign" with its line number and text.
"""

import os
import sys

from engine import cdb, conf

FIELDS = 6
FATAL = "qmail-newu: fatal: "


class FormatError(Exception):
    """users/assign breaks the format; the message names the line."""


def _die(message):
    print(FATAL + message, file=sys.stderr)
    return 111


def _bad(number, line):
    text = line.rstrip(b"\n").decode("utf-8", "backslashreplace")
    return FormatError(f"bad format in users/assign line {number}: {text}")


def parse_line(number, line):
    """(key, data, wildcard character or None) for one assignment line, which still ends in '\\n'."""
    if b"\0" in line:
        raise _bad(number, line)
    colon = line.find(b":")
    if colon <= 0:
        raise _bad(number, line)
    address = line[1:colon].lower()
    wild = None
    if line.startswith(b"+"):
        key = b"!" + address
        if colon >= 2:
            wild = line[colon - 1:colon]
    else:
        key = b"!" + address + b"\0"
    fields = line[colon + 1:].split(b":", FIELDS)
    if len(fields) <= FIELDS:
        raise _bad(number, line)
    return key, b"\0".join(fields[:FIELDS]), wild


def assignments(lines):
    """Yields (key, data) for every assignment, then ("", wildcard characters); FormatError on a bad file."""
    wildchars = bytearray()
    for number, line in enumerate(lines, 1):
        if line.startswith(b"."):
            break
        if not line.endswith(b"\n"):
            raise _bad(number, line)
        key, data, wild = parse_line(number, line)
        if wild is not None and wild[0] not in wildchars:
            wildchars += wild
        yield key, data
    else:
        raise FormatError("bad format in users/assign: no '.' line at the end")
    yield b"", bytes(wildchars)


def build(home=None):
    """users/assign -> users/cdb; returns the exit code, messages on stderr."""
    users = os.path.join(home or conf.qmailhome(), "users")
    try:
        f = open(os.path.join(users, "assign"), "rb")
    except OSError:
        return _die("unable to open users/assign")
    try:
        with f:
            text = f.read()
    except OSError:
        return _die("unable to read users/assign")
    try:
        records = list(assignments(_lines(text)))
    except FormatError as e:
        return _die(str(e))
    tmp = os.path.join(users, "cdb.tmp")
    try:
        cdb.write_file(tmp, records)
    except OSError:
        return _die("unable to write users/cdb.tmp")
    try:
        cdb.replace(tmp, os.path.join(users, "cdb"))
    except OSError:
        return _die("unable to move users/cdb.tmp to users/cdb")
    return 0


def _lines(text):
    """The lines of `text`, each with its '\\n' (only the last may lack one)."""
    parts = text.split(b"\n")
    for part in parts[:-1]:
        yield part + b"\n"
    if parts[-1]:
        yield parts[-1]


def main(argv=None):
    os.umask(0o033)
    return build()


if __name__ == "__main__":
    sys.exit(main())
