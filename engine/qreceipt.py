"""qreceipt: qmail's qreceipt(1) (qreceipt.c), a .qmail program answering delivery notice requests.

`|qreceipt youraddress` in a .qmail file: when the message's header has a
Notice-Requested-Upon-Delivery-To field listing exactly `youraddress`, a
"success notice" goes to the envelope sender ($SENDER) through the queue
(qmail_open, so $QMAILQUEUE is honoured), from the empty sender. Nothing is
sent for a bounce (empty sender) or a double bounce (#@[]).

Exit codes as qreceipt.c: 0 (sent, or nothing to send), 100 (usage, a field
that cannot be parsed, the queue refused permanently), 111 (read error,
cannot start the queue, temporary queue error), with qmail's texts.
"""

import os
import sys

from engine import hfield, qq, token822
from engine.quote import quote2

USAGE = "usage: qreceipt deliveryaddress"
DOUBLE_BOUNCE = b"#@[]"
EXIT_PERM, EXIT_TEMP = 100, 111


def die(code, text):
    sys.stderr.write(f"qreceipt: {text}\n")
    sys.stderr.flush()
    sys.exit(code)


class _HeaderDone(Exception):
    """The header is over: qreceipt needs nothing from the body."""


class Request:
    """What the header says: is a notice requested for `target`, and the Message-ID field."""

    def __init__(self, target):
        self.target = target
        self.wanted = False
        self.messageid = None

    def field(self, line):
        kind = hfield.known(line)
        if kind == hfield.MESSAGEID:
            self.messageid = line
        elif kind == hfield.NOTICEREQUESTEDUPONDELIVERYTO:
            try:
                token822.addrlist(token822.parse(line), self._check)
            except token822.ParseError:
                sys.stderr.buffer.write(b"qreceipt: fatal: unable to parse this: " + line)
                sys.stderr.flush()
                sys.exit(EXIT_PERM)

    def _check(self, reversed_addr):
        if token822.unquote(reversed_addr[::-1]) == self.target:
            self.wanted = True


def notice(target, returnpath, messageid):
    """The success notice qreceipt.c writes (a bare header: qmail-queue adds the Received line)."""
    quoted = quote2(returnpath)
    text = (b"From: DELIVERY NOTICE SYSTEM <" + quoted + b">\n"
            b"To: <" + quoted + b">\n"
            b"Subject: success notice\n"
            b"\n"
            b"Hi! This is the qreceipt program. Your message was delivered to the\n"
            b"following address: " + target + b". Thanks for asking.\n")
    if messageid is not None:
        text += b"Your " + messageid
    return text


def send_notice(target, returnpath, messageid):
    try:
        result = qq.submit(notice(target, returnpath, messageid), b"", [returnpath])
    except OSError:
        die(EXIT_TEMP, "fatal: unable to fork")
    if result.startswith("D"):
        die(EXIT_PERM, "fatal: permanent qmail-queue error")
    if result:
        die(EXIT_TEMP, "fatal: temporary qmail-queue error")


def read_header(request, stdin):
    """Feed the header fields to `request`; stops at the end of the header."""
    def done():
        raise _HeaderDone

    try:
        hfield.headerbody(stdin, request.field, done, lambda data: None)
    except _HeaderDone:
        pass
    except OSError:
        die(EXIT_TEMP, "fatal: read error")


def main(argv=None):
    argv = sys.argv if argv is None else argv
    if len(argv) < 2:
        die(EXIT_PERM, USAGE)
    target = os.fsencode(argv[1])
    returnpath = os.environb.get(b"SENDER")
    if returnpath is None:
        die(EXIT_PERM, USAGE)
    request = Request(target)
    read_header(request, sys.stdin.buffer)
    if request.wanted and returnpath not in (b"", DOUBLE_BOUNCE):
        send_notice(target, returnpath, request.messageid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
