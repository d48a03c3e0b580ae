"""condwrite: qmail-ldap's condwrite, a .qmail helper (condwrite.c).

`|condwrite {maildir/|mailfile} program [arg ...]` is condredirect that
writes instead of forwarding: when the program exits 0 the message goes into
the Maildir (name ends in /) or mbox, with $RPLINE and $DTLINE (and $UFLINE
for an mbox) in front, under the $MAILDIRQUOTA Maildir++ quota with
qmail-quotawarn at 70 % as qmail-local does; then condwrite exits 99 so the
.qmail file stops. 111 or a crash: temporary; any other exit: exit 0.
"""

import os
import signal
import sys

from engine import dotprog, maildir
from engine.mailbox import MailboxError

FATAL = "condwrite: fatal: "


def required(name):
    value = os.environ.get(name)
    if value is None:
        dotprog.die(100, FATAL, f"{name} not present.")
    return value


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        dotprog.die(100, "condwrite: usage: condwrite {maildir/|mailfile} program [ arg ... ]")
    rp, dt, uf = required("RPLINE"), required("DTLINE"), required("UFLINE")
    dotprog.judge_condition(dotprog.run_condition(argv[1:], FATAL), FATAL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        maildir.deliver_line(argv[0], 0, rp, dt, uf, dict(os.environ))
    except MailboxError as e:
        dotprog.die(e.code, FATAL, e.text)
    return 99


if __name__ == "__main__":
    sys.exit(main())
