"""Mail clustering end to end (spec 3.9): two real masters on loopback sharing the session slapd.

Host A (control/me hosta.cluster.test) and host B (hostb.cluster.test) both have
ldapcluster 1 and the test domain in locals. B runs the master's QMQP listener on
port 628 of two loopback addresses: X, which B's ldapclusterhosts names (so
mailHost X is B), and W, which it does not (mailHost W makes B forward to itself:
a real loop). mailHost values are literal IPv4 addresses, which qmail-qmqpc (like
qmail's dns_ip) takes without DNS, so no resolver or /etc/hosts entry is needed.
"""

import asyncio
import itertools
import os
import random
import signal
import socket

import pytest

from engine import queue, verify
from support.master import Master
from support.qmailhome import make_qmailhome
from support.slapd import add_user, slapd  # noqa: F401
from support.users import delivered

_domains = itertools.count(1)
HOST_A, HOST_B = "hosta.cluster.test", "hostb.cluster.test"
QMQP_PORT = 628


def loopback_address():
    """A 127/8 address whose port 628 is free now (tests running side by side pick different ones)."""
    for _ in range(100):
        addr = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as s:
            try:
                s.bind((addr, QMQP_PORT))
            except OSError:
                continue
        return addr
    raise RuntimeError("no free loopback address for QMQP")


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


class Cluster:
    def __init__(self, home_a, home_b, domain, slapd, tmp_path):  # noqa: F811
        self.home_a, self.home_b, self.domain = home_a, home_b, domain
        self.slapd, self.tmp_path = slapd, tmp_path
        self.x, self.w = loopback_address(), loopback_address()
        for home in (home_a, home_b):
            write(home, "ldapserver", f"{slapd.hostport}\n")
            write(home, "ldapbasedn", f"{slapd.suffix}\n")
            write(home, "locals", f"{domain}\n")
            write(home, "ldaplocaldelivery", "0\n")
            write(home, "ldapcluster", "1\n")
            write(home, "ldapuid", "1000\n")  # virtual users (a single-user instance delivers as its owner)
            write(home, "ldapgid", "1000\n")
        write(home_a, "me", f"{HOST_A}\n")
        write(home_a, "ldapclusterhosts", "alias-a.cluster.test\n")
        write(home_b, "ldapclusterhosts", f"# B's QMQP address counts as B\n{self.x}\n")
        write(home_b, "qmqplisten", f"{self.x}:{QMQP_PORT}\n{self.w}:{QMQP_PORT}\n")
        env = {"PYQMAIL_RETRY_SCALE": "100"}
        self.a = Master(home_a, aliasempty="./", env=env)
        self.b = Master(home_b, aliasempty="./", env=env)

    def user(self, name, mailhost=None):
        store = str(self.tmp_path / "mail" / name) + "/"
        os.makedirs(store, mode=0o755)
        add_user(self.slapd, f"{name}.{self.tmp_path.name}", self.addr(name), mailMessageStore=store,
                 mailHost=mailhost)
        return store

    def addr(self, name):
        return f"{name}@{self.domain}"

    def send_a(self, rcpt, body=b"Subject: t\n\nbody\n", sender="near"):
        queue.enqueue(body, self.addr(sender).encode(), [self.addr(rcpt).encode()], home=self.home_a)

    def dtline(self, me, name):
        return f"Delivered-To: CLUSTERHOST {me} {self.addr(name)}\n".encode()


@pytest.fixture
def cluster(qmailhome, tmp_path, slapd):  # noqa: F811
    home_b = make_qmailhome(str(tmp_path / "hostb"), me=HOST_B)
    c = Cluster(qmailhome, home_b, f"c{next(_domains)}.cluster.test", slapd, tmp_path)
    yield c
    c.a.stop()
    c.b.stop()


def texts(store):
    return [open(p, "rb").read() for p in delivered(store)] if os.path.isdir(store + "new") else []


def queued_on(home):
    mess = os.path.join(home, "queue", "mess")
    return sum(len(os.listdir(os.path.join(mess, s))) for s in os.listdir(mess))


def test_foreign_mailhost_arrives_on_its_host_once_and_my_names_stay_local(cluster):
    c = cluster
    far = c.user("far", mailhost=c.x)
    stores = {"near": c.user("near", mailhost="HostA.Cluster.Test"),  # case does not matter
              "aka": c.user("aka", mailhost="alias-a.cluster.test"),  # a line of ldapclusterhosts is me
              "plain": c.user("plain")}  # no mailHost: local
    c.b.start()
    c.a.start()
    for name in ("far", "near", "aka", "plain"):
        c.send_a(name, body=f"Subject: to {name}\n\nbody\n".encode())
    c.a.wait_for(lambda: len(texts(far)) == 1, 60, "far's message on B")
    [message] = texts(far)
    assert message.count(b"Delivered-To: CLUSTERHOST ") == 1
    assert c.dtline(HOST_A, "far") in message and b"with QMQP; " in message
    c.a.wait_for(lambda: "success: qmail-forward:_ok_" in c.a.log(), 30, "A's report of the forward")
    c.b.wait_for(lambda: "success: did_" in c.b.log(), 30, "B's report of the local delivery")
    for name, store in stores.items():
        c.a.wait_for(lambda: len(texts(store)) == 1, 30, f"{name} delivered on A")
        [t] = texts(store)
        assert b"CLUSTERHOST" not in t and f"Subject: to {name}".encode() in t
    assert asyncio.run(verify.check(c.home_a, c.addr("far"))) == ("K", ""), "RCPTCHECK accepts cluster users"


