"""auth_imap by its courier module interface, with real processes and a real slapd: fd 3
`service\\nlogin\\nuser\\npass\\n`, the exec of the next program as the user, AUTHENTICATED pass-through,
the same data handed to the next module, the AUTHARGC/AUTHARGV fallback, and cluster relaying to a
real Dovecot on 127.0.0.2. (Debian 12's courier-authlib 0.71 has no external module chain any more.)"""

import os
import subprocess
import sys

import pytest

from support.dovecot import Dovecot
from support.pop3 import ldap_controls, pop_ids, put_message, write_control
from support.qmailhome import make_qmailhome
from support.slapd import slapd  # noqa: F401

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="auth_imap must be root to become the user (CI is root)")

BIN = os.path.dirname(sys.executable)
AUTH_IMAP = os.path.join(BIN, "auth_imap")
SHOW = ("echo uid=$(id -u) gid=$(id -g) cwd=$(pwd); "
        "for v in USER AUTHENTICATED HOME MAILDIR MAILDIRQUOTA; do eval echo $v=\\${$v-unset}; done")
# the next module of the chain: says who runs it and what it finds on fd 3
NEXT = [sys.executable, "-c",
        "import os\ntry:\n    d = os.read(3, 4096)\nexcept OSError:\n    d = b'closed'\n"
        "print('next uid=%d AUTHENTICATED=%s fd3=%r' % (os.getuid(), os.environ.get('AUTHENTICATED', 'unset'), d))"]
FALLBACK = {"AUTHARGC": "3", "AUTHARGV0": "/bin/sh", "AUTHARGV1": "-c", "AUTHARGV2": "echo fallback"}


@pytest.fixture
def home(qmailhome, slapd):  # noqa: F811
    ldap_controls(qmailhome, slapd)
    return qmailhome


def auth_imap(args, data, env=None, fallback=True):
    """auth_imap with `data` on fd 3; (exit code, stdout text)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    base = {k: v for k, v in os.environ.items() if k not in ("AUTHENTICATED", "AUTHARGC")}
    proc = subprocess.run([AUTH_IMAP, *args], preexec_fn=lambda: os.dup2(r, 3), close_fds=False,
                          capture_output=True, timeout=60,
                          env={**base, "LOGLEVEL": "1", **(FALLBACK if fallback else {}), **(env or {})})
    os.close(r)
    if proc.stderr:
        print(proc.stderr.decode())
    return proc.returncode, proc.stdout.decode()


def data(user, password, kind="login"):
    return f"imap\n{kind}\n{user}\n{password}\n".encode()


def shown(text):
    return dict(word.split("=", 1) for line in text.splitlines() for word in line.split(" "))


def test_login_execs_the_next_program_as_the_user(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd, mailMessageStore="imapbox/", mailQuotaSize="4096")
    code, out = auth_imap(["sh", "-c", SHOW, "./Maildir/"], data(login, "secret"))
    uid, gid = pop_ids()
    assert code == 0
    assert shown(out) == {"uid": str(uid), "gid": str(gid), "cwd": uhome, "USER": login, "AUTHENTICATED": login,
                          "HOME": uhome, "MAILDIR": "imapbox/", "MAILDIRQUOTA": "4096S"}
    assert sorted(os.listdir(os.path.join(uhome, "imapbox"))) == ["cur", "new", "tmp"]


def test_already_authenticated_passes_straight_through(home):
    code, out = auth_imap(NEXT, data("whoever", "x"), env={"AUTHENTICATED": "earlier"})
    assert code == 0
    assert out == "next uid=0 AUTHENTICATED=earlier fd3=%r\n" % data("whoever", "x")   # fd 3 left unread


@pytest.mark.parametrize("payload", [data("nosuchuser", "secret"), data("u", "p", kind="cram-md5"),
                                     b"imap\ncram-md5\nincomplete"])
def test_not_ours_is_handed_to_the_next_module(home, payload):
    code, out = auth_imap(NEXT, payload, env={"AUTHENTICATED": ""})
    assert code == 0
    assert out == "next uid=0 AUTHENTICATED=unset fd3=%r\n" % payload


def test_failures_run_courier_fallback(home, slapd, boxes):  # noqa: F811
    login, _ = boxes.user(slapd)
    off, _ = boxes.user(slapd, accountStatus="noaccess")
    for payload in (data(login, "wrong"), data(login, ""), data(off, "secret"), b"imap\nlogin\n" + login.encode(),
                    b"imap\nlogin\nx\n" + b"p" * 1100 + b"\n"):
        assert auth_imap(NEXT, payload) == (0, "fallback\n"), payload
    assert auth_imap([], data(login, "secret")) == (0, "fallback\n")
    assert auth_imap(["/nonexistent/imapd"], data(login, "secret")) == (0, "fallback\n")
    assert auth_imap(NEXT, data(login, "wrong"), fallback=False) == (111, "")
    assert auth_imap(NEXT, data(login, "wrong"), env={"AUTHARGC": "4"}) == (111, "")   # AUTHARGV3 missing


def test_pbs_tool_runs_after_login(home, slapd, boxes):  # noqa: F811
    login, uhome = boxes.user(slapd)
    tool = os.path.join(boxes.base, "pbstool")
    with open(tool, "w") as f:
        f.write(f"#!/bin/sh\nid -u > {boxes.base}/pbs-ran\n")
    os.chmod(tool, 0o755)
    os.chmod(boxes.base, 0o777)
    assert auth_imap(["-d", tool, "true", "./Maildir/"], data(login, "secret"))[0] == 0
    assert open(os.path.join(boxes.base, "pbs-ran")).read() == f"{pop_ids()[0]}\n"


def test_cluster_user_is_relayed_to_the_mailhost(home, slapd, boxes, tmp_path):  # noqa: F811
    """mailHost is another cluster host: auth_imap logs in to its IMAP server (a real Dovecot on
    127.0.0.2 with auth_dovecot) and relays; the backend's answer to the login reaches the client."""
    backend = make_qmailhome(str(tmp_path / "backend"), me="127.0.0.2")
    ldap_controls(backend, slapd)
    os.chmod(tmp_path, 0o755)
    write_control(home, "ldapcluster", "1\n")
    login, uhome = boxes.user(slapd, mailHost="127.0.0.2")
    put_message(os.path.join(uhome, "Maildir"), b"Subject: on the backend\n\nrelayed\n")
    dovecot = Dovecot(os.path.join(BIN, "auth_dovecot"), backend, host="127.0.0.2")
    try:
        r, w = os.pipe()
        os.write(w, data(login, "secret"))
        os.close(w)
        env = {**os.environ, "IMAPLOGINTAG": "a1", "QMAIL_PORT_IMAP": str(dovecot.imap)}
        env.pop("AUTHENTICATED", None)
        proc = subprocess.Popen([AUTH_IMAP, "true", "./Maildir/"], preexec_fn=lambda: os.dup2(r, 3),
                                close_fds=False, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        os.close(r)
        proc.stdin.write(b"a2 SELECT INBOX\r\na3 LOGOUT\r\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert b"a1 OK" in out, out + dovecot.log().encode()
        assert b"* 1 EXISTS" in out and b"a3 OK" in out
    finally:
        dovecot.stop()
