"""What qmail's small .qmail helper programs share (forward, condredirect, bouncesaying,
except, preline, condwrite): strerr-style exits, running a condition program and judging its
exit as condredirect.c does, and re-injecting the message through the queue (qmail.c's
qmail_open, so $QMAILQUEUE is honoured as everywhere else).
"""

import errno
import itertools
import os
import subprocess
import sys

from engine import qq

READ_SIZE = 65536
# qmail's error_temp(): errnos that may go away by themselves
_TEMP_ERRNOS = {errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT, errno.EAGAIN,
                errno.ENFILE, errno.EMFILE, errno.ENOSPC, errno.EHOSTUNREACH, errno.ENETDOWN,
                errno.ENETUNREACH, errno.ECONNREFUSED, errno.EDQUOT, errno.ESTALE}


def die(code, *text):
    """strerr_die: the joined text as one line on stderr (qmail-local logs it), then exit."""
    if text:
        sys.stderr.write("".join(text) + "\n")
        sys.stderr.flush()
    sys.exit(code)


def temporary(e):
    return e.errno in _TEMP_ERRNOS


def required_env(name, fatal):
    value = os.environ.get(name)
    if value is None:
        die(100, fatal, f"{name} not set")
    return value


def run_condition(argv, fatal):
    """Run argv (searched in $PATH) with our stdin; its exit code. An exec failure counts as 111
    when temporary, else 100, as the C child does; a crash is a temporary failure."""
    try:
        code = subprocess.run(argv, stdin=0).returncode
    except OSError as e:
        code = 111 if temporary(e) else 100
    if code < 0:
        die(111, fatal, "child crashed")
    return code


def judge_condition(code, fatal):
    """condredirect's switch: 0 goes on, 111 is a temporary failure, anything else exits 0."""
    if code == 111:
        die(111, fatal, "temporary child error")
    if code != 0:
        sys.exit(0)


def rewind_stdin(fatal):
    try:
        os.lseek(0, 0, os.SEEK_SET)
    except OSError as e:
        die(111, fatal, f"unable to rewind: {e.strerror}")


def _stdin_chunks(fatal):
    while True:
        try:
            data = os.read(0, READ_SIZE)
        except OSError as e:
            die(111, fatal, f"unable to read message: {e.strerror}")
        if not data:
            return
        yield data


def reinject(sender, recipients, fatal):
    """$DTLINE + stdin into the queue from `sender` to `recipients`; the queue program's pid.
    The queue's D answer exits 100, Z exits 111, each with its text."""
    enc = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731
    dtline = enc(required_env("DTLINE", fatal))
    try:
        result, qp = qq.submit_with_qp(itertools.chain([dtline], _stdin_chunks(fatal)), enc(sender), [enc(r) for r in recipients])
    except OSError as e:
        die(111, fatal, f"unable to fork: {e.strerror}")
    if result:
        die(100 if result.startswith("D") else 111, fatal, result[1:])
    return qp
