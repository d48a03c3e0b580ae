"""auth_dovecot against a real slapd: the checkpassword interface with its userdb_* environment, and a real
Dovecot (passdb checkpassword = auth_dovecot, userdb prefetch) serving an LDAP user's Maildir over IMAP
and POP3 on 127.0.0.1."""

import imaplib
import os
import poplib
import shutil
import subprocess
import sys
import tempfile

import pytest

from engine import install
from support.dovecot import Dovecot
from support.master import Master
from support.pbs import IP, program, query, start_pbsdbd, stop, udp_port
from support.pop3 import ldap_controls, pop_ids, put_message, write_control
from support.slapd import slapd  # noqa: F401

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="Dovecot and the LDAP users' homes need root (CI is root)")

BIN = os.path.dirname(sys.executable)
AUTH_DOVECOT = os.path.join(BIN, "auth_dovecot")
SHOW = ("echo uid=$(id -u) cwd=$(pwd); for v in USER HOME MAILDIR MAILDIRQUOTA userdb_uid userdb_gid "
        "userdb_quota_rule userdb_mail proxy host; do eval echo $v=\\${$v-unset}; done; echo \"EXTRA=$EXTRA\"")


@pytest.fixture
def home(qmailhome, slapd):  # noqa: F811
    ldap_controls(qmailhome, slapd)
    return qmailhome


def auth_dovecot(args, data, env=None):
    """auth_dovecot with `data` on fd 3; (exit code, stdout lines as a dict)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    proc = subprocess.run([AUTH_DOVECOT, *args], preexec_fn=lambda: os.dup2(r, 3), close_fds=False,
                          capture_output=True, env={**os.environ, "LOGLEVEL": "1", **(env or {})}, timeout=60, cwd="/")
    if proc.stderr:
        print(proc.stderr.decode())
    os.close(r)
    shown = {}
    for line in proc.stdout.decode().splitlines():
        for word in ([line] if line.startswith("EXTRA=") else line.split(" ")):
            key, _, value = word.partition("=")
            shown[key] = value
    return proc.returncode, shown


def up(user, password):
    return user.encode() + b"\0" + password.encode() + b"\0"


def test_userdb_fields_exported_without_dropping_privileges(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd, mailMessageStore="/var/mail/x/", mailQuotaSize="1048576",
                              mailQuotaCount="50")
    code, env = auth_dovecot(["-a", "./Maildir/", "sh", "-c", SHOW], up(login, "secret"))
    uid, gid = pop_ids()
    assert code == 0
    assert env == {"uid": "0", "cwd": "/", "USER": login, "HOME": uhome, "MAILDIR": "/var/mail/x/",
                   "MAILDIRQUOTA": "1048576S,50C", "userdb_uid": str(uid), "userdb_gid": str(gid),
                   "userdb_quota_rule": "maildir:storage=1048576:messages=50", "userdb_mail": "maildir:/var/mail/x/",
                   "proxy": "unset", "host": "unset",
                   "EXTRA": "userdb_uid userdb_gid userdb_quota_rule userdb_mail"}


def test_only_the_fields_the_entry_has(home, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd, mailQuotaCount="7")
    code, env = auth_dovecot(["sh", "-c", SHOW], up(login, "secret"))
    assert code == 0
    assert (env["userdb_quota_rule"], env["userdb_mail"], env["EXTRA"]) == \
        ("maildir:messages=7", "unset", "userdb_uid userdb_gid userdb_quota_rule")
    plain, _ = boxes.user(slapd)
    assert auth_dovecot(["sh", "-c", SHOW], up(plain, "secret"))[1]["EXTRA"] == "userdb_uid userdb_gid"


def test_refusal_codes(home, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd)
    off, _ = boxes.user(slapd, accountStatus="disabled")
    assert auth_dovecot(["true"], up(login, "wrong"))[0] == 3
    assert auth_dovecot(["true"], up("nosuchuser", "secret"))[0] == 3
    assert auth_dovecot(["true"], up(login, ""))[0] == 3
    assert auth_dovecot(["true"], up(off, "secret"))[0] == 4
    assert auth_dovecot(["true"], login.encode() + b"\0")[0] == 25
    assert auth_dovecot([], up(login, "secret"))[0] == 1
    assert auth_dovecot(["-x", "true"], up(login, "secret"))[0] == 1
    assert auth_dovecot(["/nonexistent/reply"], up(login, "secret"))[0] == 7
    os.unlink(os.path.join(home, "control", "ldapserver"))
    assert auth_dovecot(["true"], up(login, "secret"))[0] == 1


def test_cluster_user_is_proxied_by_dovecot(home, slapd, boxes):  # noqa: F811
    write_control(home, "ldapcluster", "1\n")
    login, _ = boxes.user(slapd, mailHost="imap2.example.test")
    code, env = auth_dovecot(["sh", "-c", SHOW], up(login, "secret"))
    assert code == 0
    assert (env["uid"], env["proxy"], env["host"], env["EXTRA"], env["userdb_uid"]) == \
        ("0", "1", "imap2.example.test", "proxy host", "unset")


def test_pbs_tool_runs_before_the_reply_program(home, slapd, boxes, tmp_path):  # noqa: F811
    login, _ = boxes.user(slapd)
    mark = tmp_path / "pbs-ran"
    tool = tmp_path / "pbstool"
    tool.write_text(f"#!/bin/sh\necho \"$USER\" > {mark}\n")
    tool.chmod(0o755)
    assert auth_dovecot(["-d", str(tool), "true"], up(login, "secret"))[0] == 0
    assert mark.read_text() == login + "\n"
    mark.unlink()
    assert auth_dovecot(["-d", str(tool), "true"], up(login, "secret"), env={"NOPBS": "1"})[0] == 0
    assert not mark.exists()


# -- a real Dovecot -----------------------------------------------------------------------------------

@pytest.fixture
def dovecot(home):
    d = Dovecot(AUTH_DOVECOT, home)
    yield d
    d.stop()


def test_dovecot_serves_ldap_users_mail(home, slapd, boxes, dovecot):  # noqa: F811
    login, uhome = boxes.user(slapd, mailQuotaSize="2000000")
    put_message(os.path.join(uhome, "Maildir"), b"From: a@example.test\nSubject: through dovecot\n\nhello imap\n")
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap)
    try:
        assert imap.login(login, "secret")[0] == "OK", dovecot.log()
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(BODY[])")
        assert typ == "OK" and b"hello imap" in data[0][1]
    finally:
        imap.logout()
    pop = poplib.POP3("127.0.0.1", dovecot.pop3)
    pop.user(login)
    try:
        pop.pass_("secret")
    except poplib.error_proto:
        raise AssertionError(dovecot.log())
    assert pop.stat()[0] == 1
    pop.quit()


@pytest.mark.parametrize("status, password", [("active", "wrong"), ("disabled", "secret"), ("active", "")])
def test_dovecot_refuses(home, slapd, boxes, dovecot, status, password):  # noqa: F811
    login, _ = boxes.user(slapd, accountStatus=status)
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(login, password or '""')
    finally:
        imap.shutdown()


def test_dovecot_gets_the_userdb_fields(home, slapd, boxes, dovecot):  # noqa: F811
    """doveadm's passdb + userdb lookup shows what auth_dovecot handed over (uid, gid, home, quota rule)."""
    login, uhome = boxes.user(slapd, mailQuotaSize="3000", mailQuotaCount="9")
    out = subprocess.run(["doveadm", "-c", dovecot.config, "auth", "login", login, "secret"],
                         capture_output=True, text=True, timeout=30)
    assert "auth succeeded" in out.stdout, out.stdout + out.stderr + dovecot.log()
    userdb = out.stdout.split("userdb extra fields:", 1)[1]
    fields = dict(line.strip().split("=", 1) for line in userdb.splitlines() if "=" in line)
    uid, gid = pop_ids()
    assert (fields["uid"], fields["gid"], fields["home"]) == (str(uid), str(gid), uhome)
    assert fields["quota_rule"] == "maildir:storage=3000:messages=9"


