"""qmail-pw2u: passwd lines to users/assign, with qmail's home checks, mailnames, subusers,
include/exclude and append files; its output goes through qmail-newu into users/cdb look-ups."""

import os
import subprocess
import sys

import pytest

from engine import users

BIN = os.path.dirname(sys.executable)


@pytest.fixture
def homes(tmp_path):
    made = {}
    for name, uid in (("alias", 7790), ("joe", 1000), ("ann", 1003)):
        d = tmp_path / "h" / name
        d.mkdir(parents=True)
        os.chown(d, uid, -1)
        made[name] = str(d)
    return made


def passwd(homes, extra=""):
    return (f"root:x:0:0:root:/root:/bin/bash\n"
            f"alias:x:7790:2108::{homes['alias']}:/bin/false\n"
            f"joe:x:1000:1000:Joe:{homes['joe']}:/bin/sh\n"
            f"Big:x:1001:1001::{homes['joe']}:/bin/sh\n"        # upper case: skipped by default
            f"theft:x:1004:1004::{homes['joe']}:/bin/sh\n"      # home owned by someone else
            f"gone:x:1002:1002::/nonexistent/gone:/bin/sh\n"    # no home
            f"ann:x:1003:1003::{homes['ann']}:/bin/sh\n" + extra)


def pw2u(home, text, *args):
    return subprocess.run([os.path.join(BIN, "qmail-pw2u"), *args], input=text.encode(), capture_output=True,
                          env={**os.environ, "QMAILHOME": home}, timeout=30)


def users_file(home, name, text):
    with open(os.path.join(home, "users", name), "w") as f:
        f.write(text)


def test_default_output(qmailhome, homes):
    p = pw2u(qmailhome, passwd(homes))
    a, j, n = (f":{u}:{i}:{i if u != 'alias' else 2108}:{homes[u]}:" for u, i in
               (("alias", 7790), ("joe", 1000), ("ann", 1003)))
    assert p.returncode == 0
    assert p.stdout.decode().splitlines() == [
        f"+{a}-::", f"=alias{a}::", f"+alias-{a}-::",
        f"=joe{j}::", f"+joe-{j}-::",
        f"=ann{n}::", f"+ann-{n}-::", "."]


def test_options(qmailhome, homes):
    out = pw2u(qmailhome, passwd(homes), "-u", "-H", "-/", "-c", "+").stdout.decode()
    assert f"=Big:Big:1001:1001:{homes['joe']}:::" in out.splitlines()
    assert "=gone:gone:1002:1002:/nonexistent/gone:::" in out.splitlines()
    assert f"+joe+:joe:1000:1000:{homes['joe']}:-/::" in out.splitlines()
    assert "=theft" in out
    assert not any(line.startswith("+joe-") for line in pw2u(qmailhome, passwd(homes), "-C").stdout.decode().splitlines())


def test_missing_home_stops_with_h(qmailhome, homes):
    p = pw2u(qmailhome, passwd(homes), "-h")
    assert p.returncode == 111 and p.stderr == b"qmail-pw2u: fatal: unable to stat /nonexistent/gone\n"


def test_users_files(qmailhome, homes):
    users_file(qmailhome, "mailnames", "joe:joe:j.doe\n")
    users_file(qmailhome, "exclude", "ann\n")
    users_file(qmailhome, "subusers", "info:joe:inf:\nbroken line\n")
    users_file(qmailhome, "append", "=extra:joe:1000:1000:/x:::\n")
    lines = pw2u(qmailhome, passwd(homes)).stdout.decode().splitlines()
    j = f":joe:1000:1000:{homes['joe']}:"
    assert f"=j.doe{j}::" in lines and f"+j.doe-{j}-::" in lines
    assert not any(line.startswith("=ann") for line in lines)
    assert lines[-4:] == [f"=info{j}-:inf:", f"+info-{j}-:inf-:", "=extra:joe:1000:1000:/x:::", "."]
    users_file(qmailhome, "include", "alias\n")
    lines = pw2u(qmailhome, passwd(homes)).stdout.decode().splitlines()
    assert not any(line.startswith("=joe") for line in lines)


def test_subuser_of_unknown_user(qmailhome, homes):
    users_file(qmailhome, "subusers", "info:nobody:inf:\n")
    p = pw2u(qmailhome, passwd(homes))
    assert p.returncode == 111 and p.stderr == b"qmail-pw2u: fatal: unable to find nobody user for subuser\n"


def test_without_alias_user(qmailhome, homes):
    p = pw2u(qmailhome, passwd(homes).replace("alias:x", "notalias:x"))
    assert p.returncode == 111 and p.stderr == b"qmail-pw2u: fatal: unable to find alias user\n"


def test_bad_option(qmailhome, homes):
    p = pw2u(qmailhome, passwd(homes), "-x")
    assert p.returncode == 100 and p.stderr == b"qmail-pw2u: illegal option -- x\n"


def test_output_builds_users_cdb(qmailhome, homes):
    users_file(qmailhome, "subusers", "info:joe:inf:\n")
    with open(os.path.join(qmailhome, "users", "assign"), "wb") as f:
        f.write(pw2u(qmailhome, passwd(homes)).stdout)
    subprocess.run([os.path.join(BIN, "qmail-newu")], check=True, env={**os.environ, "QMAILHOME": qmailhome})
    assert users.lookup("joe", qmailhome) == ("joe", 1000, 1000, homes["joe"], "", "")
    assert users.lookup("joe-list", qmailhome) == ("joe", 1000, 1000, homes["joe"], "-", "list")
    assert users.lookup("info-x", qmailhome) == ("joe", 1000, 1000, homes["joe"], "-", "inf-x")
    assert users.lookup("anything", qmailhome) == ("alias", 7790, 2108, homes["alias"], "-", "anything")
