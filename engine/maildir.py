"""Local mailbox writing for qmail-local: Maildir and mbox deliveries, Maildir creation.

Stands for qmail-local's maildir_child()/maildir() and mailfile() in
qmail-ldap, with AUTOMAILDIRMAKE (mailmaker.c) and the Maildir++ quota
(engine.quota). The file work is done by the maildir kernel
(engine._maildir_c from ext/maildir.c, pure twin engine._maildir_py).

Maildir: tmp/<time>.M<usec>P<pid>Q<n>.<host> is created with O_EXCL, the
Return-Path and Delivered-To lines and the message are written, fsynced,
and moved to new/<same>,S=<size> without ever replacing a file; then new/
is fsynced. A file in new/ is always complete. The local pool calls
defer_new_sync(): a Maildir on the queue's file system then skips the
new/ fsync, because qmail-send flushes that file system with one syncfs(2)
for a batch of deliveries before it marks any of them done. The delivery identifier is
maildir(5)'s modern form rather than qmail's bare pid, because deliveries
run in long-lived workers that may write several messages a second.
The host part has '/' and ':' escaped as \\057 and \\072.

mbox: O_APPEND, flock (30 seconds at most), `From ` line, Return-Path,
Delivered-To, the message with ">From " quoting, an empty line, fsync; a
failed write is truncated away.

Failures raise engine.mailbox.MailboxError with qmail-local's exit code
and text (QuotaExceeded for the quota bounce).
"""

import errno
import fcntl
import os
import socket
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass

from engine import compiled, conf, control, quota as maildirquota
from engine.mailbox import (CHDIR_MAILDIR, MAILDIR_CORRUPT, MAILDIR_CREATE, MBOX_OPEN, MBOX_READ,
                            MBOX_WRITE, PERM, READ_MESSAGE, SLOW_LOCK, TEMP, TEMP_MAILDIR, MailboxError,
                            QuotaExceeded, temp)
from engine.tcpto import error_str

kernel = compiled.load("maildir")

HOST_MAX = 64               # qmail copies at most this much of gethostname()
LOCK_SECONDS = 30           # mailfile(): alarm(30) around the lock
LOCK_POLL_SECONDS = 0.05
_HOST_ESCAPES = {ord("/"): "\\057", ord(":"): "\\072"}
# error_temp(): a chdir failure with these is a temporary maildir error, others "Unable to chdir"
_TEMP_ERRNOS = {errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT, errno.EAGAIN,
                errno.EDEADLK, errno.EBUSY, errno.ENFILE, errno.EMFILE, errno.EFBIG, errno.ENOSPC,
                errno.EDQUOT, errno.ESTALE, errno.ENOLCK}


_deferred_device = None     # st_dev whose new/ fsyncs the caller makes up for (defer_new_sync)


def defer_new_sync(device):
    """Skip the new/ fsync for Maildirs on file system `device` (None: never skip).

    Only for a caller that flushes that file system (syncfs) before it treats a
    delivery as done: the local pool, whose qmail-send syncs the queue's file
    system before marking recipients delivered."""
    global _deferred_device
    _deferred_device = device


def _sync_new_needed(top):
    if _deferred_device is None:
        return True
    try:
        return os.stat(top + b"/new").st_dev != _deferred_device
    except OSError:
        return True


@dataclass(frozen=True)
class Delivered:
    """A written message: path of the file (the new/ file, or the mbox), bytes written, quota percent."""
    path: bytes
    size: int
    percent: int = 0

    @property
    def name(self):
        return os.path.basename(self.path)


def unique_host(name=None):
    """The host part of Maildir names: gethostname() cut at 64 bytes, '/' and ':' escaped."""
    name = (socket.gethostname() if name is None else name).encode("utf-8", "surrogateescape")[:HOST_MAX]
    return name.decode("utf-8", "surrogateescape").translate(_HOST_ESCAPES).encode("utf-8", "surrogateescape")


