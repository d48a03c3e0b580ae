"""Maildir++ quota: the maildirsize file (qmail-ldap's maildir++.c, as qmail-local and qmail-pop3d use it).

MAILDIRQUOTA is `<n>S` and/or `<n>C` (bytes, messages; 0 = no limit).
`maildirsize` sits in the top Maildir: line 1 the quota definition, then
`<bytes> <count>` lines, negative deltas as `-<bytes> -<count>`. It is
rebuilt from the folders (new/ and cur/ of the Maildir and of every `.name`
sub-folder, `.Trash` only with QUOTATRASH, sizes from `,S=<n>` in file
names) when it is missing, 5120 bytes or more, holds another definition, or
— on an over-quota message — has more than two lines or is 15 minutes old.

Exactness under concurrent deliveries: appends use O_APPEND (one write
per line), and a shared flock on the top Maildir directory is held from
writing a message to appending its line, while a rebuild holds it
exclusively from the folder scan to the rename of the new file. So a
message is either seen by the scan or appended to the rebuilt file, never
both or neither. Where flock is not available the code runs unlocked, as
qmail-ldap always does.
"""

import fcntl
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass

from engine.mailbox import (QUOTA_OPEN, QUOTA_RACE, QUOTA_RECURSIVE, QUOTA_RERACE, QuotaExceeded,
                            temp)
from engine.tcpto import error_str

WARNING_LEVEL = 70          # QUOTA_WARNING_LEVEL: percent at which qmail-quotawarn runs
MAILDIRSIZE_MAX = 5120      # a maildirsize this big or bigger is rebuilt
STALE_SECONDS = 900         # over quota: a maildirsize older than this is rebuilt
RACE_RETRY_SECONDS = 3      # qmail-local waits this long before its second try
MAX_FOLDER_DEPTH = 2        # maildirfolder levels walked up to the top Maildir

_QUOTA_NUMBER = re.compile(rb"([0-9]+)([SC]?)")
_DELTA_LINE = re.compile(rb"([^0-9]*)([0-9]+)([^0-9]*)([0-9]+)")
_SIZE_IN_NAME = re.compile(rb",S=([0-9]*)")


@dataclass(frozen=True)
class Quota:
    """Limits: size in bytes, count in messages; 0 means no limit in that dimension."""
    size: int = 0
    count: int = 0

    def __bool__(self):
        return bool(self.size or self.count)

    def definition(self):
        """The first line of maildirsize: `<n>S`, `<n>C` or `<n>S,<n>C`."""
        parts = ([f"{self.size}S"] if self.size else []) + ([f"{self.count}C"] if self.count else [])
        return ",".join(parts).encode()


@dataclass(frozen=True)
class Usage:
    """What a Maildir holds against its quota."""
    quota: Quota
    size: int = 0
    count: int = 0

    def percent(self, size, count=1):
        """max(size %, count %) with the new message, integer percent as maildir++.c computes it."""
        sp = (self.size + size) * 100 // self.quota.size if self.quota.size else 0
        cp = (self.count + count) * 100 // self.quota.count if self.quota.count else 0
        return max(sp, cp)

    def exceeded_by(self, size, count=1):
        """Would a message of `size` bytes (and `count` files) go over a limit?"""
        q = self.quota
        return bool((q.size and self.size + size > q.size) or (q.count and self.count + count > q.count))


