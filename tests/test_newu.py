"""qmail-newu (users/assign -> users/cdb) and engine.users, the users/cdb look-up of qmail-lspawn."""

import os
import shutil
import subprocess
import sys

import pytest

from engine import cdb, users

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINYCDB = shutil.which("cdb")

# the example of qmail-users(5)
MAN_PAGE = b"""+:alias:7790:2108:/var/qmail/alias:-::
+joe-:joe:507:100:/home/joe:-::
=joe:joe:507:100:/home/joe:::
.
"""


def newu(home, assign):
    with open(os.path.join(home, "users", "assign"), "wb") as f:
        f.write(assign)
    return subprocess.run([sys.executable, "-m", "engine.newu"], capture_output=True,
                          env=dict(os.environ, QMAILHOME=home, PYTHONPATH=ROOT))


def dump(home):
    return subprocess.run([TINYCDB, "-d", os.path.join(home, "users", "cdb")],
                          capture_output=True, check=True).stdout


def test_man_page_example(qmailhome):
    r = newu(qmailhome, MAN_PAGE)
    assert r.returncode == 0, r.stderr
    assert users.lookup("joe", qmailhome) == ("joe", 507, 100, "/home/joe", "", "")
    assert users.lookup("joe-direct", qmailhome) == ("joe", 507, 100, "/home/joe", "-", "direct")
    assert users.lookup("bill", qmailhome) == ("alias", 7790, 2108, "/var/qmail/alias", "-", "bill")
    assert not os.path.exists(os.path.join(qmailhome, "users", "cdb.tmp"))


def test_keys_and_data_exactly_as_qmail_newu_stores_them(qmailhome):
    assert newu(qmailhome, MAN_PAGE).returncode == 0
    assert dump(qmailhome) == (
        b"+1,35:!->alias\x007790\x002108\x00/var/qmail/alias\x00-\x00\n"
        b"+5,24:!joe-->joe\x00507\x00100\x00/home/joe\x00-\x00\n"
        b"+5,23:!joe\x00->joe\x00507\x00100\x00/home/joe\x00\x00\n"
        b"+0,1:->-\n\n")


def test_exact_keys_lowercased_and_fields_after_the_sixth_colon_ignored(qmailhome):
    assert newu(qmailhome, b"=Joe.Shmoe:joe:503:78:/home/joe:::trailing:junk\n.\n").returncode == 0
    assert dump(qmailhome) == b"+11,22:!joe.shmoe\x00->joe\x00503\x0078\x00/home/joe\x00\x00\n+0,0:->\n\n"
    assert users.lookup("JOE.shmoe", qmailhome) == ("joe", 503, 78, "/home/joe", "", "")


def test_exact_beats_wildcard_and_longest_wildcard_wins(qmailhome):
    assign = (b"+:alias:1:1:/a:-::\n+ab:ab:2:2:/ab:-:x-:\n+abc-:abc:3:3:/abc:-::\n"
              b"=abc-exact:exact:4:4:/e:::\n.\n")
    assert newu(qmailhome, assign).returncode == 0
    assert users.lookup("abc-exact", qmailhome)[0] == "exact"
    assert users.lookup("abc-Other", qmailhome) == ("abc", 3, 3, "/abc", "-", "Other")
    assert users.lookup("abz", qmailhome) == ("ab", 2, 2, "/ab", "-", "x-z")     # prepend + rest
    assert users.lookup("ab", qmailhome) == ("ab", 2, 2, "/ab", "-", "x-")       # +loc includes loc itself
    assert users.lookup("zzz", qmailhome) == ("alias", 1, 1, "/a", "-", "zzz")


def test_first_of_duplicate_assignments_wins(qmailhome):
    assert newu(qmailhome, b"=joe:first:1:1:/1:::\n=JOE:second:2:2:/2:::\n.\n").returncode == 0
    assert users.lookup("joe", qmailhome)[0] == "first"


def test_no_wildcard_means_no_match(qmailhome):
    assert newu(qmailhome, b"=joe:joe:1:1:/j:::\n.\n").returncode == 0
    assert users.lookup("bill", qmailhome) is None


def test_wildcard_characters_kept_as_written(qmailhome):
    # qmail-newu records the prefix's last character unlowered; qmail-lspawn compares the lowered address
    assert newu(qmailhome, b"+Joe-X:joe:1:1:/j:-::\n+ann-:ann:2:2:/a:-::\n.\n").returncode == 0
    assert dump(qmailhome).endswith(b"+0,2:->X-\n\n")
    assert users.lookup("joe-xyz", qmailhome) is None
    assert users.lookup("ann-1", qmailhome)[0] == "ann"


def test_text_after_the_dot_line_is_ignored(qmailhome):
    assert newu(qmailhome, b"=joe:joe:1:1:/j:::\n.anything\nnot an assignment\n").returncode == 0
    assert users.lookup("joe", qmailhome)[0] == "joe"


