"""splogger: qmail's splogger(8) (splogger.c), the logger qmail-start pipes its log into.

`qmail-start ./Maildir/ splogger qmail [facility]` sends each line to syslog
(facility mail unless a number is given) with the tag and a `<sec>.<usec>`
stamp; lines starting `warning:` go out at LOG_WARNING, `alert:` at
LOG_ALERT, others at LOG_INFO. A line longer than 799 characters continues
in further messages stamped `<stamp>+`; characters outside 32..126 become
`?`. Datagrams go to /dev/log ($SYSLOG_SOCKET names another socket); while
syslog is away lines are dropped, never left to block the mail system.
"""

import os
import socket
import sys
import syslog
import time

LINE_MAX = 799  # splogger.c's buffer: syslog truncates long lines (or crashes)
PRINTABLE = bytes(c if 32 <= c <= 126 else ord("?") for c in range(256))


class Syslog:
    """syslog(3) over a Unix datagram socket, reconnecting after syslogd restarts."""

    RETRY = 1.0  # seconds without connect attempts after a failed one

    def __init__(self, ident, facility, path):
        self.ident, self.facility, self.path = ident, facility, path
        self.sock = None
        self.retry_at = 0.0

    def send(self, priority, text):
        data = b"<%d>%s: %s" % (self.facility | priority, self.ident.encode(), text)
        for _ in range(2):
            if self.sock is None and not self._connect():
                return
            try:
                self.sock.send(data)
                return
            except OSError:  # syslogd restarted: one new connection, then the line is dropped
                self.sock.close()
                self.sock = None

    def _connect(self):
        if time.monotonic() < self.retry_at:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            self.retry_at = time.monotonic() + self.RETRY
            return False
        self.sock = s
        return True


def priority(line):
    if line.startswith(b"warning:"):
        return syslog.LOG_WARNING
    if line.startswith(b"alert:"):
        return syslog.LOG_ALERT
    return syslog.LOG_INFO


def stamp():
    now = time.time()
    return b"%d.%06d" % (int(now), int(now % 1 * 1_000_000))


def log_line(out, line):
    """One input line (without its newline) as one or more syslog messages."""
    line = line.translate(PRINTABLE)
    if not line:
        return
    level, first = priority(line), stamp()
    out.send(level, first + b" " + line[:LINE_MAX])
    for i in range(LINE_MAX, len(line), LINE_MAX):
        out.send(level, first + b"+" + line[i:i + LINE_MAX])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ident = argv[0] if argv else "splogger"
    facility = syslog.LOG_MAIL
    if len(argv) > 1:
        digits = argv[1][:len(argv[1]) - len(argv[1].lstrip("0123456789"))]
        facility = int(digits or "0") << 3
    out = Syslog(ident, facility, os.environ.get("SYSLOG_SOCKET") or "/dev/log")
    pending = b""
    while data := os.read(0, 65536):
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            log_line(out, line)
    return 0  # a last line without newline is dropped, as splogger.c does


if __name__ == "__main__":
    sys.exit(main())