def _mkdir(path, label):
    """mailmaker.c makedir(): an existing directory is fine, anything else in the way is corruption."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise temp(MAILDIR_CORRUPT.format(label), os.fsdecode(path) + ": not a directory")
    except OSError as e:
        raise temp(MAILDIR_CREATE.format(label), f"{os.fsdecode(path)}: {e.strerror}")


def make_maildir(maildir):
    """AUTOMAILDIRMAKE: create the Maildir and its tmp, cur, new (mode 0700) where missing."""
    label = os.fsdecode(maildir)
    top = os.fsencode(maildir).rstrip(b"/") or b"/"
    _mkdir(top, label)
    for sub in (b"tmp", b"cur", b"new"):
        _mkdir(top + b"/" + sub, label)


def message_size(message):
    """Bytes left to deliver: a buffer's length, or a file's size past the fd's offset."""
    if not isinstance(message, int):
        return memoryview(message).nbytes
    st = os.fstat(message)
    return max(st.st_size - os.lseek(message, 0, os.SEEK_CUR), 0)


def _maildir_error(top, e):
    detail = f"{os.fsdecode(e.filename or top)}: {e.strerror}"
    if e.step == "read":
        return temp(READ_MESSAGE, detail)
    if e.step == "tmp" and not (os.path.isdir(top) and os.access(top, os.X_OK)):
        try:
            os.stat(top)
            cause = errno.EACCES if os.path.isdir(top) else errno.ENOTDIR
        except OSError as err:
            cause = err.errno
        if cause not in _TEMP_ERRNOS:
            return temp(CHDIR_MAILDIR, f"{os.fsdecode(top)}: {os.strerror(cause)}")
    return temp(TEMP_MAILDIR, f"{detail} ({e.step})")


def deliver_maildir(maildir, prefix, message, *, quota=None, quotatrash=False, automake=False, host=None,
                    near_quota=None):
    """Deliver one message into a Maildir; returns Delivered(path of the new/ file, size, quota percent).

    prefix: the Return-Path and Delivered-To lines (bytes). message: bytes-like,
    or a readable fd (read from its offset to EOF). quota: MAILDIRQUOTA text
    (empty/None: no quota work at all). host: the name's host part, default
    unique_host(). near_quota(): called before writing when the Maildir will be at least
    WARNING_LEVEL percent full (qmail-local runs qmail-quotawarn there). Raises MailboxError /
    QuotaExceeded."""
    top = os.fsencode(maildir).rstrip(b"/") or b"/"
    if automake:
        make_maildir(maildir)  # its error texts name the instruction as written, with its '/'

    percent = 0
    if quota:
        percent = maildirquota.check(top, quota, message_size(message), quotatrash)
        if near_quota and percent >= maildirquota.WARNING_LEVEL:
            near_quota()
    with maildirquota.delivering(top) if quota else nullcontext():
        try:
            name, size = kernel.deliver(top, prefix, message, unique_host() if host is None else host,
                                        _sync_new_needed(top))
        except OSError as e:
            raise _maildir_error(top, e) from e
        if quota:
            maildirquota.add(top, size)
    return Delivered(top + b"/new/" + name, size, percent)


def _mbox_quota(path, quota, message):
    """mailfile()'s quota: file size + message against the size limit; the percent for the warning."""
    limit = maildirquota.parse_quota(quota).size
    if not limit:
        return 0
    try:
        current = os.stat(path).st_size
    except FileNotFoundError:
        current = 0
    except OSError as e:
        raise temp(f"Unable to quota {os.fsdecode(path)}: {error_str(e)}. (#4.3.0)")
    total = current + message_size(message)
    percent = total * 100 // limit
    if total > limit:
        raise QuotaExceeded("mailbox", percent)
    return percent


