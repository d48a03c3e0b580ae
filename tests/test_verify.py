"""qmail-verify as a program: NUL-terminated addresses in, K / D<text>NUL / Z<text>NUL out,
against the test slapd (the in-process form is exercised by qmail-smtpd's RCPTCHECK tests)."""

import os
import subprocess
import sys

from support.ldapenv import fresh_domain, point_at
from support.slapd import add_user, slapd  # noqa: F401
from support.users import make_users

VERIFY = os.path.join(os.path.dirname(sys.executable), "qmail-verify")


def run(home, data):
    return subprocess.run([VERIFY], input=data, capture_output=True, timeout=60,
                          env={**os.environ, "QMAILHOME": home})


def test_answers_each_address_in_order(qmailhome, slapd):  # noqa: F811
    d = fresh_domain("verify")
    point_at(qmailhome, slapd, ldaplocaldelivery="0")
    add_user(slapd, f"on.{d}", f"on@{d}")
    add_user(slapd, f"off.{d}", f"off@{d}", accountStatus="disabled")
    add_user(slapd, f"gone.{d}", f"gone@{d}", accountStatus="deleted")
    p = run(qmailhome, b"".join(a.encode() + b"\0" for a in
                                (f"on@{d}", f"off@{d}", f"nobody@{d}", "nohost", f"gone@{d}", f"ON@{d.upper()}")))
    assert p.returncode == 0
    assert p.stdout == (b"K"
                        b"DMailaddress is administratively disabled. (#5.2.1)\0"
                        b"DSorry, no mailbox here by that name. (#5.1.1)\0"
                        b"DSorry, address must include host name. (#5.1.3)\0"
                        b"DSorry, no mailbox here by that name. (#5.1.1)\0"
                        b"K")


def test_local_users_when_ldaplocaldelivery(qmailhome, slapd, tmp_path):  # noqa: F811
    make_users(qmailhome, str(tmp_path / "home"), ["alice"])
    point_at(qmailhome, slapd, ldaplocaldelivery="1")
    assert run(qmailhome, b"alice@local.test\0no-such-user-x@local.test\0").stdout == \
        b"KDSorry, no mailbox here by that name. (#5.1.1)\0"


def test_unreachable_directory_is_temporary(qmailhome):
    with open(os.path.join(qmailhome, "control", "ldapserver"), "w") as f:
        f.write("127.0.0.1:1\n")
    with open(os.path.join(qmailhome, "control", "ldapbasedn"), "w") as f:
        f.write("dc=example\n")
    assert run(qmailhome, b"a@b.test\0").stdout.startswith(b"Z")


def test_an_unterminated_address_gets_no_answer(qmailhome, slapd):  # noqa: F811
    point_at(qmailhome, slapd)
    p = run(qmailhome, b"half@x.test")
    assert (p.returncode, p.stdout) == (0, b"")
