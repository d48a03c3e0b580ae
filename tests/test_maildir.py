"""Maildir delivery: the kernel twins, qmail-local's error texts, concurrency, crash and disk-full safety."""

import multiprocessing
import os
import re
import signal
import stat
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from engine import compiled, maildir, quota
from engine.mailbox import (CHDIR_MAILDIR, READ_MESSAGE, TEMP_MAILDIR, MailboxError)
from support.twins import both

PREFIX = b"Return-Path: <sender@example.org>\nDelivered-To: user@example.com\n"
BODY = b"Subject: test\n\nhello\nFrom here\n"
NAME = re.compile(rb"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")


def new_maildir(tmp_path, name="Maildir"):
    path = tmp_path / name
    maildir.make_maildir(str(path))
    return path


def listing(path, sub):
    return sorted(os.listdir(path / sub))


def fsynced_paths(code, tmp_path):
    """The files and directories a child Python fsyncs while running `code` (strace -y)."""
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-y", "-e", "trace=fsync", "-o", str(log), os.sys.executable, "-c", code],
                   check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return re.findall(r"fsync\(\d+<([^>]*)>", log.read_text())


@pytest.mark.parametrize("twin", ["_maildir_c", "_maildir_py"])
@pytest.mark.parametrize("sync_new", [True, False])
def test_kernel_fsyncs_new_only_when_asked(tmp_path, twin, sync_new):
    md = new_maildir(tmp_path)
    code = (f"from engine import {twin} as k; "
            f"print(k.deliver({os.fsencode(md)!r}, b'P\\n', b'body\\n', b'h', {sync_new}))")
    synced = fsynced_paths(code, tmp_path)
    assert len(synced) == 1 + sync_new and synced[0].startswith(str(md / "tmp"))
    assert (synced[1:] == [str(md / "new")]) if sync_new else True
    assert len(listing(md, "new")) == 1


def test_deferred_new_sync_only_on_the_named_file_system(tmp_path):
    md = new_maildir(tmp_path)
    dev = os.stat(md).st_dev
    try:
        maildir.defer_new_sync(dev)
        assert not maildir._sync_new_needed(os.fsencode(md))
        maildir.defer_new_sync(dev + 1)
        assert maildir._sync_new_needed(os.fsencode(md))
    finally:
        maildir.defer_new_sync(None)
    assert maildir._sync_new_needed(os.fsencode(md))


@both("maildir")
def test_kernel_writes_prefix_and_body_under_a_unique_name(k, tmp_path):
    md = new_maildir(tmp_path)
    name, size = k.deliver(os.fsencode(md), PREFIX, BODY, b"mx.example")
    m = NAME.match(name)
    assert m and m.group(5) == b"mx.example" and int(m.group(3)) == os.getpid()
    assert size == len(PREFIX) + len(BODY) == int(m.group(6))
    assert abs(int(m.group(1)) - time.time()) < 5
    assert (md / "new" / os.fsdecode(name)).read_bytes() == PREFIX + BODY
    assert listing(md, "tmp") == []
    assert stat.S_IMODE((md / "new" / os.fsdecode(name)).stat().st_mode) == 0o600


@both("maildir")
def test_kernel_counter_makes_names_unique_within_one_second(k, tmp_path):
    md = os.fsencode(new_maildir(tmp_path))
    names = {k.deliver(md, PREFIX, BODY, b"h")[0] for _ in range(200)}
    assert len(names) == 200


@both("maildir")
def test_kernel_reads_a_file_descriptor_from_its_offset(k, tmp_path):
    md = new_maildir(tmp_path)
    src = tmp_path / "mess"
    src.write_bytes(b"XXXX" + BODY * 5000)
    with open(src, "rb") as f:
        f.seek(4)
        name, size = k.deliver(os.fsencode(md), PREFIX, f.fileno(), b"h")
    assert (md / "new" / os.fsdecode(name)).read_bytes() == PREFIX + BODY * 5000
    assert size == len(PREFIX) + len(BODY) * 5000


@both("maildir")
def test_kernel_reads_a_pipe(k, tmp_path):
    md = new_maildir(tmp_path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, BODY * 100)
        os._exit(0)
    os.close(w)
    try:
        name, size = k.deliver(os.fsencode(md), PREFIX, r, b"h")
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert (md / "new" / os.fsdecode(name)).read_bytes() == PREFIX + BODY * 100


