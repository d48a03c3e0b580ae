"""qmail-tcpok: clear qmail-remote's table of hosts that timed out (queue/lock/tcpto).

Writes 1024 zero bytes over the table under an exclusive lock, so
qmail-remote makes no assumptions about failing addresses (qmail-tcpok.c).
Errors: "qmail-tcpok: fatal: unable to <step> <path>: <reason>" on stderr, exit 111.
"""

import fcntl
import os
import sys

from engine import conf, hier
from engine.tcpto import error_str

FATAL = "qmail-tcpok: fatal: "


class TcpokError(Exception):
    """A step failed; str() is qmail-tcpok's message without the "fatal" prefix."""


def _step(what, path, action):
    try:
        return action()
    except OSError as e:
        raise TcpokError(f"unable to {what} {path}: {error_str(e)}") from e


def clear(home=None):
    """Zero the whole table under its lock (qmail-tcpok); TcpokError names the failing step."""
    home = home or conf.qmailhome()
    path = os.path.join(home, "queue", "lock", "tcpto")
    fd = _step("write", path, lambda: os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    try:
        _step("lock", path, lambda: fcntl.flock(fd, fcntl.LOCK_EX))
        _step("clear", path, lambda: os.pwrite(fd, bytes(hier.TCPTO_SIZE), 0))
    finally:
        os.close(fd)


def main(argv=None):
    home = conf.qmailhome()
    try:
        _step("chdir to", home, lambda: os.chdir(home))
        _step("chdir to", home + "/queue/lock", lambda: os.chdir("queue/lock"))
        clear(home)
    except TcpokError as e:
        sys.stderr.write(f"{FATAL}{e}\n")
        return 111
    return 0


if __name__ == "__main__":
    sys.exit(main())
