"""qmail's .qmail helper programs (forward, condredirect, bouncesaying, except, preline, and
qmail-ldap's condwrite): each run as the real program with qmail-local's environment, then all of
them from .qmail files through the real master."""

import os
import subprocess
import sys

import pytest

from support.fakequeue import read_envelope, read_message, record_queue
from support.master import Master
from support.users import delivered, make_users

from engine import maildir, queue

BIN = os.path.dirname(sys.executable)
MESSAGE = b"Subject: hello\n\nbody text\n"
LOCAL_ENV = {"SENDER": "joe@remote.test", "NEWSENDER": "carol-owner@example.test",
             "DTLINE": "Delivered-To: carol-x@example.test\n",
             "RPLINE": "Return-Path: <joe@remote.test>\n",
             "UFLINE": "From joe@remote.test Thu Jan  1 00:00:00 2026\n"}


@pytest.fixture
def run(qmailhome, tmp_path):
    """Run a program with MESSAGE on a seekable stdin, qmail-local's variables and a recording queue."""
    msg = tmp_path / "msg"
    msg.write_bytes(MESSAGE)
    qq = record_queue(str(tmp_path))

    def start(*argv, drop=(), **env):
        full = {**os.environ, **LOCAL_ENV, "QMAILQUEUE": qq, **env}
        for name in drop:
            full.pop(name)
        with open(msg, "rb") as stdin:
            return subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], stdin=stdin, env=full,
                                  capture_output=True, timeout=30)
    return start


def queued(tmp_path):
    return os.path.exists(tmp_path / "envelope")


# -- forward --------------------------------------------------------------------------------

def test_forward_reinjects_with_newsender_and_dtline(run, tmp_path):
    p = run("forward", "a@x.test", "b@y.test")
    assert p.returncode == 0 and p.stderr.startswith(b"forward: qp ")
    assert read_envelope(str(tmp_path)) == (b"carol-owner@example.test", [b"a@x.test", b"b@y.test"])
    assert read_message(str(tmp_path)) == LOCAL_ENV["DTLINE"].encode() + MESSAGE


@pytest.mark.parametrize("variable", ["NEWSENDER", "DTLINE"])
def test_forward_needs_qmail_local_variables(run, tmp_path, variable):
    p = run("forward", "a@x.test", drop=[variable])
    assert p.returncode == 100 and p.stderr == f"forward: fatal: {variable} not set\n".encode()
    assert not queued(tmp_path)


@pytest.mark.parametrize("qq_exit,code", [(31, 100), (71, 111)])
def test_forward_passes_the_queue_refusal_on(run, qq_exit, code):
    p = run("forward", "a@x.test", FAKEQQ_EXIT=str(qq_exit))
    assert p.returncode == code and p.stderr.startswith(b"forward: fatal: ")


# -- condredirect ---------------------------------------------------------------------------

def test_condredirect_on_success_redirects_from_sender_and_stops_the_file(run, tmp_path):
    p = run("condredirect", "boss@x.test", "grep", "-q", "body text")
    assert p.returncode == 99 and p.stderr.startswith(b"condredirect: qp ")
    assert read_envelope(str(tmp_path)) == (b"joe@remote.test", [b"boss@x.test"])
    assert read_message(str(tmp_path)) == LOCAL_ENV["DTLINE"].encode() + MESSAGE  # rewound after grep


@pytest.mark.parametrize("program,code,text", [
    (["false"], 0, b""),
    (["/nonexistent/program"], 0, b""),                        # exec failure is 100: go on
    (["sh", "-c", "exit 111"], 111, b"condredirect: fatal: temporary child error\n"),
    (["sh", "-c", "kill -9 $$"], 111, b"condredirect: fatal: child crashed\n"),
])
def test_condredirect_otherwise(run, tmp_path, program, code, text):
    p = run("condredirect", "boss@x.test", *program)
    assert (p.returncode, p.stderr) == (code, text)
    assert not queued(tmp_path)


def test_condredirect_usage(run):
    p = run("condredirect", "boss@x.test")
    assert p.returncode == 100 and b"usage: condredirect newaddress program" in p.stderr


# -- bouncesaying and except ------------------------------------------------------------------

@pytest.mark.parametrize("argv,code,text", [
    (["Go away."], 100, b"Go away.\n"),
    (["Go away.", "grep", "-q", "body"], 100, b"Go away.\n"),
    (["Go away.", "grep", "-q", "absent"], 0, b""),
    (["Go away.", "sh", "-c", "exit 111"], 111, b"bouncesaying: fatal: temporary child error\n"),
    ([], 100, b"bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]\n"),
])
def test_bouncesaying(run, argv, code, text):
    p = run("bouncesaying", *argv)
    assert (p.returncode, p.stderr) == (code, text)


@pytest.mark.parametrize("argv,code", [(["true"], 100), (["false"], 0), (["sh", "-c", "exit 111"], 111),
                                       (["sh", "-c", "exit 100"], 0)])
def test_except_inverts(run, argv, code):
    assert run("except", *argv).returncode == code