def parse_quota(text):
    """quota_get: numbers followed by S (bytes) or C (messages); anything else is skipped."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    size = count = 0
    for number, unit in _QUOTA_NUMBER.findall(text or b""):
        if unit == b"S":
            size = int(number)
        elif unit == b"C":
            count = int(number)
    return Quota(size, count)


def parse_maildirsize(data):
    """(Quota from line 1, size, count): the delta lines summed, each running total kept at 0 or more."""
    lines = data.split(b"\n")
    size = count = 0
    for line in lines[1:]:
        m = _DELTA_LINE.match(line)
        if not m:
            continue
        size = _apply(size, b"-" in m.group(1), int(m.group(2)))
        count = _apply(count, b"-" in m.group(3), int(m.group(4)))
    return parse_quota(lines[0]), size, count


def _apply(total, negative, figure):
    return max(total - figure, 0) if negative else total + figure


def size_from_name(name):
    """The size in a `,S=<n>` of a Maildir file name, or None."""
    m = _SIZE_IN_NAME.search(name)
    return int(m.group(1) or b"0") if m else None


def _trashed(name):
    """A `:2,` flag set whose leading capitals contain T (maildir++.c's test)."""
    i = name.find(b":2,")
    if i < 0:
        return False
    flags = re.match(rb"[A-Z]*", name[i + 3:]).group(0)
    return b"T" in flags


def _fs(path):
    return os.fsencode(path)


def quota_root(maildir):
    """The top Maildir of a Maildir++ folder: walk up while a `maildirfolder` file is there."""
    root = _fs(maildir).rstrip(b"/") or b"/"
    for level in range(MAX_FOLDER_DEPTH + 1):
        try:
            os.stat(root + b"/maildirfolder")
        except FileNotFoundError:
            return root
        except OSError as e:
            raise temp(f"Unable to stat maildirfolder: {error_str(e)} (QUOTA #1.4.1)", os.fsdecode(root))
        root += b"/.."
    raise temp(QUOTA_RECURSIVE, os.fsdecode(root))


def _folders(root, quotatrash):
    """The Maildir and its `.name` sub-folders (not `..x`; `.Trash` only with QUOTATRASH)."""
    yield root
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if name[:1] == b"." and name[1:2] not in (b"", b".") and (quotatrash or name != b".Trash"):
            yield root + b"/" + name


def scan(root, quotatrash=False):
    """(size, count, newest mtime_ns of the new/ and cur/ dirs) over all folders counted by the quota."""
    size = count = maxtime = 0
    for folder in _folders(root, quotatrash):
        for sub in (b"/new", b"/cur"):
            d = folder + sub
            try:
                maxtime = max(maxtime, os.stat(d).st_mtime_ns)
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                if name[:1] == b"." or _trashed(name):
                    continue
                n = size_from_name(name)
                if n is None:
                    try:
                        n = os.stat(d + b"/" + name).st_size
                    except OSError:
                        continue
                size += n
                count += 1
    return size, count, maxtime


def _changed_since(root, quotatrash, maxtime):
    for folder in _folders(root, quotatrash):
        for sub in (b"/new", b"/cur"):
            try:
                if os.stat(folder + sub).st_mtime_ns > maxtime:
                    return True
            except OSError:
                pass
    return False


@contextmanager
def _locked(root, exclusive):
    """flock on the top Maildir directory; unlocked where the file system refuses."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


def _read(path):
    """read5120: the maildirsize text, or None when missing or too big (then it is removed)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAILDIRSIZE_MAX)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise temp(QUOTA_OPEN.format(error_str(e)), os.fsdecode(path))
    if len(data) >= MAILDIRSIZE_MAX:
        _unlink(path)
        return None
    return data


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write(root, quota, size, count, maxtime):
    """Write a new maildirsize via tmp/maildirsize.<maxtime>.<pid> and rename it into place."""
    tmp = b"%s/tmp/maildirsize.%d.%d" % (root, maxtime // 10**9, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"%s\n%d %d\n" % (quota.definition(), size, count))
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def rebuild(root, quota, quotatrash=False):
    """quota_calcsize: count the folders and write maildirsize. None when a folder changed meanwhile."""
    if not quota:
        return Usage(quota)
    path = root + b"/maildirsize"
    with _locked(root, exclusive=True):
        data = _read(path)
        if data is not None:
            fileq, size, count = parse_maildirsize(data)
            if fileq == quota:
                return Usage(quota, size, count)   # another delivery rebuilt it while we waited
        size, count, maxtime = scan(root, quotatrash)
        try:
            tmp = _write(root, quota, size, count, maxtime)
        except OSError:
            return Usage(quota, size, count)       # maildir++.c goes on without a maildirsize
        if _changed_since(root, quotatrash, maxtime):
            _unlink(tmp)
            return None
        os.rename(tmp, path)
    return Usage(quota, size, count)


def calc(maildir, quota, quotatrash=False):
    """quota_calc: usage from maildirsize, rebuilt when missing, too big or of another definition.

    A zero quota takes the definition found in maildirsize. None on a race (see rebuild)."""
    root = quota_root(maildir)
    path = root + b"/maildirsize"
    data = _read(path)
    if data is not None:
        fileq, size, count = parse_maildirsize(data)
        if not quota:
            quota = fileq
        if fileq == quota:
            return Usage(quota, size, count)
        _unlink(path)
    return rebuild(root, quota, quotatrash)


def recalc(maildir, usage, quotatrash=False):
    """quota_recalc, for a message over quota: keep a short fresh maildirsize, else rebuild it."""
    root = quota_root(maildir)
    path = root + b"/maildirsize"
    data = _read(path)
    if data is not None:
        if data.count(b"\n") <= 2:
            try:
                if time.time() < os.stat(path).st_mtime + STALE_SECONDS:
                    return usage
            except FileNotFoundError:
                pass
        _unlink(path)
    return rebuild(root, usage.quota, quotatrash)


def _retry(step, text):
    usage = step()
    if usage is None:
        time.sleep(RACE_RETRY_SECONDS)
        usage = step()
        if usage is None:
            raise temp(text)
    return usage


def check(maildir, quota, msgsize, quotatrash=False):
    """The quota check before a Maildir delivery: the usage percent including this message.

    Raises QuotaExceeded (100, with .percent) when the message would go over
    the size or count limit even after a recount."""
    if isinstance(quota, (str, bytes)):
        quota = parse_quota(quota)
    usage = _retry(lambda: calc(maildir, quota, quotatrash), QUOTA_RACE)
    if usage.exceeded_by(msgsize):
        usage = _retry(lambda: recalc(maildir, usage, quotatrash), QUOTA_RERACE)
        if usage.exceeded_by(msgsize):
            raise QuotaExceeded("mailfolder", usage.percent(msgsize))
    return usage.percent(msgsize) if usage.quota else 0


@contextmanager
def delivering(maildir):
    """Held from writing a message to counting it, so a concurrent rebuild sees it exactly once."""
    with _locked(quota_root(maildir), exclusive=False):
        yield


def _append(maildir, line):
    path = quota_root(maildir) + b"/maildirsize"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return False            # no maildirsize (no quota yet): nothing to keep up to date
    try:
        os.write(fd, line)
        os.fsync(fd)
        return True
    except OSError:
        return False            # maildir++.c ignores this too; the next rebuild corrects it
    finally:
        os.close(fd)


def add(maildir, size, count=1):
    """quota_add: append `<size> <count>` to maildirsize (a no-op without one). Call inside delivering()."""
    return _append(maildir, b"%d %d\n" % (size, count))


def remove(maildir, size, count=1):
    """quota_rm (qmail-pop3d after deleting): append `-<size> -<count>`."""
    with delivering(maildir):
        return _append(maildir, b"-%d -%d\n" % (size, count))


def warned(maildir):
    """A quota warning already waits in new/ or cur/ (file name's last `.` part starts with QUOTA_WARNING)."""
    for sub in (b"new", b"cur"):
        try:
            names = os.listdir(_fs(maildir).rstrip(b"/") + b"/" + sub)
        except OSError:
            continue
        if any(n[:1] != b"." and n.rpartition(b".")[2].startswith(b"QUOTA_WARNING") for n in names):
            return True
    return False