def lock_mbox(fd, timeout_error=None):
    """lock_ex with qmail-local's 30 s limit; False when the file system cannot lock (then no truncation).

    When the time is up it raises `timeout_error`, by default qmail-local's temporary refusal."""
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise timeout_error if timeout_error is not None else temp(SLOW_LOCK)
            time.sleep(LOCK_POLL_SECONDS)
        except OSError:
            return False


def deliver_mbox(path, ufline, prefix, message, *, quota=None, near_quota=None):
    """Append one message to an mbox file; returns Delivered(path, bytes written, quota percent).

    ufline: the `From <sender> <ctime>` line (bytes, with its newline);
    prefix: Return-Path and Delivered-To lines; message and near_quota as for deliver_maildir."""
    path = os.fsencode(path)
    name = os.fsdecode(path)
    percent = _mbox_quota(path, quota, message) if quota else 0
    if near_quota and percent >= maildirquota.WARNING_LEVEL:
        near_quota()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise MailboxError(TEMP, MBOX_OPEN.format(name, error_str(e)), name) from e
    try:
        locked = lock_mbox(fd)
        pos = os.lseek(fd, 0, os.SEEK_END)
        try:
            size = kernel.append_mbox(fd, ufline + prefix, message)
        except OSError as e:
            if locked:
                os.ftruncate(fd, pos)
            text = MBOX_READ.format(error_str(e)) if e.step == "read" else MBOX_WRITE.format(name, error_str(e))
            raise MailboxError(TEMP, text, name) from e
    finally:
        os.close(fd)
    return Delivered(path, size, percent)


def run_quotawarn(target, fd, env):
    """quota_warning(): bin/qmail-quotawarn <mailbox> with the message on stdin, as qmail-local runs it.

    Skipped when control/quotawarning is missing or empty, where
    qmail-quotawarn exits 0 without doing anything."""
    try:
        if not control.read_raw("quotawarning", b""):
            return
    except control.ControlError as e:
        raise temp(f"{e}. (#4.3.0)") from e
    prog = os.path.join(conf.qmailhome(), "bin", "qmail-quotawarn")
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        code = subprocess.run([prog, target], stdin=fd, env=env).returncode
    except OSError as e:
        code, why = 2, error_str(e)
    if code < 0:
        raise temp("Aack, child crashed. (#4.3.0)")
    if code == 2:
        raise temp(f"Unable to run quotawarn program: {prog}: {why}. (#4.2.2)")
    if code == TEMP:
        raise temp("")
    if code:
        raise MailboxError(PERM, "")


def deliver_line(line, fd, rp, dt, uf, env):
    """A .qmail file-delivery line for qmail-local: `...name/` is a Maildir, anything else an mbox.

    The message is on fd (rewound here); rp, dt, uf are RPLINE, DTLINE and
    UFLINE; env is the delivery environment: MAILDIRQUOTA, the runtime forms
    of the build options AUTOMAILDIRMAKE and QUOTATRASH (set = on), and what
    qmail-quotawarn needs (USER, HOST, RECIPIENT, DTLINE). The quota warning
    runs before an over-quota bounce, and before writing a message that brings the mailbox to
    70 % (qmail-local's maildir() and mailfile(): a failing warning then defers or bounces the
    message without having delivered it)."""
    os.lseek(fd, 0, os.SEEK_SET)
    enc = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731
    prefix = enc(rp) + enc(dt)
    q = env.get("MAILDIRQUOTA") or None

    def near_quota():
        run_quotawarn(line, fd, env)
        os.lseek(fd, 0, os.SEEK_SET)

    try:
        if line.endswith("/"):
            return deliver_maildir(line, prefix, fd, quota=q, quotatrash="QUOTATRASH" in env,
                                   automake="AUTOMAILDIRMAKE" in env, near_quota=near_quota)
        return deliver_mbox(line, enc(uf), prefix, fd, quota=q, near_quota=near_quota)
    except QuotaExceeded:
        run_quotawarn(line, fd, env)
        raise
