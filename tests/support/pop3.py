"""POP3 test helpers: LDAP mail users with real uids and homes outside the 0700 pytest tree, Maildir
files with chosen delivery times, and the program chain under ucspi-tcp's tcpserver."""

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from engine import passwd
from engine.slapd import add_user

POP_USER = "nobody"  # a real uid within qmail-ldap's 100-65535 range, never root
CHAIN = [sys.executable, "-m", "engine.popup", "pop.example.test",
         sys.executable, "-m", "engine.authpop", sys.executable, "-m", "engine.pop3d", "./Maildir/"]

_serial = itertools.count(1)


def pop_ids():
    pw = pwd.getpwnam(POP_USER)
    return pw.pw_uid, pw.pw_gid


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def ldap_controls(home, slapd, **extra):
    write_control(home, "ldapserver", f"{slapd.hostport}\n")
    write_control(home, "ldapbasedn", f"{slapd.suffix}\n")
    write_control(home, "ldaplocaldelivery", "0\n")
    for name, value in extra.items():
        write_control(home, name, f"{value}\n")


class Mailboxes:
    """A directory under /tmp (mode 0755) holding the POP users' homes; removed by close()."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="pyqpop-", dir="/tmp")
        os.chmod(self.base, 0o755)

    def close(self):
        shutil.rmtree(self.base, ignore_errors=True)

    def user(self, slapd, name=None, password="secret", make_home=True, **attrs):
        """An LDAP user with homeDirectory, qmailUID/GID of POP_USER and an {SSHA} password; (login, home)."""
        login = f"{name or 'u'}{next(_serial)}x{os.getpid()}"
        home = os.path.join(self.base, login)
        uid, gid = pop_ids()
        if make_home:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(home, "Maildir", sub))
            for root, dirs, _ in os.walk(home):
                for d in [root] + [os.path.join(root, x) for x in dirs]:
                    os.chown(d, uid, gid)
            os.chmod(home, 0o700)
        fields = {"homeDirectory": home, "qmailUID": str(uid), "qmailGID": str(gid),
                  "userPassword": passwd.make(password, "ssha") if password else None}
        fields.update(attrs)
        add_user(slapd, login, f"{login}@pop.example.test", **fields)
        return login, home


def put_message(maildir, text, when=None, sub="new", name=None, size_in_name=True):
    """A message file `<when>.<n>.host[,S=<size>]` in new/ or cur/, owned by the mailbox's owner."""
    when = int(time.time()) - 100 if when is None else when
    name = name or f"{when}.M{next(_serial)}P{os.getpid()}.host"
    if size_in_name:
        name += f",S={len(text)}"
    path = os.path.join(maildir, sub, name)
    with open(path, "wb") as f:
        f.write(text)
    st = os.stat(os.path.join(maildir, sub))
    os.chown(path, st.st_uid, st.st_gid)
    os.utime(path, (when, when))
    return path


class TcpServer:
    """ucspi-tcp's tcpserver running `argv` per connection on host:port, as an administrator runs
    qmail-popup; env passes QMAILHOME and friends through."""

    def __init__(self, argv, env, host="127.0.0.1", port=None):
        from support.ports import free_port
        self.host, self.port = host, port or free_port(host)
        self.proc = subprocess.Popen(["tcpserver", "-HRl0", host, str(self.port), *argv], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"tcpserver on {host}:{self.port} did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
