"""qmail-newmrh: compiles ~/control/morercpthosts into ~/control/morercpthosts.cdb (qmail's qmail-newmrh.c).

Each line is lower-cased, loses its trailing spaces, tabs and newline, and
becomes a key unless it is empty or starts with '#' (the rule of
qmail-cdb). The cdb is written to control/morercpthosts.tmp, fsynced and
renamed into place. qmail-smtpd and qmail-qmtpd consult morercpthosts.cdb
only when there is no rcpthosts.cdb (qmail-ldap's rcpthosts.c). Exit 0, or
111 with a "qmail-newmrh: fatal: ..." message.
"""

import os
import sys

from engine import cdb, conf


def build():
    """control/morercpthosts -> control/morercpthosts.cdb, relative to the current directory; the exit code."""
    try:
        source = open("control/morercpthosts", "rb")
    except OSError as e:
        return cdb.die(f"qmail-newmrh: fatal: unable to read control/morercpthosts: {e.strerror}")
    with source:
        return cdb.build_keys(source, "control/morercpthosts.cdb", "control/morercpthosts.tmp",
                              "qmail-newmrh", "control/morercpthosts")


def main(argv=None):
    os.umask(0o033)
    home = conf.qmailhome()
    try:
        os.chdir(home)
    except OSError as e:
        return cdb.die(f"qmail-newmrh: fatal: unable to chdir to {home}: {e.strerror}")
    return build()


if __name__ == "__main__":
    sys.exit(main())
