"""engine/checkpassword.py, the core auth_pop, auth_imap and auth_dovecot share, against a real slapd."""

import os

import pytest

from engine import checkpassword as cp
from support.pop3 import ldap_controls, pop_ids, write_control
from support.slapd import slapd  # noqa: F401


@pytest.fixture
def settings(qmailhome, slapd):  # noqa: F811
    ldap_controls(qmailhome, slapd)
    return lambda: cp.Settings.load(qmailhome)


def code_of(fn, *args):
    with pytest.raises(cp.AuthError) as e:
        fn(*args)
    return e.value.code


def test_credentials_from_the_entry(settings, slapd, boxes):  # noqa: F811
    login, home = boxes.user(slapd, password="pw", mailMessageStore="/var/mail/box/", mailQuotaCount="9",
                             mailSizeMax="123")
    c = cp.authenticate(login, b"pw", settings())
    uid, gid = pop_ids()
    assert (c.login, c.uid, c.gid, c.home, c.maildir, c.forwarder, c.source) == \
        (login, uid, gid, home, "/var/mail/box/", None, "ldap")
    assert c.dn.startswith(f"uid={login},")
    assert c.env() == {"USER": login, "AUTHENTICATED": login, "HOME": home, "MAILDIR": "/var/mail/box/",
                       "MAILDIRQUOTA": "9C", "DATASIZE": "123"}
    environ = {"MAILDIR": "old", "KEEP": "1"}
    cp.apply_env(environ, cp.Credentials(login, 1, 2, "/h").env())
    assert environ == {"KEEP": "1", "USER": login, "AUTHENTICATED": login, "HOME": "/h"}


def test_store_only_entry_uses_ldapmessagestore(settings, qmailhome, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd, homeDirectory=None, mailMessageStore="rel/box/")
    assert code_of(cp.authenticate, login, "secret", settings()) == cp.BADENTRY  # relative without a prefix
    write_control(qmailhome, "ldapmessagestore", "/srv/mail\n")
    c = cp.authenticate(login, "secret", settings())
    assert (c.home, c.maildir) == ("/srv/mail/rel/box/", "")


def test_cluster_forwarder(settings, qmailhome, slapd, boxes):  # noqa: F811
    far, _ = boxes.user(slapd, mailHost="other.example.test")
    near, _ = boxes.user(slapd, mailHost="alias.example.test")
    assert cp.authenticate(far, "secret", settings()).forwarder is None  # ldapcluster off
    write_control(qmailhome, "ldapcluster", "1\n")
    write_control(qmailhome, "ldapclusterhosts", "alias.example.test\n")
    assert cp.authenticate(far, "secret", settings()).forwarder == "other.example.test"
    assert cp.authenticate(near, "secret", settings()).forwarder is None
    assert code_of(cp.authenticate, far, "bad", settings()) == cp.BADPASS  # checked before forwarding


def test_errors(settings, qmailhome, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd)
    assert code_of(cp.authenticate, login, "wrong", settings()) == cp.BADPASS
    with pytest.raises(cp.NoSuchUser) as e:
        cp.authenticate("nosuchlogin", "secret", settings())
    assert e.value.code == cp.BADPASS
    with pytest.raises(cp.AuthError) as e:
        cp.authenticate(login, "wrong", settings())
    assert not isinstance(e.value, cp.NoSuchUser)
    slapd.add(f"uid={login}b,ou=people,{slapd.suffix}",
              {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser"],
               "uid": [login + "b", login], "cn": "b", "sn": "b", "mail": f"{login}b@pop.example.test"})
    assert code_of(cp.authenticate, login, "secret", settings()) == cp.TEMPORARY  # two entries: TOOMANY
    nopass, _ = boxes.user(slapd, password=None)
    assert code_of(cp.authenticate, nopass, "x", settings()) == cp.BADPASS  # no userPassword: NOSUCH
    assert code_of(cp.authenticate, login, "", settings()) == cp.BADPASS
    broken, _ = boxes.user(slapd, qmailGID="70000")
    assert code_of(cp.authenticate, broken, "secret", settings()) == cp.BADENTRY
    os.unlink(os.path.join(qmailhome, "control", "me"))
    assert code_of(cp.Settings.load, qmailhome) == cp.CONF


def test_drop_privileges_refuses_root():
    pid = os.fork()
    if pid == 0:
        try:
            cp.drop_privileges(0, 0)
            os._exit(0)
        except cp.AuthError as e:
            os._exit(e.code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == cp.TEMPORARY


def test_prepare_home_and_maildir(tmp_path):
    c = cp.Credentials("u", 1, 1, str(tmp_path / "home"))
    cwd = os.getcwd()
    try:
        assert code_of(cp.prepare_home, c, "./Maildir/") == cp.MAILDIR_NONEXIST
        (tmp_path / "home").mkdir()
        cp.prepare_home(c, "./Maildir/")
        assert sorted(os.listdir(tmp_path / "home" / "Maildir")) == ["cur", "new", "tmp"]
        assert (tmp_path / "home" / "Maildir" / "new").stat().st_mode & 0o777 == 0o700
        (tmp_path / "home" / "Mailbox").write_text("")
        assert code_of(cp.prepare_home, c, "./Mailbox") == cp.MAILDIR_CORRUPT
    finally:
        os.chdir(cwd)


def test_pbstool_skipped_with_nopbs(tmp_path):
    mark = tmp_path / "ran"
    tool = tmp_path / "tool"
    tool.write_text(f"#!/bin/sh\ntouch {mark}\nexit 3\n")
    tool.chmod(0o755)
    assert cp.run_pbstool(str(tool), {"NOPBS": ""}) is None and not mark.exists()
    assert cp.run_pbstool(str(tool), {"PATH": "/bin"}) == 3 and mark.exists()
    assert cp.run_pbstool(None) is None
