"""`make check` (qmail's instcheck): verifies a qmail home against engine.hier.

Reports every missing directory or file, wrong owner, wrong mode and
missing bin/ program, one line each, and exits 111 if there is any.
A home whose queue is owned by the invoking non-root user is checked as a
single-user instance.

Usage: qmail-instcheck [--single-user] [QMAILHOME]
"""

import argparse
import os
import pwd
import stat
import sys

from engine import conf, hier
from engine.install import console_scripts


def missing_programs(home):
    bindir = os.path.join(home, "bin")
    return [f"{os.path.join(bindir, name)}: missing"
            for name in sorted(console_scripts()) if not os.path.exists(os.path.join(bindir, name))]


def setuid_queue_problems(home):
    """A root installation's bin/qmail-queue must be setuid qmailq, mode 4711, like qmail's."""
    path = os.path.join(home, "bin", "qmail-queue")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []  # reported by missing_programs
    want_uid = pwd.getpwnam(conf.USER_QUEUE).pw_uid
    if stat.S_ISLNK(st.st_mode) or st.st_uid != want_uid or stat.S_IMODE(st.st_mode) != 0o4711:
        return [f"{path}: must be a setuid {conf.USER_QUEUE} program, mode 4711 (run make setup)"]
    return []


def check(home, single_user):
    found = hier.problems(home, single_user) + missing_programs(home)
    return found if single_user else found + setuid_queue_problems(home)


def main(argv=None):
    p = argparse.ArgumentParser(prog="qmail-instcheck")
    p.add_argument("home", nargs="?", default=conf.qmailhome())
    p.add_argument("--single-user", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(os.path.join(args.home, "queue")):
        print(f"qmail-instcheck: fatal: {args.home}/queue: missing; run make setup", file=sys.stderr)
        return 111
    single_user = args.single_user or hier.is_single_user(args.home)
    found = check(args.home, single_user)
    for line in found:
        print(f"qmail-instcheck: warning: {line}", file=sys.stderr)
    if found:
        return 111
    print(f"qmail-instcheck: {args.home} is complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
