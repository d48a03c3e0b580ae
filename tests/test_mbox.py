"""mbox delivery: From_ line, >From quoting (both twins), locking, quota, truncation on a full disk."""

import fcntl
import multiprocessing
import os
import re
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from engine import compiled, maildir
from engine.mailbox import MailboxError, QuotaExceeded
from support.twins import both

UF = b"From sender@example.org Thu Nov 26 12:00:00 2026\n"
PREFIX = b"Return-Path: <sender@example.org>\nDelivered-To: user@example.com\n"


def reference(body):
    """mailfile(): gfrom() lines get one more '>', an unterminated last line a newline, then one empty line."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b">" if re.match(rb">*From ", line) else b"") + line + b"\n" for line in lines) + b"\n"


@pytest.mark.parametrize("body,want", [
    (b"From a\n>From b\n>>From c\nxFrom d\n From e\nFrom\n", b">From a\n>>From b\n>>>From c\nxFrom d\n From e\nFrom\n\n"),
    (b"no newline", b"no newline\n\n"),
    (b"", b"\n"),
    (b"From ", b">From \n\n"),
    (b">>>", b">>>\n\n"),
    (b"\nFrom x", b"\n>From x\n\n"),
])
@both("maildir")
def test_quoting_vectors(k, tmp_path, body, want):
    assert reference(body) == want
    path = tmp_path / "mbox"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        n = k.append_mbox(fd, UF, body)
    finally:
        os.close(fd)
    assert path.read_bytes() == UF + want and n == len(UF + want)


@both("maildir")
def test_quoting_across_read_boundaries(k, tmp_path):
    # ">>From " split over the 64 KiB read size, from a file descriptor
    body = b"a" * 65533 + b"\n>>From x\n" + b"b" * 65535 + b"\nFrom y"
    src = tmp_path / "src"
    src.write_bytes(body)
    path = tmp_path / "mbox"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with open(src, "rb") as f:
            k.append_mbox(fd, b"", f.fileno())
    finally:
        os.close(fd)
    assert path.read_bytes() == reference(body)


@settings(max_examples=80, deadline=None)
@given(body=st.lists(st.sampled_from([b"From ", b">", b"F", b"rom", b" ", b"\n", b"x", b"From\n"]),
                     max_size=40).map(b"".join), via_fd=st.booleans())
def test_twins_quote_identically(tmp_path_factory, body, via_fd):
    base = tmp_path_factory.mktemp("m")
    outs = set()
    for label, k in compiled.variants("maildir").items():
        path = base / label
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            if via_fd:
                src = base / ("src" + label)
                src.write_bytes(body)
                with open(src, "rb") as f:
                    k.append_mbox(fd, UF, f.fileno())
            else:
                k.append_mbox(fd, UF, body)
        finally:
            os.close(fd)
        outs.add(path.read_bytes())
    assert outs == {UF + reference(body)}


def test_deliver_mbox_appends_from_line_prefix_and_message(tmp_path):
    path = tmp_path / "Mailbox"
    path.write_bytes(b"old\n\n")
    d = maildir.deliver_mbox(str(path), UF, PREFIX, b"Subject: x\n\nFrom me\n")
    assert path.read_bytes() == b"old\n\n" + UF + PREFIX + b"Subject: x\n\n>From me\n\n"
    assert d.size == path.stat().st_size - 5 and d.percent == 0


def test_deliver_mbox_creates_the_file_0600(tmp_path):
    path = tmp_path / "Mailbox"
    maildir.deliver_mbox(str(path), UF, PREFIX, b"hi\n")
    assert path.stat().st_mode & 0o777 == 0o600


def test_unopenable_mbox(tmp_path):
    with pytest.raises(MailboxError) as e:
        maildir.deliver_mbox(str(tmp_path), UF, PREFIX, b"hi\n")
    assert e.value.code == 111
    assert e.value.text == f"Unable to open {tmp_path}: is a directory. (#4.2.1)"


def test_mbox_quota_at_the_limit_and_one_byte_over(tmp_path):
    path = tmp_path / "Mailbox"
    path.write_bytes(b"x" * 60)
    d = maildir.deliver_mbox(str(path), UF, PREFIX, b"y" * 40, quota="100S")
    assert d.percent == 100
    with pytest.raises(QuotaExceeded) as e:
        maildir.deliver_mbox(str(path), UF, PREFIX, b"y", quota=f"{path.stat().st_size}S")
    assert (e.value.code, e.value.text) == (100, "The users mailbox is over the allowed quota (size). (#5.2.2)")


def test_mbox_count_only_quota_is_no_limit(tmp_path):
    d = maildir.deliver_mbox(str(tmp_path / "Mailbox"), UF, PREFIX, b"y\n", quota="5C")
    assert d.percent == 0


def test_mbox_waits_for_the_lock(tmp_path):
    path = tmp_path / "Mailbox"
    path.write_bytes(b"")
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    done = threading.Event()
    t = threading.Thread(target=lambda: (maildir.deliver_mbox(str(path), UF, PREFIX, b"m\n"), done.set()))
    t.start()
    time.sleep(0.3)
    assert not done.is_set() and path.read_bytes() == b""
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    t.join(10)
    assert done.is_set() and path.read_bytes() == UF + PREFIX + b"m\n\n"


def test_mbox_lock_held_too_long(tmp_path, monkeypatch):
    monkeypatch.setattr(maildir, "LOCK_SECONDS", 0.2)
    path = tmp_path / "Mailbox"
    path.write_bytes(b"")
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(MailboxError) as e:
            maildir.deliver_mbox(str(path), UF, PREFIX, b"m\n")
    finally:
        os.close(holder)
    assert (e.value.code, e.value.text) == (111, "File has been locked for 30 seconds straight. (#4.3.0)")
    assert path.read_bytes() == b""


def _append_many(path, tag, n):
    for i in range(n):
        body = b"".join(b"%s %d line %d\nFrom inside\n" % (tag, i, j) for j in range(200))
        maildir.deliver_mbox(path, b"From %s@x Thu Nov 26 12:00:00 2026\n" % tag, PREFIX, body)


def test_concurrent_appends_do_not_interleave(tmp_path):
    path = str(tmp_path / "Mailbox")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, b"p%d" % i, 15)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = open(path, "rb").read()
    messages = re.split(rb"(?m)^(?=From )", data)[1:]
    assert len(messages) == 60
    for m in messages:
        tag = m.split(b" ", 2)[1].split(b"@")[0]
        lines = m.split(b"\n")[3:-2]
        assert len(lines) == 400
        assert all(line.startswith(tag + b" ") or line == b">From inside" for line in lines)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_write_error_truncates_back(small_fs):
    path = small_fs / "Mailbox"
    path.write_bytes(b"first message\n\n")
    with pytest.raises(MailboxError) as e:
        maildir.deliver_mbox(str(path), UF, PREFIX, b"z" * 1024 * 1024)
    assert (e.value.code, e.value.text) == (111, f"Unable to write {path}: out of disk space. (#4.3.0)")
    assert path.read_bytes() == b"first message\n\n"


def test_deliver_line_mbox_uses_ufline(tmp_path):
    src = tmp_path / "mess"
    src.write_bytes(b"From x\nbody\n")
    with open(src, "rb") as f:
        maildir.deliver_line(str(tmp_path / "Mailbox"), f.fileno(), "Return-Path: <>\n", "Delivered-To: u@h\n",
                             "From MAILER-DAEMON Thu Nov 26 12:00:00 2026\n", {})
    assert (tmp_path / "Mailbox").read_bytes() == (b"From MAILER-DAEMON Thu Nov 26 12:00:00 2026\n"
                                                   b"Return-Path: <>\nDelivered-To: u@h\n>From x\nbody\n\n")
