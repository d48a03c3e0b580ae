"""Runs the real master (`python -m engine.start`) on a qmail home for end-to-end tests, and stops it."""

import os
import signal
import subprocess
import sys
import time

import psutil


def tcp_connections(p):
    """p's TCP sockets, or none when p has just died: the tests kill workers and list the rest."""
    try:
        return p.net_connections("tcp")
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def cmdline(p):
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


class Master:
    def __init__(self, home, aliasempty="./Maildir/", env=None):
        self.home = home
        self.aliasempty = aliasempty
        self.env = {**os.environ, "QMAILHOME": home, **(env or {})}
        self.logpath = os.path.join(home, "master.log")
        self.proc = None

    def start(self, timeout=15):
        self.logfile = open(self.logpath, "ab")
        self.log_start = self.logfile.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.start", self.aliasempty],
                                     env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     cwd=self.home)
        self.wait_for(lambda: "status: arbiter" in self.log(), timeout, "master did not start")
        self.wait_for(lambda: "status: local" in self.log() or self._send_up(), timeout,
                      "qmail-send did not start")
        return self

    def _send_up(self):
        return any("qmail-send" in " ".join(cmdline(p)) for p in self.children()) or \
            len(self.children()) >= 4

    def children(self):
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def named(self, name):
        """The children whose process name (the arbiter sets qmail's program name) is `name`."""
        found = []
        for p in self.children():
            try:
                if p.name() == name:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return found

    def listeners(self, port):
        """The children listening on TCP `port` (a worker killed a moment ago is skipped, not raised)."""
        return [p for p in self.children()
                if any(c.status == "LISTEN" and c.laddr.port == port for c in tcp_connections(p))]

    def log(self):
        """What this master (not an earlier one on the same home) has logged."""
        with open(self.logpath, "rb") as f:
            f.seek(getattr(self, "log_start", 0))
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_for(self, pred, timeout=30, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{what} within {timeout} s; log tail:\n{self.log()[-3000:]}")

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        kids = self.children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for k in kids:
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass
        self.logfile.close()
        return self.proc.returncode
