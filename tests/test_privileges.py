"""As root, each process of the master runs under qmail's uid for its role, and mail still flows."""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from engine import conf, install
from support.master import Master
from support.ports import free_port

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="privilege separation needs root (CI runs as root)")


@pytest.fixture
def root_home():
    base = tempfile.mkdtemp(prefix="pyqmail-root-", dir="/tmp")
    os.chmod(base, 0o755)
    home = install.setup(os.path.join(base, "qmail"), single_user=False, me="priv.example.test")
    yield home
    shutil.rmtree(base, ignore_errors=True)


def uid(name):
    return pwd.getpwnam(name).pw_uid


def test_each_role_runs_as_its_user(root_home):
    port = free_port()
    with open(os.path.join(root_home, "control", "smtplisten"), "w") as f:
        f.write(f"127.0.0.1:{port}\n")
    with open(os.path.join(root_home, "control", "concurrencylocal"), "w") as f:
        f.write("3\n")
    m = Master(root_home).start()
    try:
        m.wait_for(lambda: len(m.children()) >= 5 + 3 + 2, 20, "all roles started")
        uids = sorted(p.uids().real for p in m.children() if p.ppid() == m.proc.pid)
        want = sorted([uid(conf.USER_SEND)] * 2 + [uid(conf.USER_QUEUE)] * 2 + [uid(conf.USER_REMOTE)]
                      + [0] * 3 + [uid(conf.USER_DAEMON)] * 2)
        assert uids == want
        for p in m.children():
            if p.ppid() == m.proc.pid and p.uids().real != 0:
                assert p.uids().effective == p.uids().real and p.uids().saved == p.uids().real
                assert p.gids().real != 0
        assert m.proc.pid and psutil_uid(m.proc.pid) == 0
    finally:
        m.stop()


def psutil_uid(pid):
    import psutil
    return psutil.Process(pid).uids().real


def test_setuid_qmail_queue_and_delivery_as_the_user(root_home, tmp_path):
    """A mail user's message goes in through the setuid qmail-queue and is delivered as that user."""
    user = "pyqmailtest"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "-m", "-d", f"/tmp/{user}-home", "-s", "/usr/sbin/nologin", user],
                       check=True)
        pw = pwd.getpwnam(user)
    os.makedirs(pw.pw_dir, exist_ok=True)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(pw.pw_dir, 0o755)
    maildir = os.path.join(pw.pw_dir, "Maildir")
    shutil.rmtree(maildir, ignore_errors=True)
    m = Master(root_home, aliasempty="./Maildir/").start()
    try:
        env_r, env_w = os.pipe()
        os.write(env_w, f"F{user}@priv.example.test\0T{user}@priv.example.test\0\0".encode())
        os.close(env_w)

        def become_user():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        p = subprocess.run([os.path.join(root_home, "bin", "qmail-queue")], input=b"Subject: priv\n\nhi\n",
                           stdout=env_r, preexec_fn=become_user, capture_output=False)
        os.close(env_r)
        assert p.returncode == 0
        new = os.path.join(maildir, "new")
        m.wait_for(lambda: os.path.isdir(new) and os.listdir(new), 30, "delivery to the user's Maildir")
        path = os.path.join(new, os.listdir(new)[0])
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid), "delivered as the recipient, not root"
        with open(path, "rb") as f:
            text = f.read()
        assert b"invoked by uid %d" % pw.pw_uid in text
    finally:
        m.stop()


@pytest.mark.parametrize("program_usable", [True, False])
def test_smtp_as_qmaild_queues_through_the_queue_service(root_home, program_usable):
    """The SMTP workers run as qmaild, which cannot write the queue: mail goes to the master's
    qmail-queue service (running as qmailq), so it gets in even with bin/qmail-queue unusable."""
    import smtplib
    port = free_port()
    with open(os.path.join(root_home, "control", "smtplisten"), "w") as f:
        f.write(f"127.0.0.1:{port}\n")
    with open(os.path.join(root_home, "control", "rcpthosts"), "w") as f:
        f.write("priv.example.test\n")
    if not program_usable:
        os.chmod(os.path.join(root_home, "bin", "qmail-queue"), 0)
    m = Master(root_home).start()
    try:
        for _ in range(100):
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                    c.sendmail("a@remote.test", ["nobody-such@priv.example.test"], "Subject: q\r\n\r\nx\r\n")
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        m.wait_for(lambda: "new msg " in m.log(), 20, "the message reached the queue")
        assert "from <a@remote.test> qp " in m.log() and f" uid {uid(conf.USER_DAEMON)}\n" in m.log()
    finally:
        m.stop()


def test_master_compiles_the_rules_its_qmaild_workers_read(root_home):
    """control/smtprules is compiled by the master (root) at start and on HUP: the workers, as
    qmaild, may not write control/, yet a rule written there is what they obey."""
    import signal
    import smtplib
    port = free_port()
    control = os.path.join(root_home, "control")
    with open(os.path.join(control, "smtplisten"), "w") as f:
        f.write(f"127.0.0.1:{port}\n")
    with open(os.path.join(control, "smtprules"), "w") as f:
        f.write("127.0.0.1:deny\n")
    m = Master(root_home).start()
    try:
        m.wait_for(lambda: os.path.exists(os.path.join(control, "smtprules.cdb")), 20, "rules compiled")
        assert os.stat(os.path.join(control, "smtprules.cdb")).st_mode & 0o044 == 0o044
        time.sleep(1)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtplib.SMTP("127.0.0.1", port, timeout=10)
        with open(os.path.join(control, "smtprules"), "w") as f:
            f.write("127.0.0.1:allow,RELAYCLIENT=\"\"\n")
        m.proc.send_signal(signal.SIGHUP)

        def greets():
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                    return c.noop()[0] == 250
            except smtplib.SMTPServerDisconnected:
                return False
        m.wait_for(greets, 20, "the new rules after HUP")
    finally:
        m.stop()
