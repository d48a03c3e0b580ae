"""djb's constant database (cdb) and qmail-cdb, the program that builds key-only cdbs.

A cdb file: a 2048-byte header of 256 (position, slot count) pairs, one per
hash table; the records (key length, data length, key, data); then the 256
hash tables of (hash, record position) slots. All numbers are
little-endian uint32. The hash is h = 5381; h = ((h << 5) + h) ^ c, and a
key lives in table h & 255, first tried at slot (h >> 8) % slots. Keys are
matched exactly, so callers lower-case them first; one key may have several
values, found in the order they were added (cdb_findnext). The hash and
lookup are a compiled kernel (ext/cdb.pyx, pure twin engine/_cdb_py.py).

The files are byte-for-byte what qmail's cdb_make writes, so cdbs made by
qmail, tinycdb (`cdb -c`) or this module can be read by any of them. A cdb
is written to a temporary file, fsynced and renamed over the old one, so a
reader sees the old or the new database, never half of one.

As a program (qmail-cdb, qmail-ldap's qmail-cdb.c, used by control/Makefile
for locals.cdb and rcpthosts.cdb):

    qmail-cdb out.cdb out.tmp < lines

Every line is lower-cased, loses its trailing spaces, tabs and newline, and
becomes a key with empty data unless it is empty or starts with '#'. Exit 0,
or 111 with "qmail-cdb: fatal: ..." when something cannot be read or written.
"""

import errno
import mmap
import os
import struct
import sys

from engine import compiled

_kernel = compiled.load("cdb")

HEADER_SIZE = 2048
TABLES = 256
UINT32_MAX = 0xFFFFFFFF
_PAIR = struct.Struct("<II")


class CdbError(OSError):
    """A cdb file is damaged (a pointer leaves the file) or too big for 32-bit positions."""

    def __init__(self, path, why):
        super().__init__(errno.EPROTO, why, path)


def _key_bytes(key):
    """Keys and data may be given as str (UTF-8, surrogateescape) or bytes."""
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    return bytes(key)


def hash(key):
    """djb's cdb hash of `key` (bytes or str), an int below 2**32."""
    return _kernel.hash(_key_bytes(key))


# --- reading ------------------------------------------------------------------------------

class Cdb:
    """An open cdb file, memory-mapped; use as a context manager or close() it."""

    __slots__ = ("path", "_buf", "_map")

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # mmap refuses an empty file; an empty cdb is simply a damaged one
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._buf = self._map if self._map is not None else b""

    @property
    def buffer(self):
        """The mapped file, for the kernel's find/find_all."""
        return self._buf

    def close(self):
        if self._map is not None:
            self._map.close()
            self._map = None
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self, lookup, key):
        try:
            return lookup(self._buf, _key_bytes(key))
        except ValueError as e:
            raise CdbError(self.path, str(e)) from None

    def get(self, key, default=None):
        """The first value stored under `key` (cdb_find), or `default`."""
        found = self._run(_kernel.find, key)
        return default if found is None else found

    def get_all(self, key):
        """Every value stored under `key`, in the order they were added (cdb_findnext loop)."""
        return self._run(_kernel.find_all, key)

    def __contains__(self, key):
        return self._run(_kernel.find, key) is not None

    def items(self):
        """Every (key, data) record in file order, like `cdb -d`."""
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            raise CdbError(self.path, "bad cdb format: shorter than its header")
        end = _PAIR.unpack_from(buf, 0)[0]  # the first hash table follows the last record
        pos = HEADER_SIZE
        while pos < end:
            if pos + 8 > len(buf):
                raise CdbError(self.path, "bad cdb format: a record leaves the file")
            klen, dlen = _PAIR.unpack_from(buf, pos)
            start = pos + 8
            if start + klen + dlen > len(buf):
                raise CdbError(self.path, "bad cdb format: a record leaves the file")
            yield bytes(buf[start:start + klen]), bytes(buf[start + klen:start + klen + dlen])
            pos = start + klen + dlen


def get(path, key, default=None):
    """Open `path`, look up the first value of `key`, close. FileNotFoundError when missing."""
    with Cdb(path) as db:
        return db.get(key, default)


