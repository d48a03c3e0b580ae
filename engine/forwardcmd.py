"""forward: qmail's forward(1), a .qmail helper (forward.c).

`|forward address...` re-injects the message to the addresses with
$NEWSENDER (set by qmail-local) as envelope sender and $DTLINE prepended.
The queue's permanent refusal exits 100, a temporary one 111; success
prints `forward: qp <pid>`. (qmail-ldap's cluster forwarder is
qmail-forward, engine/forward.py.)
"""

import signal
import sys

from engine import dotprog

FATAL = "forward: fatal: "


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sender = dotprog.required_env("NEWSENDER", FATAL)
    qp = dotprog.reinject(sender, argv, FATAL)
    dotprog.die(0, "forward: qp ", str(qp))


if __name__ == "__main__":
    sys.exit(main())
