"""maildir2mbox: a Maildir's messages appended to $MAIL in delivery order, then removed."""

import os
import subprocess
import sys

import pytest

from engine import maildir

PROGRAM = os.path.join(os.path.dirname(sys.executable), "maildir2mbox")


@pytest.fixture
def box(tmp_path):
    md = str(tmp_path / "Maildir")
    maildir.make_maildir(md)
    return md, str(tmp_path / "mbox"), str(tmp_path / "mbox.tmp")


def put(md, sub, name, text):
    with open(os.path.join(md, sub, name), "wb") as f:
        f.write(text)


def run(md, mbox, tmp, drop=()):
    env = {**os.environ, "MAILDIR": md, "MAIL": mbox, "MAILTMP": tmp}
    for name in drop:
        del env[name]
    return subprocess.run([PROGRAM], env=env, capture_output=True, timeout=30)


def test_messages_are_appended_in_delivery_order(box):
    md, mbox, tmp = box
    with open(mbox, "wb") as f:
        f.write(b"From old Thu Jan  1 00:00:00 1970\nold\n\n")
    put(md, "cur", "200.2.host:2,S", b"Return-Path: <>\nSubject: bounce\n\nFrom here\n")
    put(md, "new", "100.1.host", b"Return-Path: <a b\tc@x.test>\nSubject: first\n\nno newline")
    put(md, "new", "300.3.host", b"Subject: no return path\n\nbody\n")
    p = run(md, mbox, tmp)
    assert (p.returncode, p.stderr) == (0, b"")
    with open(mbox, "rb") as f:
        assert f.read() == (
            b"From old Thu Jan  1 00:00:00 1970\nold\n\n"
            b"From a-b-c@x.test Thu Jan  1 00:01:40 1970\n"
            b"Return-Path: <a b\tc@x.test>\nSubject: first\n\nno newline\n\n"
            b"From MAILER-DAEMON Thu Jan  1 00:03:20 1970\n"
            b"Return-Path: <>\nSubject: bounce\n\n>From here\n\n"
            b"From XXX Thu Jan  1 00:05:00 1970\n"
            b"Subject: no return path\n\nbody\n\n")
    assert os.listdir(os.path.join(md, "new")) == os.listdir(os.path.join(md, "cur")) == []
    assert not os.path.exists(tmp)


def test_nothing_new_leaves_the_mbox_alone(box):
    md, mbox, tmp = box
    assert run(md, mbox, tmp).returncode == 0
    assert not os.path.exists(mbox) and not os.path.exists(tmp)


@pytest.mark.parametrize("name", ["MAIL", "MAILTMP"])
def test_variables_are_required(box, name):
    p = run(*box, drop=[name])
    assert (p.returncode, p.stderr) == (111, f"maildir2mbox: fatal: {name} not set\n".encode())


def test_unwritable_tmp_keeps_the_messages(box, tmp_path):
    md, mbox, _ = box
    put(md, "new", "100.1.host", b"Subject: x\n\nx\n")
    p = run(md, mbox, str(tmp_path / "no" / "such" / "tmp"))
    assert p.returncode == 111 and p.stderr.startswith(b"maildir2mbox: fatal: unable to create ")
    assert os.listdir(os.path.join(md, "new")) == ["100.1.host"]
