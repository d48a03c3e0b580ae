"""condredirect: qmail's condredirect(1), a .qmail helper (condredirect.c).

`|condredirect newaddress program [arg ...]` runs the program with the
message on stdin. Exit 0: the message is re-injected to newaddress with
$SENDER as envelope sender and $DTLINE prepended, and condredirect exits 99
so qmail-local skips the rest of the .qmail file; 111 or a crash: temporary
failure; any other exit: condredirect exits 0 and the .qmail file goes on.
"""

import signal
import sys

from engine import dotprog

FATAL = "condredirect: fatal: "


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        dotprog.die(100, "condredirect: usage: condredirect newaddress program [ arg ... ]")
    dotprog.judge_condition(dotprog.run_condition(argv[1:], FATAL), FATAL)
    dotprog.rewind_stdin(FATAL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sender = dotprog.required_env("SENDER", FATAL)
    qp = dotprog.reinject(sender, [argv[0]], FATAL)
    dotprog.die(99, "condredirect: qp ", str(qp))


if __name__ == "__main__":
    sys.exit(main())
