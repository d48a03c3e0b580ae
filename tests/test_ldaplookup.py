"""qmail-ldaplookup run as a program against the test slapd."""

import os
import subprocess
import sys

import pytest

from support.ldapenv import fresh_domain, point_at, write_control
from support.slapd import ROOTDN, ROOTPW, add_user, free_port
from support.slapd import slapd  # noqa: F401

USER = dict(homeDirectory="/home/u", mailMessageStore="./Maildir/", qmailUID=1000, qmailGID=1001)


@pytest.fixture
def home(qmailhome, slapd):  # noqa: F811
    return point_at(qmailhome, slapd)


def run(home, *args):
    env = dict(os.environ, QMAILHOME=home)
    return subprocess.run([sys.executable, "-m", "engine.ldaplookup", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_mail_lookup_prints_entry_round_and_delivery(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    dn = add_user(slapd, f"joe.{dom}", f"joe@{dom}", mailAlternateAddress=[f"jd@{dom}"],
                  mailForwardingAddress=["a:b@x.example"], mailQuotaSize=1000,
                  deliveryMode=["reply"], mailReplyText="gone", **USER)
    r = run(home, "-m", f"JD@{dom}")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"Searching ldap for: (|(mail=JD@{dom})(mailAlternateAddress=JD@{dom}))\n" \
           f"under dn: {slapd.suffix}\nFound 1 entry:\n" in out
    assert f"dn: {dn}\n-------------------------------------------------------\n" in out
    assert f"mail: joe@{dom}\n" in out and f"mailAlternateAddress: jd@{dom}\n" in out
    assert "accountStatus: undefined -> active" in out
    assert f"matched round 1: JD@{dom} (exact address" in out
    assert f"delivery: qmail-local as joe.{dom} uid 1000 gid 1001\nhome: /home/u\naliasempty: ./Maildir/" in out
    assert "env QMAILFORWARDS=a\\:b@x.example" in out and "env MAILDIRQUOTA=1000S" in out
    assert "env QMAILMODE=reply" in out and "env QMAILREPLYTEXT=gone" in out
    assert "mailReplyText:\n=== begin ===\ngone\n=== end ===" in out


def test_catchall_rounds_are_shown(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"cat.{dom}", f"a-catchall@{dom}", **USER)
    r = run(home, "-m", f"a-b-c@{dom}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("No entries found.") == 2
    assert f"(|(mail=a-b-catchall@{dom})(mailAlternateAddress=a-b-catchall@{dom}))" in r.stdout
    assert f"matched round 3: a-catchall@{dom} (catchall; dash '-', ext 'b-c')" in r.stdout
    assert "dash: '-' ext: 'b-c'" in r.stdout


def test_nothing_found(home):
    dom = fresh_domain("lk")
    r = run(home, "-m", f"nobody@{dom}")
    assert r.returncode == 0
    assert r.stdout.count("No entries found.") == 2 and "\ndn: " not in r.stdout


def test_disabled_account_shows_the_bounce(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"dis.{dom}", f"dis@{dom}", accountStatus="disabled", **USER)
    r = run(home, "-m", f"dis@{dom}")
    assert r.returncode == 0
    assert "accountStatus: disabled" in r.stdout
    assert "qmail-lspawn answers DMailaddress is administratively disabled. (#5.2.1)" in r.stdout


def test_too_many(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"d1.{dom}", f"dup@{dom}", **USER)
    add_user(slapd, f"d2.{dom}", f"dup@{dom}", **USER)
    r = run(home, "-m", f"dup@{dom}")
    assert "Found 2 entries:\nUh-oh: multiple entries found but should be unique!" in r.stdout


def test_filter_mode(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"f1.{dom}", f"f1@{dom}", **USER)
    add_user(slapd, f"f2.{dom}", f"f2@{dom}", **USER)
    r = run(home, "-f", f"(mail=*@{dom})")
    assert r.returncode == 0 and "Found 2 entries:" in r.stdout and "Uh-oh" not in r.stdout


def test_uid_with_password(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    dn = add_user(slapd, f"pw.{dom}", f"pw@{dom}", **USER)
    slapd.conn().passwd_s(dn, None, "s3cret")  # slapd stores it as {SSHA}
    write_control(home, "ldaplogin", ROOTDN)  # userPassword is readable by the rootdn
    write_control(home, "ldappassword", ROOTPW)
    ok = run(home, "-u", f"pw.{dom}", "-p", "s3cret")
    assert ok.returncode == 0, ok.stderr
    assert f"Searching ldap for: (uid=pw.{dom})" in ok.stdout
    assert "PASSWORD COMPARE was successful." in ok.stdout
    bad = run(home, "-u", f"pw.{dom}", "-p", "wrong")
    assert "PASSWORD COMPARE was NOT successful.\n\terror was: authorization failed, wrong password" \
        in bad.stdout
    write_control(home, "ldaprebind", "1")
    write_control(home, "ldaplogin", "")
    write_control(home, "ldappassword", "")
    assert "PASSWORD COMPARE was successful." in run(home, "-u", f"pw.{dom}", "-p", "s3cret").stdout
    assert "PASSWORD COMPARE was NOT successful." in run(home, "-u", f"pw.{dom}", "-p", "x").stdout


def test_bind_dn_option(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"b.{dom}", f"b@{dom}", **USER)
    assert run(home, "-D", ROOTDN, "-w", ROOTPW, "-m", f"b@{dom}").returncode == 0
    r = run(home, "-D", ROOTDN, "-w", "wrong", "-m", f"b@{dom}")
    assert r.returncode == 111
    assert r.stderr == ("qmail-ldaplookup: fatal: Unable to login into LDAP server, "
                        f"bad credentials. (#4.4.3) (127.0.0.1:{slapd.port}: Invalid credentials)\n")


def test_unreachable_directory_exits_111(home):
    write_control(home, "ldapserver", f"127.0.0.1:{free_port()}")
    r = run(home, "-m", "x@y.example")
    assert r.returncode == 111
    assert r.stderr.startswith("qmail-ldaplookup: fatal: Unable to contact LDAP server. (#4.4.3)")
    assert r.stderr.count("\n") == 1


def test_missing_ldapserver_exits_111(qmailhome):
    r = run(qmailhome, "-m", "x@y.example")
    assert r.returncode == 111 and "unable to read controls" in r.stderr and "ldapserver" in r.stderr


@pytest.mark.parametrize("args", [[], ["-m", "a@b", "-u", "x"], ["-w", "pw", "-m", "a@b"],
                                  ["-m", "a@b", "extra"], ["-x"]])
def test_usage(home, args):
    r = run(home, *args)
    assert r.returncode == 1 and r.stderr.startswith("usage:")


def test_debug_levels_are_qmail_ldaps_bit_mask(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"dbg.{dom}", f"dbg@{dom}", **USER)
    write_control(home, "ldaplogin", ROOTDN)
    write_control(home, "ldappassword", ROOTPW)
    quiet = run(home, "-m", f"dbg@{dom}")
    assert quiet.returncode == 0 and quiet.stderr == ""
    r = run(home, "-d", "64", "-m", f"dbg@{dom}")
    assert f"qmail-ldaplookup: init_ldap: control/ldapserver: '{slapd.hostport}'\n" in r.stderr
    assert f"init_ldap: control/ldapbasedn: {slapd.suffix}\n" in r.stderr and "qldap_bind" not in r.stderr
    r = run(home, "-d", "192", "-m", f"dbg@{dom}")
    assert f"qldap_bind: successful on {slapd.hostport} as {ROOTDN}\n" in r.stderr
    assert f"qldap_filter: search for (|(mail=dbg@{dom})(mailAlternateAddress=dbg@{dom})) succeeded " \
           "(1 found)\n" in r.stderr
    assert ROOTPW not in r.stderr, "passwords only with the 256 bit"
    r = run(home, "-d", "448", "-m", f"dbg@{dom}")
    assert f"init_ldap: control/ldappassword: {ROOTPW}\n" in r.stderr
    env = dict(os.environ, QMAILHOME=home, LOGLEVEL="128")
    r = subprocess.run([sys.executable, "-m", "engine.ldaplookup", "-m", f"dbg@{dom}"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "qldap_bind: successful" in r.stderr and "init_ldap" not in r.stderr


def test_resolved_delivery_summary(home, slapd):  # noqa: F811
    dom = fresh_domain("lk")
    add_user(slapd, f"r1.{dom}", f"r1@{dom}", mailForwardingAddress=[f"a@{dom}", f"b@{dom}"],
             deliveryProgramPath="/usr/bin/procmail", **USER)
    r = run(home, "-m", f"r1@{dom}").stdout
    assert "mailbox: /home/u/Maildir/ (Maildir)\n" in r
    assert f"forwards: a@{dom}, b@{dom}\n" in r
    assert "programs: none (qmailDotMode ldaponly does not run /usr/bin/procmail)\n" in r
    assert "auto-reply: no\n" in r
    add_user(slapd, f"r2.{dom}", f"r2@{dom}", qmailDotMode="ldapwithprog", deliveryMode=["noforward", "reply"],
             mailForwardingAddress=f"a@{dom}", deliveryProgramPath="/usr/bin/procmail", mailReplyText="away",
             **{**USER, "mailMessageStore": "/var/mail/r2"})
    r = run(home, "-m", f"r2@{dom}").stdout
    assert "mailbox: /var/mail/r2 (mbox)\n" in r and "programs: /usr/bin/procmail\n" in r
    assert f"forwards: none (deliveryMode noforward drops a@{dom})\n" in r
    assert "auto-reply: yes" in r
    add_user(slapd, f"r3.{dom}", f"r3@{dom}", mailForwardingAddress=f"a@{dom}")
    r = run(home, "-m", f"r3@{dom}").stdout
    assert f"resolved: forwards only\nforwards: a@{dom}\n" in r
    add_user(slapd, f"r4.{dom}", f"r4@{dom}", qmailDotMode="both", **USER)
    r = run(home, "-m", f"r4@{dom}").stdout
    assert "then: /home/u/.qmail (or a -default file) is processed too\n" in r


def test_no_entry_says_what_lspawn_does(home):
    dom = fresh_domain("lk")
    r = run(home, "-m", f"Some.One@{dom}")
    assert "no entry: qmail-lspawn delivers Some.One as stock qmail does (control/ldaplocaldelivery 1)" \
        in r.stdout
    write_control(home, "ldaplocaldelivery", "0")
    r = run(home, "-m", f"Some.One@{dom}")
    assert "no entry: qmail-lspawn delivers to the alias user with ext 'Some.One' " \
           "(~alias/.qmail-some:one or .qmail-default; control/ldaplocaldelivery 0)" in r.stdout


def test_bad_control_credentials_exit_111(home, slapd):  # noqa: F811
    write_control(home, "ldaplogin", ROOTDN)
    write_control(home, "ldappassword", "wrong")
    r = run(home, "-m", "x@y.example")
    assert r.returncode == 111 and r.stdout == ""
    assert r.stderr.startswith("qmail-ldaplookup: fatal: Unable to login into LDAP server, bad credentials. "
                               "(#4.4.3)") and r.stderr.count("\n") == 1


def test_entry_block_as_qmail_ldaplookup_prints_it(home, slapd):  # noqa: F811
    """Derived values in the C tool's order: resolved home/aliasEmpty, defaults applied, quotas
    marked unlimited; the forward-only block; a broken attribute is named, the listing goes on."""
    dom = fresh_domain("lk")
    write_control(home, "ldapuid", "2000")
    write_control(home, "ldapgid", "2001")
    write_control(home, "defaultquotasize", "5000")
    write_control(home, "ldapmessagestore", "/var/mail")
    add_user(slapd, f"e1.{dom}", f"e1@{dom}", mailMessageStore="e1/", mailQuotaCount="0")
    out = run(home, "-m", f"e1@{dom}").stdout
    assert (f"uid: e1.{dom}\naccountStatus: undefined -> active\nmailHost: undefined\n"
            "homeDirectory: /var/mail/e1/\naliasEmpty: using default\nqmailDotMode: ldaponly\n"
            "qmailUID: 2000\nqmailGID: 2001\nmailQuotaSize: 5000\nmailQuotaCount: 0 (unlimited)\n"
            "mailSizeMax: 0 (unlimited)\nmailReplyText: undefined\n") in out
    add_user(slapd, f"e2.{dom}", f"e2@{dom}", mailForwardingAddress=[f"x@{dom}", f"y@{dom}"])
    out = run(home, "-m", f"e2@{dom}").stdout
    assert ("mailHost: undefined\nforward only delivery via alias user\nalias user: alias\n") in out
    assert ("alias user aliasempty: |echo \"Unable to deliver mail: account incorrectly configured. (#5.3.5)\"; "
            f"exit 100\nmailForwardingAddress: x@{dom}\nmailForwardingAddress: y@{dom}\n") in out
    add_user(slapd, f"e3.{dom}", f"e3@{dom}", qmailUID="7", **{k: v for k, v in USER.items() if k != "qmailUID"})
    r = run(home, "-m", f"e3@{dom}")
    assert r.returncode == 0
    assert "qmailUID: qmailUID 7 outside 100..65535 -> qmail-lspawn: Illegal value in LDAP attribute. (#5.3.5)\n" \
        "qmailGID: 1001\n" in r.stdout
    assert "delivery: qmail-lspawn answers DIllegal value in LDAP attribute. (#5.3.5)" in r.stdout
