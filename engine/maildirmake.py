"""maildirmake: create an empty Maildir (qmail's maildirmake).

    maildirmake name

Makes name, name/tmp, name/new and name/cur with mode 0700 (umask 077).
An existing name is an error, as in qmail. Exit 0, 100 on usage, 111 on
failure with `maildirmake: fatal: unable to mkdir <dir>: <error>`.
"""

import os
import sys

FATAL = "maildirmake: fatal: "


def make(name):
    """mkdir name, name/tmp, name/new, name/cur (0700); raises OSError naming the failing directory."""
    old = os.umask(0o077)
    try:
        os.mkdir(name, 0o700)
        for sub in ("tmp", "new", "cur"):
            os.mkdir(os.path.join(name, sub), 0o700)
    finally:
        os.umask(old)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("maildirmake: usage: maildirmake name\n")
        return 100
    try:
        make(args[0])
    except OSError as e:
        sys.stderr.write(f"{FATAL}unable to mkdir {e.filename}: {e.strerror}\n")
        return 111
    return 0


if __name__ == "__main__":
    sys.exit(main())
