"""qmail-remote's memory of dead hosts, queue/lock/tcpto (qmail's tcpto.c), and the qmail-tcpto program.

The table is 1024 bytes: 64 records of 16 bytes. A record holds an IPv4
address (bytes 0-3), the number of recent connect timeouts (byte 4, at most
10) and the time of the last one (bytes 8-11, little endian seconds). The
layout is qmail's, so qmail-tcpto/qmail-tcpok of either implementation read
and clear the same file.

Rules (tcpto.c): only a connect *timeout* counts as an error; a second one
less than 120 s after the last is not counted; a host with two or more
counted timeouts is skipped for (60 + pid%32) * 64 seconds after the last
one; any successful connection resets the count to 0. Readers and writers
take an exclusive flock on the file, as qmail does.

qmail-tcpto (main) prints the table, one line per host with a timeout:
"<ip> timed out <n> seconds ago; # recent timeouts: <count>".
"""

import errno
import fcntl
import ipaddress
import os
import sys
import time

from engine import conf, hier

RECORD = 16
NRECORDS = hier.TCPTO_SIZE // RECORD
MAXCOUNT = 10
RECOUNT_AFTER = 120  # seconds: a timeout sooner than this after the last one is not counted


def table_path(home=None):
    return os.path.join(home or conf.qmailhome(), "queue", "lock", "tcpto")


class Table:
    """The tcpto file opened and locked, its records read (the `getbuf` of tcpto.c); a context manager."""

    def __init__(self, home=None):
        self.path = table_path(home)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.buf = bytearray(os.pread(self.fd, hier.TCPTO_SIZE, 0))
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def __len__(self):
        return len(self.buf) // RECORD

    def record(self, i):
        return self.buf[i * RECORD:(i + 1) * RECORD]

    def find(self, packed):
        """Index of the record for this 4-byte address, or None."""
        for i in range(len(self)):
            if self.buf[i * RECORD:i * RECORD + 4] == packed:
                return i
        return None

    def write(self, i, rec):
        self.buf[i * RECORD:(i + 1) * RECORD] = rec
        os.pwrite(self.fd, bytes(rec), i * RECORD)


def _when(rec):
    return int.from_bytes(rec[8:12], "little")


def _set_when(rec, t):
    rec[8:12] = (t & 0xFFFFFFFF).to_bytes(4, "little")


def _packed(ip):
    """The 4-byte form of an IPv4 address string; None for IPv6 (the table holds IPv4 only)."""
    addr = ipaddress.ip_address(ip)
    return addr.packed if addr.version == 4 else None


def _open(home):
    try:
        return Table(home)
    except OSError:
        return None  # like tcpto.c: no table, no memory


def check(ip, home=None, now=None, pid=None):
    """(dead, was_there): dead = skip this host now; was_there = it has a record (to clear on success)."""
    packed = _packed(ip)
    if packed is None:
        return False, False
    table = _open(home)
    if table is None:
        return False, False
    with table:
        i = table.find(packed)
        if i is None:
            return False, False
        rec = table.record(i)
    now = int(time.time()) if now is None else now
    pid = os.getpid() if pid is None else pid
    if rec[4] >= 2 and now - _when(rec) < ((60 + (pid & 31)) << 6):
        return True, True
    return False, True


def report(ip, timed_out, was_there, home=None, now=None):
    """Record the outcome of a connection attempt (tcpto_err): a timeout counts, anything else resets."""
    if not timed_out and not was_there:
        return
    packed = _packed(ip)
    if packed is None:
        return
    table = _open(home)
    if table is None:
        return
    now = int(time.time()) if now is None else now
    with table:
        i = table.find(packed)
        if i is not None:
            _update(table, i, timed_out, now)
        elif timed_out:
            _insert(table, packed, now)


def _update(table, i, timed_out, now):
    rec = table.record(i)
    if not timed_out:
        rec[4] = 0
    else:
        if rec[4] and now < RECOUNT_AFTER + _when(rec):
            return
        rec[4] = min(rec[4] + 1, MAXCOUNT)
        _set_when(rec, now)
    table.write(i, rec)


def _insert(table, packed, now):
    """Take a free record, else the one whose (last timeout + count*1024 s) is oldest."""
    if not len(table):
        return
    free = [i for i in range(len(table)) if not table.buf[i * RECORD + 4]]
    if free:
        i = free[0]
    else:
        i = min(range(len(table)), key=lambda j: _when(table.record(j)) + (table.record(j)[4] << 10))
    rec = table.record(i)
    rec[0:4] = packed
    _set_when(rec, now)
    rec[4] = 1
    table.write(i, rec)


def entries(home=None):
    """[(ip, seconds_since_last_timeout, count)] for every record with a timeout; OSError if unreadable."""
    with Table(home) as table:
        records = [table.record(i) for i in range(len(table))]
    now = int(time.time())
    return [(str(ipaddress.IPv4Address(bytes(rec[0:4]))), now - _when(rec), rec[4])
            for rec in records if rec[4] >= 1]


# djb's error_str texts, which qmail's tools print after "fatal: ...: "
_DJB_ERRORS = {
    errno.EINTR: "interrupted system call", errno.ENOMEM: "out of memory",
    errno.ENOENT: "file does not exist", errno.ETXTBSY: "text busy", errno.EIO: "input/output error",
    errno.EEXIST: "file already exists", errno.ETIMEDOUT: "timed out",
    errno.EINPROGRESS: "operation in progress", errno.EAGAIN: "temporary failure",
    errno.EPIPE: "broken pipe", errno.EPERM: "permission denied", errno.EACCES: "access denied",
    errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory", errno.EINVAL: "invalid argument",
    errno.ENFILE: "system cannot open more files", errno.EMFILE: "process cannot open more files",
    errno.ENOSPC: "out of disk space", errno.EROFS: "read-only file system", errno.ELOOP: "symbolic link loop",
}


def error_str(err):
    return _DJB_ERRORS.get(err.errno) or os.strerror(err.errno or errno.EIO).lower()


def main(argv=None):
    """qmail-tcpto: print the table; errors go to stdout as in qmail-tcpto.c, exit 111."""
    home = conf.qmailhome()
    try:
        os.chdir(home)
        os.chdir(os.path.join("queue", "lock"))
    except OSError as e:
        sys.stdout.write(f"fatal: unable to chdir: {error_str(e)}\n")
        return 111
    try:
        rows = entries(home)
    except OSError as e:
        sys.stdout.write(f"fatal: unable to open tcpto: {error_str(e)}\n")
        return 111
    for ip, ago, count in rows:
        sys.stdout.write(f"{ip} timed out {ago} seconds ago; # recent timeouts: {count}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