def test_imap_login_through_dovecot_registers_pop_before_smtp(home, slapd, boxes):  # noqa: F811
    """Dovecot runs `auth_dovecot -d pbsadd` with TCPREMOTEIP set: after an IMAP login pbsdbd knows the
    client, with USER carried as POPUSER, and pbscheck lets it relay."""
    port = udp_port()
    for name, value in (("pbsip", "127.0.0.1"), ("pbsport", port), ("pbssecret", "imapsecret"),
                        ("pbsservers", "127.0.0.1"), ("pbsenv", "USER=POPUSER")):
        write_control(home, name, f"{value}\n")
    login, _ = boxes.user(slapd)
    daemon = start_pbsdbd(home, port)
    dovecot = Dovecot(f"{AUTH_DOVECOT} -d {program('pbsadd')}", home)
    try:
        assert query(port).endswith(b"N")
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap)
        assert imap.login(login, "secret")[0] == "OK", dovecot.log()
        imap.logout()
        assert query(port) == b"R\x04" + IP + b"R" + bytes([1, len(login) + 5]) + b"USER=" + login.encode()
        out = subprocess.run([program("pbscheck"), "sh", "-c", "echo \"[${RELAYCLIENT-unset}]\" $POPUSER"],
                             env={**os.environ, "QMAILHOME": home, "TCPREMOTEIP": "127.0.0.1"},
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == f"[] {login}\n"
    finally:
        dovecot.stop()
        stop(daemon)


def test_mail_delivered_by_the_master_is_read_over_imap(slapd, boxes):  # noqa: F811
    """The whole way: qmail-inject into a root installation, the real master finds the LDAP user and
    delivers as its uid into its Maildir, Dovecot with auth_dovecot logs the user in and shows the message."""
    base = tempfile.mkdtemp(prefix="pyqmail-imap-", dir="/tmp")
    os.chmod(base, 0o755)
    root_home = install.setup(os.path.join(base, "qmail"), single_user=False, me="imap.example.test")
    ldap_controls(root_home, slapd, locals="pop.example.test")
    login, uhome = boxes.user(slapd)
    master = Master(root_home).start()
    dovecot = Dovecot(AUTH_DOVECOT, root_home)
    try:
        inject = subprocess.run([os.path.join(root_home, "bin", "qmail-inject"), f"{login}@pop.example.test"],
                                input=b"From: sender@example.test\nSubject: end to end\n\ndelivered by the master\n",
                                env={**os.environ, "QMAILHOME": root_home}, capture_output=True, timeout=60)
        assert inject.returncode == 0, inject.stderr
        new = os.path.join(uhome, "Maildir", "new")
        master.wait_for(lambda: os.listdir(new), 60, "delivery to the LDAP user's Maildir")
        assert os.stat(os.path.join(new, os.listdir(new)[0])).st_uid == pop_ids()[0]
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap)
        assert imap.login(login, "secret")[0] == "OK", dovecot.log()
        assert imap.select("INBOX") == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(BODY[])")
        assert b"delivered by the master" in data[0][1] and b"Delivered-To: " + login.encode() in data[0][1]
        imap.logout()
    finally:
        dovecot.stop()
        master.stop()
        shutil.rmtree(base, ignore_errors=True)
