"""maildirwatch: qmail's maildirwatch(1) (maildirwatch.c), a new-mail summary for a VT100 window.

Every 30 seconds it clears the window (ESC [;H ESC [;J) and lists the
messages in $MAILDIR/new, oldest first, each as

    FROM <Return-Path> TO <Delivered-To>
    ESC[1m From: line ESC[0m          (when there is one)
    Subject, then the body, 158 characters in all

followed by a blank line. A missing Return-Path or Delivered-To shows "?";
control and 8-bit characters become '?' in the first line and '/' in the
others. Before each pass tmp/ files left for 36 hours are removed and new/
is scanned as qmail-pop3d does (a message of the current second waits for
the next pass). Errors exit 111: "MAILDIR not set", "unable to chdir to
<dir>: ...", "unable to scan $MAILDIR/new: ...", "trouble reading new
message".

$MAILDIRWATCH_INTERVAL replaces the 30 seconds (for tests).
"""

import os
import signal
import sys
import time

from engine import hfield, pop3d
from engine.tcpto import error_str

FATAL = "maildirwatch: fatal: "
INTERVAL = 30
TEXT_MAX = 158
CLEAR = b"\033[;H\033[;J"


class _Full(Exception):
    """The summary text is complete: the rest of the body is not needed."""


def die(text):
    sys.stderr.write(FATAL + text + "\n")
    sys.stderr.flush()
    sys.exit(111)


def printable(data, replacement):
    return bytes(ch if 32 <= ch <= 126 else replacement for ch in data)


def field_value(line):
    """hfield_skipname's value without the final newline, None when the field is empty."""
    colon = line.find(b":")
    value = line[colon + 1:].lstrip(b" \t\r\n")
    return value[:-1] if value else None


class Summary:
    """What maildirwatch shows of one message."""

    def __init__(self):
        self.sender = b"?"
        self.recipient = b"?"
        self.fromline = b""
        self.text = bytearray()

    def add_text(self, data):
        self.text += data
        del self.text[TEXT_MAX:]

    def field(self, line):
        kind = hfield.known(line)
        if kind == hfield.SUBJECT:
            self.add_text(line[line.find(b":") + 1:].lstrip(b" \t\r\n"))
        elif kind in (hfield.DELIVEREDTO, hfield.RETURNPATH):
            value = field_value(line)
            if value is not None:
                if kind == hfield.DELIVEREDTO:
                    self.recipient = value
                else:
                    self.sender = value
        elif kind == hfield.FROM:
            self.fromline = line[:-1]

    def body(self, data):
        self.add_text(data)
        if len(self.text) >= TEXT_MAX:
            raise _Full

    def render(self):
        out = b"FROM " + printable(self.sender, ord("?")) + b" TO <" + printable(self.recipient, ord("?")) + b">\n"
        if self.fromline:
            out += b"\033[1m" + printable(self.fromline, ord("/")) + b"\033[0m\n"
        return out + printable(bytes(self.text), ord("/")) + b"\n\n"


def summarize(path):
    """The rendered summary of the message file `path`; None when it cannot be opened (gone)."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    summary = Summary()
    with f:
        try:
            hfield.headerbody(f, summary.field, lambda: None, summary.body)
        except _Full:
            pass
        except OSError:
            die("trouble reading new message")
    return summary.render()


def new_messages(now):
    """new/ files in delivery order, leaving out this second's (maildir_scan with flagnew only)."""
    try:
        names = os.listdir(b"new")
    except OSError as e:
        die(f"unable to scan $MAILDIR/new: {error_str(e)}")
    found = []
    for name in names:
        if name.startswith(b"."):
            continue
        fn = b"new/" + name
        when = pop3d.delivery_time(fn)
        if when is not None and when < now:
            found.append((when, fn))
    return [fn for _, fn in sorted(found, key=lambda item: item[0])]


def one_screen():
    now = int(time.time())
    pop3d.clean_tmp(now)
    screen = bytearray(CLEAR)
    for fn in new_messages(now):
        screen += summarize(fn) or b""
    return bytes(screen)


def main(argv=None):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a closed window ends us quietly, as in C
    maildir = os.environ.get("MAILDIR")
    if maildir is None:
        die("MAILDIR not set")
    try:
        os.chdir(maildir)
    except OSError as e:
        die(f"unable to chdir to {maildir}: {error_str(e)}")
    interval = float(os.environ.get("MAILDIRWATCH_INTERVAL") or INTERVAL)
    out = sys.stdout.buffer
    while True:
        out.write(one_screen())
        out.flush()
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
