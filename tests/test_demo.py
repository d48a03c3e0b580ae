"""`make run` (engine.demo) as a program: it starts slapd with the sample users beside the master,
delivers SMTP mail through the directory, and leaves nothing running when stopped; without a
working slapd it says why and runs on users/assign."""

import os
import signal
import smtplib
import subprocess
import sys
import time

import psutil
import pytest

from support.ports import free_port
from support.users import delivered


class Demo:
    def __init__(self, base):
        self.base = str(base)
        self.port = free_port()
        self.out = os.path.join(self.base, "demo.out")
        os.makedirs(self.base, exist_ok=True)
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "engine.demo", self.base, "--smtp-port",
                                          str(self.port)], stdout=out, stderr=subprocess.STDOUT)

    def text(self):
        with open(self.out, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, pred, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not pred():
            assert self.proc.poll() is None, f"demo exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"{what}:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def ready(self):
        self.wait_for(lambda: f"listening on 127.0.0.1:{self.port}" in self.text()
                      and "status: arbiter" in self.text(), "demo did not come up")
        return self

    def smtp(self, sender, rcpt):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.sendmail(sender, [rcpt], f"From: {sender}\nTo: {rcpt}\nSubject: demo\n\nhello\n")

    def maildir(self, user):
        return os.path.join(self.base, "home", user, "Maildir")

    def stop(self):
        """SIGINT as Ctrl-C would send, then: every process the demo started is gone."""
        family = psutil.Process(self.proc.pid).children(recursive=True)
        assert family, "the demo runs its master (and slapd) as children"
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(60)
        gone, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            p.kill()
        assert not alive, f"left running: {[p.pid for p in alive]}"
        return code

    def kill(self):
        if self.proc.poll() is None:
            family = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.kill()
            for p in family:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass


@pytest.fixture
def demo(tmp_path):
    started = []

    def start(base=None):
        started.append(Demo(base or tmp_path / "run"))
        return started[-1]
    yield start
    for d in started:
        d.kill()


def test_demo_serves_ldap_users_and_stops_cleanly(demo):
    d = demo().ready()
    text = d.text()
    assert "LDAP directory: slapd on ldap://127.0.0.1:" in text
    for user in ("alice", "sales", "carol", "dave", "erin", "frank"):
        assert f"    {user}@example.test " in text
    assert "ldapsearch -x -LLL -H ldap://127.0.0.1:" in text and "swaks --server" in text
    control = os.path.join(d.base, "qmail", "control")
    assert open(os.path.join(control, "ldapserver")).read().startswith("127.0.0.1:")
    d.smtp("bob@example.test", "sales@example.test")  # forward-only LDAP alias: alice and bob
    d.smtp("bob@example.test", "carol@example.test")  # only in the directory
    d.wait_for(lambda: os.path.isdir(d.maildir("carol")) and len(delivered(d.maildir("carol"))) == 1,
               "carol's copy from the directory")
    d.wait_for(lambda: len(delivered(d.maildir("alice"))) == 1, "sales@ forwarded to alice")
    d.wait_for(lambda: len(delivered(d.maildir("bob"))) == 2, "sales@ and carol@ forwarded to bob")
    assert d.stop() == 0
    assert "status: exiting" in d.text()


def test_demo_without_a_working_slapd_says_why_and_uses_users_assign(demo, tmp_path):
    data = tmp_path / "run" / "ldap" / "data"
    os.makedirs(data)
    (data / "data.mdb").write_bytes(b"not an mdb database" * 100)
    d = demo().ready()
    assert "No LDAP directory: slapd did not start: slapd exited with" in d.text()
    assert not os.path.exists(os.path.join(d.base, "qmail", "control", "ldapserver"))
    d.smtp("bob@example.test", "alice@example.test")
    d.wait_for(lambda: len(delivered(d.maildir("alice"))) == 1, "alice through users/assign")
    assert d.stop() == 0
