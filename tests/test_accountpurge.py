"""qmailAccountPurge (engine/accountpurge.py) run as the program against the test slapd.

Each test puts its users in an organizational unit of its own and points control/ldapbasedn
there, so the due entries of other tests sharing the session's slapd stay out of sight.
"""

import os
import subprocess
import sys

import ldap
import pytest

from support.ldapenv import fresh_domain, point_at, write_control
from support.slapd import add_user
from support.slapd import slapd  # noqa: F401

PROG = os.path.join(os.path.dirname(sys.executable), "qmailAccountPurge")
PAST, FUTURE = "1000000000", "4000000000"


@pytest.fixture
def unit(qmailhome, slapd):  # noqa: F811
    """(home, ou dn, domain): a fresh ou, control/ldapbasedn pointing at it."""
    dom = fresh_domain("purge")
    ou = f"ou={dom},{slapd.suffix}"
    slapd.add(ou, {"objectClass": ["top", "organizationalUnit"], "ou": dom})
    point_at(qmailhome, slapd, ldapbasedn=ou)
    return qmailhome, ou, dom


def run(home, *args):
    return subprocess.run([PROG, *args], env={**os.environ, "QMAILHOME": home},
                          capture_output=True, text=True, timeout=60)


def maildir(path):
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    with open(os.path.join(path, "new", "1.M1P1.host"), "w") as f:
        f.write("Subject: left behind\n\nbody\n")
    return path


def user(slapd, ou, name, dom, **attrs):  # noqa: F811
    return add_user(slapd, f"{name}.{dom}", f"{name}@{dom}", ou=ou, **attrs)


def test_show_lists_due_deleted_entries_sorted_by_mail(unit, slapd):  # noqa: F811
    home, ou, dom = unit
    zed = user(slapd, ou, "zed", dom, accountStatus="deleted", qmailAccountPurge=PAST,
               mailMessageStore="/var/mail/zed/", mailHost="mx1.example", mailAlternateAddress=[f"z@{dom}"])
    amy = user(slapd, ou, "amy", dom, accountStatus="Deleted", qmailAccountPurge=PAST,
               homeDirectory="/home/amy", mailMessageStore="./Maildir/")
    user(slapd, ou, "later", dom, accountStatus="deleted", qmailAccountPurge=FUTURE, mailMessageStore="/x/")
    user(slapd, ou, "active", dom, accountStatus="active", qmailAccountPurge=PAST, mailMessageStore="/y/")
    user(slapd, ou, "nodate", dom, accountStatus="deleted", mailMessageStore="/w/")
    r = run(home, "show")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"{amy}\nmail=amy@{dom}\nuid=amy.{dom}\nmailMessageStore=./Maildir/\n\n"
                        f"{zed}\nmail=zed@{dom}\nmailAlternateAddress=z@{dom}\nuid=zed.{dom}\n"
                        f"mailMessageStore=/var/mail/zed/\nmailHost=mx1.example\n\n")


def test_purge_removes_due_mailboxes_of_this_host_only(unit, slapd, tmp_path):  # noqa: F811
    home, ou, dom = unit
    me = open(os.path.join(home, "control", "me")).read().strip()
    gone = maildir(str(tmp_path / "home" / "gone" / "Maildir"))
    here = maildir(str(tmp_path / "store" / "here"))
    later = maildir(str(tmp_path / "home" / "later" / "Maildir"))
    elsewhere = maildir(str(tmp_path / "store" / "elsewhere"))
    write_control(home, "ldapmessagestore", str(tmp_path / "store"))
    dn_gone = user(slapd, ou, "gone", dom, accountStatus="deleted", qmailAccountPurge=PAST,
                   homeDirectory=str(tmp_path / "home" / "gone"), mailMessageStore="./Maildir/")
    dn_here = user(slapd, ou, "here", dom, accountStatus="deleted", qmailAccountPurge=PAST,
                   mailMessageStore="here/", mailHost=me.upper())
    user(slapd, ou, "later", dom, accountStatus="deleted", qmailAccountPurge=FUTURE,
         homeDirectory=str(tmp_path / "home" / "later"), mailMessageStore="./Maildir/")
    dn_else = user(slapd, ou, "elsewhere", dom, accountStatus="deleted", qmailAccountPurge=PAST,
                   mailMessageStore="elsewhere/", mailHost="other.example")
    r = run(home, "purge")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(gone) and not os.path.exists(here)
    assert os.path.isdir(tmp_path / "home" / "gone")  # only the mailMessageStore goes, not the home
    assert os.path.exists(os.path.join(later, "new", "1.M1P1.host"))
    assert os.path.exists(os.path.join(elsewhere, "new", "1.M1P1.host"))
    assert r.stdout.splitlines() == [f"{dn_gone}: removed {gone}", f"{dn_here}: removed {here}"]
    assert f"qmailAccountPurge: warning: {dn_else}: mailbox is on other.example" in r.stderr
    # the entries stay; a second run finds nothing left to remove and says nothing
    again = run(home, "purge")
    assert (again.returncode, again.stdout) == (0, "")
    assert f"dn: {dn_gone}" in slapd_dump(slapd, ou)


