"""Creates a single-user qmail home for tests, exactly as `make setup QMAILHOME=DIR` does as non-root."""

import os

from engine import hier, install


def make_qmailhome(home, me="testhost.example.org"):
    hier.create(home, single_user=True)
    install.link_programs(home)  # qmail-local runs bin/qmail-quotawarn, qmail-reply ... from here
    with open(os.path.join(home, "control", "me"), "w") as f:
        f.write(me + "\n")
    return home