# -- preline ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,lines", [
    ([], ("UFLINE", "RPLINE", "DTLINE")),
    (["-d"], ("UFLINE", "RPLINE")),
    (["-fr"], ("DTLINE",)),
    (["-f", "-F"], ("UFLINE", "RPLINE", "DTLINE")),
])
def test_preline_puts_the_lines_in_front(run, tmp_path, flags, lines):
    out = tmp_path / "out"
    p = run("preline", *flags, "sh", "-c", f"cat > {out}; exit 7")
    assert p.returncode == 7
    assert out.read_bytes() == "".join(LOCAL_ENV[n] for n in lines).encode() + MESSAGE


def test_preline_without_the_variables_is_a_usage_error(run):
    p = run("preline", "cat", drop=["UFLINE"])
    assert p.returncode == 100 and p.stderr == b"preline: usage: preline cmd [ arg ... ]\n"


def test_preline_when_the_command_stops_reading(tmp_path):
    """substdio_copy fails on EPIPE: preline.c exits 111, so the message is tried again."""
    big = tmp_path / "big"
    big.write_bytes(b"x" * (4 << 20))
    with open(big, "rb") as stdin:
        p = subprocess.run([os.path.join(BIN, "preline"), "true"], stdin=stdin, capture_output=True,
                           env={**os.environ, **LOCAL_ENV}, timeout=30)
    assert p.returncode == 111 and p.stderr.startswith(b"preline: fatal: unable to copy input: ")


# -- condwrite ---------------------------------------------------------------------------------

def test_condwrite_writes_into_a_maildir_and_stops_the_file(run, tmp_path):
    md = str(tmp_path / "box") + "/"
    maildir.make_maildir(md)
    assert run("condwrite", md, "grep", "-q", "absent").returncode == 0
    assert delivered(md) == []
    assert run("condwrite", md, "grep", "-q", "body").returncode == 99
    [path] = delivered(md)
    with open(path, "rb") as f:
        assert f.read() == (LOCAL_ENV["RPLINE"] + LOCAL_ENV["DTLINE"]).encode() + MESSAGE


def test_condwrite_appends_to_an_mbox(run, tmp_path):
    mbox = tmp_path / "mbox"
    assert run("condwrite", str(mbox), "true").returncode == 99
    assert mbox.read_bytes().startswith((LOCAL_ENV["UFLINE"] + LOCAL_ENV["RPLINE"]).encode())


def test_condwrite_honours_the_quota(run, tmp_path):
    md = str(tmp_path / "box") + "/"
    maildir.make_maildir(md)
    p = run("condwrite", md, "true", MAILDIRQUOTA="10S")
    assert p.returncode == 100
    assert p.stderr == b"condwrite: fatal: The users mailfolder is over the allowed quota (size). (#5.2.2)\n"
    assert delivered(md) == []


@pytest.mark.parametrize("variable", ["RPLINE", "DTLINE", "UFLINE"])
def test_condwrite_needs_the_lines(run, tmp_path, variable):
    p = run("condwrite", str(tmp_path / "mbox"), "true", drop=[variable])
    assert p.returncode == 100 and p.stderr == f"condwrite: fatal: {variable} not present.\n".encode()


# -- from .qmail files, through the master ------------------------------------------------------

def test_helpers_from_dot_qmail_files(qmailhome, tmp_path):
    users = make_users(qmailhome, str(tmp_path / "home"), ["alice", "carol"])
    carol = os.path.dirname(users["carol"])
    box = os.path.join(carol, "Filed") + "/"
    maildir.make_maildir(box)
    files = {
        "fw": "|forward alice@example.test\n",
        "cr": "|condredirect alice@example.test grep -q redirectme\n./Maildir/\n",
        "bs": "|bouncesaying 'No spam here.' grep -q spamspam\n./Maildir/\n",
        "cw": f"|condwrite {box} grep -q fileme\n./Maildir/\n",
        "pre": f"|preline sh -c 'cat > {tmp_path}/pre.out'\n",
    }
    for ext, text in files.items():
        with open(os.path.join(carol, f".qmail-{ext}"), "w") as f:
            f.write(text)
    m = Master(qmailhome, env={"PYQMAIL_RETRY_SCALE": "100"})
    try:
        m.start()
        for ext, body in [("fw", "forwarded"), ("cr", "redirectme"), ("cr", "stays"), ("bs", "spamspam"),
                          ("cw", "fileme"), ("pre", "piped")]:
            queue.enqueue(f"Subject: {body}\n\n{body}\n".encode(), b"alice@example.test",
                          [f"carol-{ext}@example.test".encode()], home=qmailhome)
        m.wait_for(lambda: len(delivered(users["alice"])) >= 3 and delivered(box)
                   and os.path.exists(tmp_path / "pre.out") and len(delivered(users["carol"])) >= 1,
                   60, "every helper's delivery")
    finally:
        m.stop()
    alice = sorted(open(p, "rb").read() for p in delivered(users["alice"]))
    assert any(b"Delivered-To: carol-fw@example.test\n" in t and b"\n\nforwarded\n" in t for t in alice)
    assert any(b"Delivered-To: carol-cr@example.test\n" in t and b"\n\nredirectme\n" in t for t in alice)
    assert any(b"No spam here." in t and b"Subject: failure notice" in t for t in alice)
    [kept] = delivered(users["carol"])
    assert b"\n\nstays\n" in open(kept, "rb").read()
    [filed] = delivered(box)
    assert b"Delivered-To: carol-cw@example.test\n" in open(filed, "rb").read()
    assert (tmp_path / "pre.out").read_bytes().startswith(b"From alice@example.test ")