def slapd_dump(slapd, base):  # noqa: F811
    return "\n".join(f"dn: {dn}" for dn, _ in slapd.conn().search_s(base, ldap.SCOPE_SUBTREE, "(uid=*)", ["uid"]))


def test_purge_refuses_dangerous_or_illegal_paths(unit, slapd, tmp_path):  # noqa: F811
    home, ou, dom = unit
    store = tmp_path / "store"
    maildir(str(store / "x"))
    write_control(home, "ldapmessagestore", str(store))
    dn_root = user(slapd, ou, "root", dom, accountStatus="deleted", qmailAccountPurge=PAST, mailMessageStore="/")
    dn_top = user(slapd, ou, "top", dom, accountStatus="deleted", qmailAccountPurge=PAST, mailMessageStore="./")
    dn_dots = user(slapd, ou, "dots", dom, accountStatus="deleted", qmailAccountPurge=PAST,
                   mailMessageStore="x/../../etc/")
    dn_none = user(slapd, ou, "none", dom, accountStatus="deleted", qmailAccountPurge=PAST,
                   homeDirectory=str(tmp_path / "h"))
    os.symlink(store / "x", store / "link")
    dn_link = user(slapd, ou, "link", dom, accountStatus="deleted", qmailAccountPurge=PAST, mailMessageStore="link")
    r = run(home, "purge")
    assert os.path.exists(store / "x" / "new" / "1.M1P1.host")  # nothing was removed
    assert os.path.islink(store / "link")
    assert r.stdout == ""
    assert f"{dn_root}: refusing to remove /\n" in r.stderr
    assert f"{dn_top}: refusing to remove {store}\n" in r.stderr
    assert f"{dn_dots}: mailMessageStore: illegal path 'x/../../etc/'" in r.stderr
    assert f"{dn_none}: no mailMessageStore\n" in r.stderr
    assert f"{dn_link}: {store / 'link'} is not a directory\n" in r.stderr
    assert r.returncode == 111  # the illegal path is an error to look at


def test_objectclass_control_restricts_the_search(unit, slapd):  # noqa: F811
    home, ou, dom = unit
    dn = user(slapd, ou, "obj", dom, accountStatus="deleted", qmailAccountPurge=PAST, mailMessageStore="/m/")
    write_control(home, "ldapobjectclass", "qmailGroup")
    assert run(home, "show").stdout == ""
    write_control(home, "ldapobjectclass", "qmailUser")
    assert run(home, "show").stdout.startswith(dn + "\n")


@pytest.mark.parametrize("args", [[], ["list"], ["show", "purge"]])
def test_usage(qmailhome, args):
    r = run(qmailhome, *args)
    assert (r.returncode, r.stderr) == (100, "qmailAccountPurge: usage: qmailAccountPurge show|purge\n")


def test_unreachable_directory_is_a_temporary_failure(qmailhome):
    write_control(qmailhome, "ldapserver", "127.0.0.1:1")
    write_control(qmailhome, "ldaptimeout", "2")
    r = run(qmailhome, "purge")
    assert r.returncode == 111 and r.stderr.startswith("qmailAccountPurge: fatal: ")


def test_missing_ldapserver_is_a_temporary_failure(qmailhome):
    r = run(qmailhome, "show")
    assert r.returncode == 111 and "ldapserver" in r.stderr
