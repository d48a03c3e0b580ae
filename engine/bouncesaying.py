"""bouncesaying: qmail's bouncesaying(1), a .qmail helper (bouncesaying.c).

`|bouncesaying error [program [arg ...]]` bounces the message with `error`
(exit 100). With a program, only when the program exits 0; 111 or a crash
is a temporary failure; any other exit lets the .qmail file go on (exit 0).
"""

import sys

from engine import dotprog

FATAL = "bouncesaying: fatal: "


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        dotprog.die(100, "bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]")
    if len(argv) > 1:
        dotprog.judge_condition(dotprog.run_condition(argv[1:], FATAL), FATAL)
    dotprog.die(100, argv[0])


if __name__ == "__main__":
    sys.exit(main())
