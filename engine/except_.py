"""except: qmail's except(1), a .qmail helper (except.c); the module is except_ as `except` is a
Python keyword.

`except program [arg ...]` runs the program and turns its success into a
permanent failure: exit 0 becomes 100, 111 (or a crash) stays temporary,
any other exit becomes 0.
"""

import sys

from engine import dotprog

FATAL = "except: fatal: "


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        dotprog.die(100, "except: usage: except program [ arg ... ]")
    code = dotprog.run_condition(argv, FATAL)
    if code == 0:
        return 100
    if code == 111:
        dotprog.die(111, FATAL, "temporary child error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