@both("maildir")
def test_kernel_error_names_its_step(k, tmp_path):
    with pytest.raises(OSError) as e:
        k.deliver(os.fsencode(tmp_path / "missing"), PREFIX, BODY, b"h")
    assert e.value.step == "tmp" and e.value.errno == 2
    md = new_maildir(tmp_path)
    fd = os.open(tmp_path / "wo", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as e:
            k.deliver(os.fsencode(md), PREFIX, fd, b"h")
    finally:
        os.close(fd)
    assert e.value.step == "read"
    assert listing(md, "tmp") == [] and listing(md, "new") == []


def test_unique_host_escapes_slash_and_colon_and_cuts_at_64():
    assert maildir.unique_host("a/b:c") == b"a\\057b\\072c"
    assert maildir.unique_host("x" * 70) == b"x" * 64
    assert b"/" not in maildir.unique_host() and b":" not in maildir.unique_host()


def test_deliver_maildir_returns_path_size_and_no_quota_files(tmp_path):
    md = new_maildir(tmp_path)
    d = maildir.deliver_maildir(str(md) + "/", PREFIX, BODY)
    assert d.path == os.fsencode(md) + b"/new/" + d.name and d.percent == 0
    assert open(d.path, "rb").read() == PREFIX + BODY
    assert not (md / "maildirsize").exists()


def test_missing_maildir_is_unable_to_chdir(tmp_path):
    with pytest.raises(MailboxError) as e:
        maildir.deliver_maildir(str(tmp_path / "nope"), PREFIX, BODY)
    assert (e.value.code, e.value.text) == (111, CHDIR_MAILDIR)
    assert "nope" in e.value.detail


def test_missing_tmp_is_a_temporary_error(tmp_path):
    md = new_maildir(tmp_path)
    os.rmdir(md / "tmp")
    with pytest.raises(MailboxError) as e:
        maildir.deliver_maildir(str(md), PREFIX, BODY)
    assert (e.value.code, e.value.text) == (111, TEMP_MAILDIR)
    assert "tmp" in e.value.detail


def test_unreadable_message_is_unable_to_read(tmp_path):
    md = new_maildir(tmp_path)
    fd = os.open(tmp_path / "wo", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(MailboxError) as e:
            maildir.deliver_maildir(str(md), PREFIX, fd)
    finally:
        os.close(fd)
    assert (e.value.code, e.value.text) == (111, READ_MESSAGE)


def test_automake_creates_maildir_with_mode_0700(tmp_path):
    md = tmp_path / "Maildir"
    maildir.deliver_maildir(str(md) + "/", PREFIX, BODY, automake=True)
    for sub in ("", "tmp", "cur", "new"):
        assert stat.S_IMODE((md / sub).stat().st_mode) == 0o700
    assert len(listing(md, "new")) == 1


def test_automake_completes_a_partial_maildir(tmp_path):
    md = tmp_path / "Maildir"
    (md / "new").mkdir(parents=True)
    maildir.deliver_maildir(str(md), PREFIX, BODY, automake=True)
    assert (md / "cur").is_dir() and len(listing(md, "new")) == 1


def test_automake_reports_corruption_and_creation_failure(tmp_path):
    md = tmp_path / "Maildir"
    md.mkdir()
    (md / "cur").write_text("not a dir")
    with pytest.raises(MailboxError) as e:
        maildir.deliver_maildir(str(md) + "/", PREFIX, BODY, automake=True)
    assert (e.value.code, e.value.text) == (111, f"The maildir '{md}/' seems to be corrupted. (#4.2.1)")
    deep = tmp_path / "no" / "such" / "Maildir"
    with pytest.raises(MailboxError) as e:
        maildir.deliver_maildir(str(deep), PREFIX, BODY, automake=True)
    assert (e.value.code, e.value.text) == (111, f"Unable to create maildir '{deep}' (#4.3.0)")


def test_deliver_line_maildir_with_quota_from_env(tmp_path):
    src = tmp_path / "mess"
    src.write_bytes(BODY)
    with open(src, "rb") as f:
        f.read()   # deliver_line rewinds
        d = maildir.deliver_line(str(tmp_path / "Maildir") + "/", f.fileno(), "Return-Path: <a@b>\n",
                                 "Delivered-To: u@h\n", "From a@b Thu Jan  1 00:00:00 1970\n",
                                 {"MAILDIRQUOTA": "1000S", "AUTOMAILDIRMAKE": ""})
    assert open(d.path, "rb").read() == b"Return-Path: <a@b>\nDelivered-To: u@h\n" + BODY
    assert (tmp_path / "Maildir" / "maildirsize").read_bytes() == b"1000S\n0 0\n%d 1\n" % d.size


def _deliver_many(md, n, q, out):
    for i in range(n):
        d = maildir.deliver_maildir(md, PREFIX, BODY * (1 + i % 7), quota=q)
        out.put((d.name, d.size))


@pytest.mark.parametrize("preexisting", [True, False], ids=["maildirsize", "no-maildirsize"])
def test_concurrent_deliveries_give_unique_names_and_exact_maildirsize(tmp_path, preexisting):
    md = str(new_maildir(tmp_path))
    q = "100000000S,100000C"
    if preexisting:
        maildir.deliver_maildir(md, PREFIX, BODY, quota=q)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_deliver_many, args=(md, 25, q, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(100)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    names = [os.fsdecode(n) for n, _ in results]
    assert len(set(names)) == 100
    files = listing(tmp_path / "Maildir", "new")
    assert set(names) <= set(files) and len(files) == 100 + preexisting
    _, size, count = quota.parse_maildirsize((tmp_path / "Maildir" / "maildirsize").read_bytes())
    on_disk = sum((tmp_path / "Maildir" / "new" / f).stat().st_size for f in files)
    assert (size, count) == (on_disk, len(files))


@both("maildir")
def test_sigkill_mid_write_never_leaves_a_partial_file_in_new(k, tmp_path):
    md = os.fsencode(new_maildir(tmp_path))
    body = bytes(range(256)) * 16384          # 4 MiB: several writes per message
    killed = 0
    for i in range(25):
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    k.deliver(md, PREFIX, memoryview(body), b"h")
            finally:
                os._exit(1)
        time.sleep(0.005 + (i % 5) * 0.007)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed += os.WIFSIGNALED(status)
    assert killed == 25
    assert os.listdir(md + b"/tmp")           # at least one kill landed mid-message
    want = PREFIX + body
    for name in os.listdir(md + b"/new"):
        assert NAME.match(name).group(6) == str(len(want)).encode()
        with open(md + b"/new/" + name, "rb") as f:
            assert f.read() == want
    assert os.listdir(md + b"/new")   # some deliveries did complete


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs (we run as root), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@both("maildir")
def test_disk_full_is_a_temporary_error_and_leaves_nothing(k, small_fs):
    md = small_fs / "Maildir"
    maildir.make_maildir(str(md))
    with pytest.raises(OSError) as e:
        k.deliver(os.fsencode(md), PREFIX, b"x" * 1024 * 1024, b"h")
    assert e.value.errno == 28 and e.value.step == "write"
    assert listing(md, "tmp") == [] and listing(md, "new") == []


def test_disk_full_maps_to_temporary_maildir_error(small_fs):
    md = small_fs / "Maildir"
    with pytest.raises(MailboxError) as e:
        maildir.deliver_maildir(str(md), PREFIX, b"x" * 1024 * 1024, automake=True)
    assert (e.value.code, e.value.text) == (111, TEMP_MAILDIR)
    assert "No space left on device" in e.value.detail
    assert listing(md, "new") == [] and listing(md, "tmp") == []


@settings(max_examples=60, deadline=None)
@given(prefix=st.binary(max_size=200), body=st.binary(max_size=5000), via_fd=st.booleans())
def test_twins_write_identical_files(tmp_path_factory, prefix, body, via_fd):
    base = tmp_path_factory.mktemp("h")
    out = {}
    for label, k in compiled.variants("maildir").items():
        md = base / label
        maildir.make_maildir(str(md))
        if via_fd:
            src = base / f"src-{label}"
            src.write_bytes(body)
            with open(src, "rb") as f:
                name, size = k.deliver(os.fsencode(md), prefix, f.fileno(), b"host")
        else:
            name, size = k.deliver(os.fsencode(md), prefix, body, b"host")
        m = NAME.match(name)
        out[label] = (m.group(5), m.group(6), size, (md / "new" / os.fsdecode(name)).read_bytes())
    assert len(set(out.values())) == 1
    assert out["py"][3] == prefix + body
