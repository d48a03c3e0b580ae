"""maildir2mbox: qmail's maildir2mbox(1) (maildir2mbox.c), moving a Maildir's messages into an mbox.

Reads $MAILDIR (new/ and cur/, oldest delivery first, as qmail-pop3d lists
them), copies $MAIL to $MAILTMP under a lock on $MAIL, appends each message
with a `From <Return-Path sender> <ctime>` line and >From quoting, fsyncs,
renames $MAILTMP over $MAIL, then removes the moved messages; a message that
cannot be removed will be moved twice, and a warning says so.
"""

import fcntl
import os
import sys
import time

from engine import pop3d
from engine.maildir import kernel

FATAL = "maildir2mbox: fatal: "
RETURN_PATH = b"Return-Path: <"


def die(text):
    sys.stderr.write(FATAL + text + "\n")
    sys.exit(111)


def required(name):
    value = os.environb.get(name.encode())
    if value is None:
        die(f"{name} not set")
    return value


def from_line(first, when):
    """The `From ` line maildir2mbox.c builds from a message's first line and its delivery time."""
    sender = b"XXX"
    if first.startswith(RETURN_PATH) and first.endswith(b"\n"):
        addr = first[len(RETURN_PATH):-2]
        sender = b"MAILER-DAEMON" if first[len(RETURN_PATH):len(RETURN_PATH) + 1] == b">" else \
            addr.replace(b" ", b"-").replace(b"\t", b"-")
    return b"From " + sender + b" " + time.asctime(time.gmtime(when)).encode() + b"\n"


def first_line(fd):
    data = os.pread(fd, 4096, 0)
    end = data.find(b"\n")
    return data[:end + 1] if end >= 0 else data


def copy_mbox(mbox, tmp):
    """$MAIL's old contents into a fresh $MAILTMP; the open descriptor of $MAILTMP."""
    try:
        old = os.open(mbox, os.O_RDONLY)
    except OSError as e:
        die(f"unable to read {os.fsdecode(mbox)}: {e.strerror}")
    try:
        new = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        die(f"unable to create {os.fsdecode(tmp)}: {e.strerror}")
    with os.fdopen(old, "rb") as src:
        while data := src.read(65536):
            os.write(new, data)
    return new


def main(argv=None):
    os.umask(0o077)
    mbox, tmp = required("MAIL"), required("MAILTMP")
    try:
        os.chdir(required("MAILDIR"))
    except OSError as e:
        die(f"unable to chdir to $MAILDIR: {e.strerror}")
    now = int(time.time())
    pop3d.clean_tmp(now)
    try:
        messages = pop3d.scan(now)
    except OSError as e:
        die(f"unable to scan $MAILDIR: {e.strerror}")
    if not messages:
        return 0
    try:
        lock = os.open(mbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError as e:
        die(f"unable to lock {os.fsdecode(mbox)}: {e.strerror}")
    out = copy_mbox(mbox, tmp)
    for m in messages:
        try:
            fd = os.open(m.fn, os.O_RDONLY)
        except OSError as e:
            die(f"unable to read $MAILDIR/{os.fsdecode(m.fn)}: {e.strerror}")
        try:
            kernel.append_mbox(out, from_line(first_line(fd), pop3d.delivery_time(m.fn) or now), fd)
        except OSError as e:
            die(f"unable to write to {os.fsdecode(tmp)}: {e.strerror}")
        finally:
            os.close(fd)
    os.close(out)
    try:
        os.rename(tmp, mbox)
    except OSError as e:
        die(f"unable to move {os.fsdecode(tmp)} to {os.fsdecode(mbox)}: {e.strerror}")
    for m in messages:
        try:
            os.unlink(m.fn)
        except OSError as e:
            sys.stderr.write(f"maildir2mbox: warning: $MAILDIR/{os.fsdecode(m.fn)} will be delivered twice; "
                             f"unable to unlink: {e.strerror}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