def test_uid_and_gid_are_leading_digits(qmailhome):
    assert newu(qmailhome, b"=joe:joe:12abc:x:/j:::\n.\n").returncode == 0
    assert users.lookup("joe", qmailhome)[1:3] == (12, 0)


@pytest.mark.parametrize("assign, line", [
    (b"=joe:joe:1:1:/j::\n.\n", 1),                       # five fields
    (b"=ok:ok:1:1:/o:::\nno colon at all\n.\n", 2),
    (b"=ok:ok:1:1:/o:::\n:joe:1:1:/j:::\n.\n", 2),         # empty address part
    (b"=ok:ok:1:1:/o:::\n\n.\n", 2),                       # empty line
    (b"=jo\0e:joe:1:1:/j:::\n.\n", 1)])
def test_bad_line_exits_111_naming_it(qmailhome, assign, line):
    r = newu(qmailhome, assign)
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-newu: fatal: bad format in users/assign line %d: " % line)
    assert not os.path.exists(os.path.join(qmailhome, "users", "cdb"))


@pytest.mark.parametrize("assign", [b"=joe:joe:1:1:/j:::\n", b"=joe:joe:1:1:/j:::", b""])
def test_missing_dot_line_is_bad_format(qmailhome, assign):
    r = newu(qmailhome, assign)
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-newu: fatal: bad format in users/assign")


def test_bad_file_keeps_the_old_cdb(qmailhome):
    assert newu(qmailhome, MAN_PAGE).returncode == 0
    assert newu(qmailhome, b"broken\n.\n").returncode == 111
    assert users.lookup("joe", qmailhome)[0] == "joe"


def test_missing_assign(qmailhome):
    r = subprocess.run([sys.executable, "-m", "engine.newu"], capture_output=True,
                       env=dict(os.environ, QMAILHOME=qmailhome, PYTHONPATH=ROOT))
    assert r.returncode == 111
    assert r.stderr == b"qmail-newu: fatal: unable to open users/assign\n"


# --- engine.users on its own ----------------------------------------------------------------

def test_no_users_cdb_means_no_assignment(qmailhome):
    assert users.lookup("joe", qmailhome) is None


def test_cdb_without_wildcard_record_is_an_error(qmailhome):
    cdb.create(users.path(qmailhome), [(b"!joe\0", b"joe\0" b"1\0" b"1\0/j\0\0")])
    with pytest.raises(OSError, match="wildcard"):
        users.lookup("joe", qmailhome)


def test_short_record_is_an_error(qmailhome):
    cdb.create(users.path(qmailhome), [(b"!joe\0", b"joe\0" b"1\0" b"1"), (b"", b"")])
    with pytest.raises(OSError, match="fields"):
        users.lookup("joe", qmailhome)


def test_damaged_cdb_is_an_oserror(qmailhome):
    with open(users.path(qmailhome), "wb") as f:
        f.write(b"\xff" * 3000)
    with pytest.raises(OSError):
        users.lookup("joe", qmailhome)


def test_lookup_takes_bytes_and_8bit(qmailhome):
    assert newu(qmailhome, b"=j\xf6rg:joerg:9:9:/home/j\xf6rg:::\n.\n").returncode == 0
    found = users.lookup(b"J\xf6rg", qmailhome)
    assert found[3].encode("utf-8", "surrogateescape") == b"/home/j\xf6rg"
    assert users.lookup("J\udcf6rg", qmailhome) == found


def test_qmail_lspawn_uses_users_cdb(qmailhome):
    from engine import lspawn
    assert newu(qmailhome, MAN_PAGE).returncode == 0
    target = lspawn.local_lookup(qmailhome, "joe-direct")
    assert (target.user, target.uid, target.home, target.dash, target.ext) == ("joe", 507, "/home/joe", "-", "direct")
    with open(users.path(qmailhome), "wb") as f:
        f.write(b"\0" * 10)
    with pytest.raises(lspawn.Refusal) as e:
        lspawn.local_lookup(qmailhome, "joe")
    assert e.value.code == lspawn.QLX_CDB


def test_qmail_lspawn_sees_a_rebuilt_users_cdb_at_once(qmailhome):
    from engine import lspawn
    assert newu(qmailhome, b"=joe:joe:507:100:/home/joe:::\n.\n").returncode == 0
    assert lspawn.local_lookup(qmailhome, "joe").home == "/home/joe"
    assert newu(qmailhome, b"=joe:joe:507:100:/home/moved:::\n.\n").returncode == 0
    assert lspawn.local_lookup(qmailhome, "joe").home == "/home/moved"
    os.unlink(users.path(qmailhome))
    assert lspawn.users_cdb_lookup(qmailhome, "joe") is None