def contains(path, key):
    """Whether `path` has `key` (read per lookup, as qmail reads locals.cdb and rcpthosts.cdb)."""
    with Cdb(path) as db:
        return key in db


# --- writing ------------------------------------------------------------------------------

class CdbMaker:
    """cdb_make: add() records to a binary file opened for writing, then finish()."""

    def __init__(self, f, path="cdb"):
        self._f = f
        self._path = path
        self._pos = HEADER_SIZE
        self._slots = [[] for _ in range(TABLES)]  # per table: (hash, record position), in add order
        f.write(b"\0" * HEADER_SIZE)

    def _advance(self, n):
        self._pos += n
        if self._pos > UINT32_MAX:
            raise CdbError(self._path, "cdb too big: positions need more than 32 bits")

    def add(self, key, data=b""):
        key, data = _key_bytes(key), _key_bytes(data)
        h = _kernel.hash(key)
        self._slots[h & 255].append((h, self._pos))
        self._f.write(_PAIR.pack(len(key), len(data)))
        self._f.write(key)
        self._f.write(data)
        self._advance(8 + len(key) + len(data))

    def finish(self):
        """Write the hash tables and the header; the caller flushes and fsyncs."""
        header = bytearray()
        for slots in self._slots:
            table = _table(slots)
            header += _PAIR.pack(self._pos, len(table))
            self._f.write(b"".join(_PAIR.pack(h, p) for h, p in table))
            self._advance(8 * len(table))
        self._f.seek(0)
        self._f.write(header)


def _table(slots):
    """One hash table: twice as many slots as keys, each key at its first free slot from (h >> 8) % size."""
    size = 2 * len(slots)
    table = [(0, 0)] * size
    for h, p in slots:
        where = (h >> 8) % size
        while table[where][1]:
            where = where + 1 if where + 1 < size else 0
        table[where] = (h, p)
    return table


def write_file(tmp, items):
    """A cdb of the (key, data) pairs in `tmp`, fsynced and closed. Mode 0666 less the umask."""
    with open(tmp, "wb") as f:
        maker = CdbMaker(f, tmp)
        for key, data in items:
            maker.add(key, data)
        maker.finish()
        f.flush()
        os.fsync(f.fileno())


def replace(tmp, path):
    """Rename `tmp` over `path` and fsync the directory, so the new cdb survives a crash."""
    os.rename(tmp, path)
    dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def create(path, items, tmp=None):
    """Atomically (re)create the cdb `path` from (key, data) pairs, through `tmp` (default path + ".tmp")."""
    tmp = tmp or path + ".tmp"
    write_file(tmp, items)
    replace(tmp, path)


# --- qmail-cdb -----------------------------------------------------------------------------

_TRAILING = b" \t\n"


class InputError(Exception):
    """Reading the lines to be stored failed; wraps the OSError."""


def line_keys(lines):
    """qmail-cdb's rule: each line lower-cased (ASCII), trailing space/tab/LF stripped; empty and '#' lines skipped."""
    try:
        for line in lines:
            key = line.lower().rstrip(_TRAILING)
            if key and not key.startswith(b"#"):
                yield key, b""
    except OSError as e:
        raise InputError(e) from e


def build_keys(lines, path, tmp, program, source):
    """Shared by qmail-cdb and qmail-newmrh: key-only cdb from lines; exit code, fatal message on stderr."""
    fatal = f"{program}: fatal: "
    try:
        write_file(tmp, line_keys(lines))
    except InputError as e:
        return die(f"{fatal}unable to read {source}: {_reason(e.__cause__)}")
    except OSError as e:
        return die(f"{fatal}unable to write to {tmp}: {_reason(e)}")
    try:
        replace(tmp, path)
    except OSError as e:
        return die(f"{fatal}unable to move {tmp} to {path}: {_reason(e)}")
    return 0


def _reason(e):
    return e.strerror or str(e)


def die(message):
    print(message, file=sys.stderr)
    return 111


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        return die("qmail-cdb: usage: qmail-cdb rules.cdb rules.tmp")
    os.umask(0o033)
    return build_keys(sys.stdin.buffer, argv[0], argv[1], "qmail-cdb", "from stdin")


if __name__ == "__main__":
    sys.exit(main())
