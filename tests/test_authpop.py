"""auth_pop (engine/authpop.py + engine/checkpassword.py) against a real slapd, as root so the uid drop
is real; the whole chain under tcpserver with poplib; cluster relaying to a second POP3 server."""

import os
import poplib
import pwd
import subprocess
import sys

import pytest

from engine import checkpassword as cp
from support.pop3 import CHAIN, TcpServer, ldap_controls, pop_ids, put_message, write_control
from support.qmailhome import make_qmailhome
from support.slapd import slapd  # noqa: F401

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="auth_pop must be root to become the user (CI runs as root)")

SHOW = ("echo uid=$(id -u) gid=$(id -g) cwd=$(pwd); "
        "for v in USER AUTHENTICATED HOME MAILDIR MAILDIRQUOTA DATASIZE; do eval echo $v=\\${$v-unset}; done")


@pytest.fixture
def home(qmailhome, slapd):  # noqa: F811
    ldap_controls(qmailhome, slapd)
    return qmailhome


def auth_pop(args, data, env=None):
    """auth_pop with `data` on fd 3; (exit code, stdout text)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)

    def on_fd3():
        os.dup2(r, 3)
    proc = subprocess.run([sys.executable, "-m", "engine.authpop", *args], preexec_fn=on_fd3, close_fds=False,
                          capture_output=True, env={**os.environ, "LOGLEVEL": "1", **(env or {})}, timeout=60)
    if proc.stderr:
        print(proc.stderr.decode())
    os.close(r)
    return proc.returncode, proc.stdout.decode()


def login_data(user, password):
    return user.encode() + b"\0" + password.encode() + b"\0<1.2@host>\0"


def shown(text):
    return dict(word.split("=", 1) for line in text.splitlines() for word in line.split(" "))


def test_success_drops_to_the_user_and_sets_the_environment(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd, mailQuotaSize="5000", mailQuotaCount="7", mailSizeMax="900")
    code, out = auth_pop(["sh", "-c", SHOW, "./Maildir/"], login_data(login, "secret"))
    assert code == 0, out
    uid, gid = pop_ids()
    assert shown(out) == {"uid": str(uid), "gid": str(gid), "cwd": uhome, "USER": login, "AUTHENTICATED": login,
                          "HOME": uhome, "MAILDIR": "unset", "MAILDIRQUOTA": "5000S,7C", "DATASIZE": "900"}


def test_mail_store_becomes_maildir_and_is_created(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd, mailMessageStore="box/")
    code, out = auth_pop(["sh", "-c", SHOW], login_data(login, "secret"))
    assert code == 0 and shown(out)["MAILDIR"] == "box/"
    assert sorted(os.listdir(os.path.join(uhome, "box"))) == ["cur", "new", "tmp"]
    assert os.stat(os.path.join(uhome, "box", "new")).st_uid == pop_ids()[0]


@pytest.mark.parametrize("status, code", [("noaccess", 4), ("disabled", 4), ("deleted", 4), ("active", 0),
                                          ("nopop", 0)])
def test_account_status(home, slapd, boxes, status, code):  # noqa: F811
    login, _ = boxes.user(slapd, accountStatus=status)
    assert auth_pop(["true"], login_data(login, "secret"))[0] == code


def test_refusals(home, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd)
    assert auth_pop(["true"], login_data(login, "wrong"))[0] == 3
    assert auth_pop(["true"], login_data("nosuchuser", "secret"))[0] == 3
    assert auth_pop(["true"], login_data(login, ""))[0] == 3
    assert auth_pop(["true"], login_data(login + "*", "secret"))[0] == 3  # escaped: no wildcard match
    assert auth_pop(["true"], login.encode() + b"\0")[0] == 25
    assert auth_pop(["true"], b"x" * 600)[0] == 111
    assert auth_pop([], login_data(login, "secret"))[0] == 1
    assert auth_pop(["-x", "true"], login_data(login, "secret"))[0] == 1
    assert auth_pop(["/nonexistent/program", "./Maildir/"], login_data(login, "secret"))[0] == 7
    root, _ = boxes.user(slapd, qmailUID="5")
    assert auth_pop(["true"], login_data(root, "secret"))[0] == 25  # qmailUID outside 100-65535


def tools_dir(boxes):
    """Programs the user runs (dirmaker, the pbs tool) must be reachable by that user."""
    path = os.path.join(boxes.base, "tools")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
    from pathlib import Path
    return Path(path)


def test_homes_and_maildirs(home, slapd, boxes):  # noqa: F811
    tmp_path = tools_dir(boxes)
    missing, uhome = boxes.user(slapd, make_home=False)
    assert auth_pop(["true"], login_data(missing, "secret"))[0] == 62
    maker = tmp_path / "dirmaker"
    maker.write_text("#!/bin/sh\nmkdir -p \"$1\" && echo \"$2\" > \"$1/made\"\n")
    maker.chmod(0o755)
    write_control(home, "dirmaker", f"{maker}\n")
    os.chmod(boxes.base, 0o777)  # dirmaker runs as the user, as in qmail-ldap
    assert auth_pop(["true", "./Maildir/"], login_data(missing, "secret"))[0] == 0
    assert open(os.path.join(uhome, "made")).read() == "./Maildir/\n"
    assert sorted(os.listdir(os.path.join(uhome, "Maildir"))) == ["cur", "new", "tmp"]
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\nexit 100\n")
    failing.chmod(0o755)
    write_control(home, "dirmaker", f"{failing}\n")
    other, _ = boxes.user(slapd, make_home=False)
    assert auth_pop(["true"], login_data(other, "secret"))[0] == 61
    corrupt, chome = boxes.user(slapd)
    os.rename(os.path.join(chome, "Maildir"), os.path.join(chome, "old"))
    with open(os.path.join(chome, "Maildir"), "w") as f:
        f.write("not a directory\n")
    assert auth_pop(["true", "./Maildir/"], login_data(corrupt, "secret"))[0] == 6


def test_directory_trouble(home, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd)
    from support.ports import free_port
    write_control(home, "ldapserver", f"127.0.0.1:{free_port()}\n")
    assert auth_pop(["true"], login_data(login, "secret"))[0] == 2
    os.unlink(os.path.join(home, "control", "ldapserver"))
    assert auth_pop(["true"], login_data(login, "secret"))[0] == 1


def test_rebind_and_pbstool(home, slapd, boxes):  # noqa: F811
    tmp_path = tools_dir(boxes)
    login, _ = boxes.user(slapd)
    write_control(home, "ldaprebind", "1\n")
    assert auth_pop(["true"], login_data(login, "wrong"))[0] == 3
    mark = tmp_path / "pbs"
    tool = tmp_path / "pbsadd"
    tool.write_text(f"#!/bin/sh\necho $USER $TCPREMOTEIP > {mark}\n")
    tool.chmod(0o755)
    code, _ = auth_pop(["-d", str(tool), "true"], login_data(login, "secret"), env={"TCPREMOTEIP": "10.1.2.3"})
    assert code == 0 and mark.read_text() == f"{login} 10.1.2.3\n"
    mark.unlink()
    auth_pop(["-d", str(tool), "true"], login_data(login, "secret"), env={"NOPBS": "1"})
    assert not mark.exists()


def test_local_passwd_user(home, slapd, boxes):  # noqa: F811
    name = f"pyqpop{os.getpid() % 100000}"
    uhome = os.path.join(boxes.base, name)
    subprocess.run(["useradd", "-M", "-d", uhome, "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:localpw\n".encode(), check=True)
        pw = pwd.getpwnam(name)
        os.makedirs(os.path.join(uhome, "Mail", "new"))
        with open(os.path.join(uhome, ".qmail"), "w") as f:
            f.write("# comment\n./Mail/\n")
        assert auth_pop(["true"], login_data(name, "localpw"))[0] == 3  # ldaplocaldelivery 0: LDAP only
        write_control(home, "ldaplocaldelivery", "1\n")
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", uhome], check=True)
        code, out = auth_pop(["sh", "-c", SHOW], login_data(name, "localpw"))
        assert code == 0, out
        assert shown(out)["uid"] == str(pw.pw_uid) and shown(out)["MAILDIR"] == "./Mail/"
        assert auth_pop(["true"], login_data(name, "wrongpw"))[0] == 3
    finally:
        subprocess.run(["userdel", name], check=False)


def chain_env(qmailhome, **extra):
    return {**os.environ, "QMAILHOME": qmailhome, **extra}


def test_chain_under_tcpserver_with_poplib(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd, mailQuotaSize="100000")
    md = os.path.join(uhome, "Maildir")
    put_message(md, b"Subject: hello\n\n.dotted\nbody\n")
    server = TcpServer(CHAIN, chain_env(home))
    try:
        bad = poplib.POP3(server.host, server.port, timeout=30)
        bad.user(login)
        with pytest.raises(poplib.error_proto, match="-ERR authorization failed"):
            bad.pass_("wrong")
        bad.close()
        pop = poplib.POP3(server.host, server.port, timeout=30)
        assert pop.getwelcome().startswith(b"+OK <") and pop.getwelcome().endswith(b"@pop.example.test>")
        pop.user(login)
        pop.pass_("secret")
        assert pop.stat() == (1, 29)
        resp, lines, octets = pop.retr(1)
        assert resp == b"+OK 29 octets" and lines == [b"Subject: hello", b"", b".dotted", b"body", b""]
        pop.dele(1)
        pop.quit()
        assert os.listdir(os.path.join(md, "new")) == [] and os.listdir(os.path.join(md, "cur")) == []
        with open(os.path.join(md, "maildirsize")) as f:
            assert f.read().splitlines() == ["100000S", "29 1", "-29 -1"]
    finally:
        server.stop()


def test_cluster_session_is_relayed_to_the_mailhost(home, slapd, boxes, tmp_path):  # noqa: F811
    """A user whose mailHost is another cluster host: the front end logs in there and relays."""
    backend = make_qmailhome(str(tmp_path / "backend"), me="127.0.0.2")
    ldap_controls(backend, slapd, ldapcluster=1)
    write_control(home, "ldapcluster", "1\n")
    write_control(home, "ldapclusterhosts", "pop.example.test\n")
    login, uhome = boxes.user(slapd, mailHost="127.0.0.2")
    put_message(os.path.join(uhome, "Maildir"), b"Subject: far away\n\nbody\n")
    back = TcpServer(CHAIN, chain_env(backend), host="127.0.0.2")
    front = TcpServer(CHAIN, chain_env(home, QMAIL_PORT_POP3=str(back.port)))
    try:
        pop = poplib.POP3(front.host, front.port, timeout=30)
        pop.user(login)
        assert pop.pass_("secret").startswith(b"+OK")
        assert pop.retr(1)[1][0] == b"Subject: far away"
        pop.quit()
        pop = poplib.POP3(front.host, front.port, timeout=30)
        pop.user(login)
        with pytest.raises(poplib.error_proto, match="-ERR authorization failed"):
            pop.pass_("wrong")  # the front end checks the password itself first
    finally:
        front.stop()
        back.stop()


def test_mailhost_loop_and_unknown_host_are_cluster_errors():
    with pytest.raises(cp.AuthError) as e:
        cp.connect_mailhost("127.0.0.1", 1, my_ips={"127.0.0.1"})
    assert e.value.code == cp.BADCLUSTER
    with pytest.raises(cp.AuthError) as e:
        cp.connect_mailhost("no-such-host.invalid", 110)
    assert e.value.code == cp.BADCLUSTER
