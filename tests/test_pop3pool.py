"""The master's POP3 pool end to end: mail for an LDAP user comes in over SMTP, the real master delivers
it, and poplib and fetchmail take it out again through control/pop3listen — as root, so the session
really runs as the user."""

import os
import poplib
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import psutil
import pytest

from engine import install
from support.master import Master, tcp_connections
from support.pop3 import ldap_controls, pop_ids, put_message, write_control
from support.ports import free_port
from support.slapd import slapd  # noqa: F401

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="the POP3 pool must be root to become the user "
                                                         "(CI runs as root)")
DOMAIN = "pop.example.test"


@pytest.fixture
def root_home(slapd):  # noqa: F811
    base = tempfile.mkdtemp(prefix="pyqmail-pop-", dir="/tmp")
    os.chmod(base, 0o755)
    home = install.setup(os.path.join(base, "qmail"), single_user=False, me=DOMAIN)
    ldap_controls(home, slapd)
    write_control(home, "locals", f"{DOMAIN}\n")
    write_control(home, "rcpthosts", f"{DOMAIN}\n")
    yield home
    shutil.rmtree(base, ignore_errors=True)


def listen(home, service):
    port = free_port()
    write_control(home, f"{service}listen", f"127.0.0.1:{port}\n")
    return port


def connect(port, timeout=30):
    deadline = time.monotonic() + 15
    while True:
        try:
            return poplib.POP3("127.0.0.1", port, timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def smtp_send(port, rcpt, body):
    deadline = time.monotonic() + 15
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
                c.sendmail("sender@remote.test", [rcpt], body)
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def files(maildir):
    return [n for d in ("new", "cur") for n in os.listdir(os.path.join(maildir, d))]


def pop_sessions(m, port, uid):
    """Processes of the master's tree running as `uid` that hold a connection to the POP3 port."""
    found = []
    for p in m.children():
        try:
            if p.uids().real != uid:
                continue
        except psutil.NoSuchProcess:
            continue
        if any(c.laddr and c.laddr.port == port and c.raddr for c in tcp_connections(p)):
            found.append(p)
    return found


def test_smtp_in_pop3_out_with_poplib_and_fetchmail(root_home, slapd, boxes, tmp_path):  # noqa: F811
    login, uhome = boxes.user(slapd, mailQuotaSize="1000000")
    off, _ = boxes.user(slapd, accountStatus="disabled")
    maildir = os.path.join(uhome, "Maildir")
    smtp_port, pop_port = listen(root_home, "smtp"), listen(root_home, "pop3")
    m = Master(root_home).start()
    try:
        for n in (1, 2, 3):
            smtp_send(smtp_port, f"{login}@{DOMAIN}", f"Subject: message {n}\r\n\r\n.line {n}\r\n")
        m.wait_for(lambda: len(files(maildir)) == 3, 30, "three deliveries")
        time.sleep(1.1)  # qmail-pop3d leaves out messages of the current second
        assert all(os.stat(os.path.join(maildir, "new", n)).st_uid == pop_ids()[0] for n in files(maildir))

        bad = connect(pop_port)
        assert bad.getwelcome().endswith(b"@" + DOMAIN.encode() + b">")
        bad.user(login)
        with pytest.raises(poplib.error_proto, match="-ERR authorization failed"):
            bad.pass_("wrong")
        bad.close()
        disabled = connect(pop_port)
        disabled.user(off)
        with pytest.raises(poplib.error_proto, match="-ERR account disabled"):
            disabled.pass_("secret")
        disabled.close()

        pop = connect(pop_port)
        pop.user(login)
        assert pop.pass_("secret") == b"+OK "
        count, size = pop.stat()
        assert count == 3
        sessions = pop_sessions(m, pop_port, pop_ids()[0])
        assert len(sessions) == 1 and sessions[0].gids().real == pop_ids()[1]  # never root
        worker = sessions[0].parent()
        assert worker.uids().real == 0 and worker.ppid() == m.proc.pid  # forked by a root pool worker
        resp, lines, _ = pop.retr(1)
        first = next(line for line in lines if line.startswith(b"Subject: message "))
        n = first[-1:]
        assert b".line " + n in lines and lines[0] == b"Return-Path: <sender@remote.test>"
        assert len(pop.uidl()[1]) == 3
        pop.dele(1)
        pop.quit()
        assert len(files(maildir)) == 2
        with open(os.path.join(maildir, "maildirsize")) as f:
            sizes = f.read().splitlines()
        assert sizes[0] == "1000000S" and sizes[-1].startswith("-") and sizes[-1].endswith(" -1")
        assert all(n.endswith(":2,") for n in os.listdir(os.path.join(maildir, "cur")))

        out = tmp_path / "fetched"
        rc = tmp_path / "fetchmailrc"
        rc.write_text(f'set no bouncemail\npoll 127.0.0.1 port {pop_port} proto pop3 no uidl\n'
                      f'  user "{login}" password "secret" is root here\n'
                      f'  mda "/bin/sh -c \'cat >> {out}\'" fetchall sslproto ""\n')
        rc.chmod(0o600)
        fm = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-i", str(tmp_path / "ids")],
                            capture_output=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        assert fm.returncode == 0, fm.stdout + fm.stderr
        fetched = out.read_bytes()
        assert fetched.count(b"Subject: message ") == 2 and first not in fetched
        assert files(maildir) == []  # fetchmail deleted what it fetched
        with open(os.path.join(maildir, "maildirsize")) as f:
            sizes = f.read().splitlines()
        used = sum(int(line.split()[0]) for line in sizes[1:])
        count = sum(int(line.split()[1]) for line in sizes[1:])
        assert (used, count) == (0, 0)
    finally:
        m.stop()
        print(m.log()[-4000:])


def test_single_user_instance_serves_as_its_owner(qmailhome, slapd, boxes):  # noqa: F811
    """Without qmail's users the instance has one user: the session runs as the instance's owner."""
    ldap_controls(qmailhome, slapd)
    login, uhome = boxes.user(slapd)
    put_message(os.path.join(uhome, "Maildir"), b"Subject: owner\n\nhi\n")
    pop_port = listen(qmailhome, "pop3")
    m = Master(qmailhome).start()
    try:
        pop = connect(pop_port)
        pop.user(login)
        pop.pass_("secret")
        assert pop.stat()[0] == 1
        assert len(pop_sessions(m, pop_port, os.getuid())) == 2  # the worker and its session child
        assert not pop_sessions(m, pop_port, pop_ids()[0])
        pop.quit()
        piped = socket.create_connection(("127.0.0.1", pop_port), timeout=30)
        piped.sendall(f"USER {login}\r\nPASS secret\r\nSTAT\r\nQUIT\r\n".encode())  # all at once
        replies = piped.makefile("rb")
        assert [replies.readline() for _ in range(5)][1:] == [b"+OK \r\n", b"+OK \r\n", b"+OK 1 19\r\n",
                                                               b"+OK \r\n"]
        replies.close()
        piped.close()
        bad = connect(pop_port)
        bad.user("nosuchuser")
        m.signal(signal.SIGHUP)  # a dialogue in progress survives a reload
        time.sleep(0.5)
        with pytest.raises(poplib.error_proto, match="-ERR authorization failed"):
            bad.pass_("secret")
        bad.close()
    finally:
        m.stop()


def test_pop3listen_worker_count_and_rules(root_home, slapd, boxes):  # noqa: F811
    pop_port = listen(root_home, "pop3")
    write_control(root_home, "pop3workers", "3\n")
    write_control(root_home, "pop3rules", "127.0.0.1:deny\n")
    m = Master(root_home).start()
    try:
        assert "qmail-popup=3" in m.log()
        s = socket.create_connection(("127.0.0.1", pop_port), timeout=10)
        assert s.recv(100) == b""  # tcprules deny: closed without a greeting
        s.close()
        assert "qmail-popup listening on 127.0.0.1:" in m.log()
    finally:
        m.stop()


def test_a_pop3_login_lets_the_client_relay(root_home, slapd, boxes):  # noqa: F811
    """POP-before-SMTP with both pools in the master: the POP3 login registers the client with
    pbsdbd (as `auth_pop -d pbsadd`), and the SMTP listener then lets it relay."""
    from support.pbs import start_pbsdbd, stop, udp_port
    login, _ = boxes.user(slapd)
    udp = udp_port()
    for name, text in (("pbsip", "127.0.0.1"), ("pbsport", str(udp)), ("pbssecret", "s3cret"),
                       ("pbsservers", "127.0.0.1")):
        write_control(root_home, name, text + "\n")
    daemon = start_pbsdbd(root_home, udp)
    smtp_port, pop_port = listen(root_home, "smtp"), listen(root_home, "pop3")
    m = Master(root_home).start()

    def relays():
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as c:
            try:
                c.sendmail("sender@remote.test", ["friend@elsewhere.test"], "Subject: pbs\r\n\r\nhi\r\n")
                return True
            except smtplib.SMTPRecipientsRefused:
                return False
    try:
        smtp_send(smtp_port, f"{login}@{DOMAIN}", "Subject: wake\r\n\r\nx\r\n")  # waits for the listener
        assert not relays()
        pop = connect(pop_port)
        pop.user(login)
        pop.pass_("secret")
        pop.quit()
        m.wait_for(relays, 10, "relaying after the POP3 login")
    finally:
        m.stop()
        stop(daemon)