def test_a_real_loop_bounces_with_5_4_6(cluster):
    """mailHost W: A forwards to B, B (W is not in its me set) forwards to itself, and the second time
    B finds its own CLUSTERHOST line; the bounce goes to the sender, whose mailbox is on B."""
    c = cluster
    sender_store = c.user("far", mailhost=c.x)
    c.user("loop", mailhost=c.w)
    c.b.start()
    c.a.start()
    c.send_a("loop", sender="far", body=b"Subject: round and round\n\nbody\n")
    c.b.wait_for(lambda: len(texts(sender_store)) == 1, 60, "the loop bounce on B")
    [bounce] = texts(sender_store)
    assert b"This message is looping: it already has my Cluster-Delivered-To line. (#5.4.6)" in bounce
    assert bounce.count(c.dtline(HOST_A, "loop")) == 1 and bounce.count(c.dtline(HOST_B, "loop")) == 1
    assert "failure: qmail-forward:_fatal:_This_message_is_looping" in c.b.log()


def test_mailhost_down_defers_then_delivers_when_it_is_back(cluster):
    c = cluster
    far = c.user("far", mailhost=c.x)
    c.a.start()
    c.send_a("far", body=b"Subject: patience\n\nbody\n")
    c.a.wait_for(lambda: "deferral: Unable_to_cluster-forward_message:_connection_to_mail_server_rejected_(#4.4.1)."
                 in c.a.log(), 30, "a deferral while B is down")
    assert queued_on(c.home_a) == 1 and texts(far) == []
    assert ": failure: " not in c.a.log()
    c.b.start()
    c.a.signal(signal.SIGALRM)
    c.a.wait_for(lambda: len(texts(far)) == 1, 60, "delivered on B after it came up")
    assert texts(far)[0].count(c.dtline(HOST_A, "far")) == 1
    c.a.wait_for(lambda: queued_on(c.home_a) == 0, 30, "A's queue empty")


# -- qmail-lspawn's side of forward_mail(), on a Worker without a master --------------------------

def forward_report(home, message=b"Subject: x\n\nbody\n"):
    from engine import lspawn
    path = os.path.join(home, "message.tmp")
    with open(path, "wb") as f:
        f.write(message)
    fd = os.open(path, os.O_RDONLY)
    try:
        return lspawn.Worker(home, "./Maildir/", None).cluster_forward("127.0.0.1", "a@a.test", "joe@b.test", fd)
    finally:
        os.close(fd)


def replace_program(home, text, mode):
    path = os.path.join(home, "bin", "qmail-forward")
    os.unlink(path)
    f = open(path, "w")
    f.write(text)
    f.flush()
    os.chmod(path, mode)
    return f


def test_qmail_forward_that_cannot_run_is_reported_as_qmail_lspawn_does(qmailhome):
    with replace_program(qmailhome, "not a program\n", 0o644):
        assert forward_report(qmailhome) == (b"D", b"Permanent error while executing qmail-forward. (#5.4.4)")
    with replace_program(qmailhome, "#!/bin/sh\nexit 0\n", 0o755):  # still open for writing: ETXTBSY
        assert forward_report(qmailhome) == (b"Z", b"Temporary error while executing qmail-forward. (#4.4.4)")


def test_qmail_forward_exit_codes_become_k_z_d_with_its_output(qmailhome):
    for code, letter in ((0, b"K"), (111, b"Z"), (100, b"D"), (71, b"Z"), (99, b"D")):
        replace_program(qmailhome, f"#!/bin/sh\necho said $1 $2 $3 >&2\nexit {code}\n", 0o755).close()
        assert forward_report(qmailhome) == (letter, b"said 127.0.0.1 a@a.test joe@b.test\n")
    replace_program(qmailhome, "#!/bin/sh\nkill -9 $$\n", 0o755).close()
    assert forward_report(qmailhome) == (b"Z", b"qmail-local crashed.")


@pytest.mark.skipif(os.getuid() != 0, reason="dropping to alias/nofiles needs root (CI runs as root)")
def test_as_root_qmail_forward_runs_as_alias_with_group_nofiles():
    """qmail-lspawn.c swaps the constants (prot_gid(auto_uida), prot_uid(auto_gidn)); we run it as meant."""
    import grp
    import pwd
    import shutil
    import tempfile
    from engine import conf, install
    base = tempfile.mkdtemp(prefix="pyqmail-cluster-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        home = install.setup(os.path.join(base, "qmail"), single_user=False, me="root.cluster.test")
        replace_program(home, "#!/bin/sh\necho $(id -u) $(id -g) $(id -G)\n", 0o755).close()
        uid, gid = pwd.getpwnam(conf.USER_ALIAS).pw_uid, grp.getgrnam(conf.GROUP_NOFILES).gr_gid
        assert forward_report(home) == (b"K", f"{uid} {gid} {gid}\n".encode())
    finally:
        shutil.rmtree(base, ignore_errors=True)
