"""Maildir++ quota: maildirsize parsing, rebuilds, limits, percent, folders (maildir++.c behaviour)."""

import os
import time

import pytest

from engine import maildir, quota
from engine.mailbox import QuotaExceeded, MailboxError
from engine.quota import Quota, Usage

PREFIX = b"Return-Path: <>\nDelivered-To: u@h\n"


def new_maildir(path):
    maildir.make_maildir(str(path))
    return path


def put(md, sub, name, size):
    (md / sub / name).write_bytes(b"x" * size)


@pytest.mark.parametrize("text,want", [
    ("1000000S,1000C", Quota(1000000, 1000)),
    ("1000C 50S", Quota(50, 1000)),
    ("5000S", Quota(5000, 0)),
    ("", Quota()),
    (None, Quota()),
    ("12X,7C", Quota(0, 7)),
    ("S100", Quota()),
])
def test_parse_quota(text, want):
    assert quota.parse_quota(text) == want


def test_definition_line():
    assert Quota(10, 0).definition() == b"10S"
    assert Quota(0, 3).definition() == b"3C"
    assert Quota(10, 3).definition() == b"10S,3C"


@pytest.mark.parametrize("data,want", [
    (b"100S\n10 1\n20 1\n", (Quota(100), 30, 2)),
    (b"100S,5C\n  10 1\n-4 -1\n", (Quota(100, 5), 6, 0)),
    (b"100S\n5 1\n-9 -3\n7 2\n", (Quota(100), 7, 2)),   # running totals stay at 0 or more
    (b"100S\ngarbage\n3 1\n4\n", (Quota(100), 3, 1)),
    (b"9C\n", (Quota(0, 9), 0, 0)),
])
def test_parse_maildirsize(data, want):
    assert quota.parse_maildirsize(data) == want


def test_size_from_name_and_trash_flag():
    assert quota.size_from_name(b"1.2.h,S=1234:2,S") == 1234
    assert quota.size_from_name(b"1.2.h:2,S") is None
    assert quota._trashed(b"1.2.h,S=5:2,ST")
    assert not quota._trashed(b"1.2.h,S=5:2,FS")


def test_percent_and_limits_at_the_edges():
    u = Usage(Quota(1000, 10), 900, 5)
    assert not u.exceeded_by(100) and u.exceeded_by(101)
    assert u.percent(100) == 100 and u.percent(0) == 90
    assert Usage(Quota(0, 2), 0, 1).exceeded_by(0) is False
    assert Usage(Quota(0, 2), 0, 2).exceeded_by(0) is True
    assert Usage(Quota(0, 10), 0, 6).percent(0) == 70


def test_rebuild_counts_folders_sizes_and_skips_trash(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    put(md, "new", "1.1.h,S=100", 3)          # the name's size wins over the real size
    put(md, "cur", "2.2.h:2,S", 40)           # no S=: stat
    put(md, "cur", "3.3.h,S=50:2,ST", 50)     # trashed flag: not counted
    put(md, "new", ".hidden", 999)
    for folder in (".Sent", ".Trash"):
        new_maildir(md / folder)
        put(md / folder, "cur", "4.4.h,S=7:2,S", 7)
    (md / "..odd").mkdir()
    assert quota.scan(os.fsencode(md))[:2] == (147, 3)
    assert quota.scan(os.fsencode(md), quotatrash=True)[:2] == (154, 4)
    u = quota.calc(str(md), Quota(1000, 0))
    assert (u.size, u.count) == (147, 3)
    assert (md / "maildirsize").read_bytes() == b"1000S\n147 3\n"
    assert os.listdir(md / "tmp") == []


def test_no_quota_writes_no_maildirsize(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    assert maildir.deliver_maildir(str(md), PREFIX, b"hi\n", quota="0S").percent == 0
    assert not (md / "maildirsize").exists()


def test_zero_quota_takes_the_definition_in_maildirsize(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    (md / "maildirsize").write_bytes(b"10S\n0 0\n")
    with pytest.raises(QuotaExceeded):
        maildir.deliver_maildir(str(md), PREFIX, b"x" * 11, quota="0S")


def test_exactly_at_the_size_limit_then_one_byte_over(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    d = maildir.deliver_maildir(str(md), PREFIX, b"x" * 100, quota="100S")
    assert d.percent == 100
    assert (md / "maildirsize").read_bytes() == b"100S\n0 0\n%d 1\n" % d.size
    md2 = new_maildir(tmp_path / "M2")
    with pytest.raises(QuotaExceeded) as e:
        maildir.deliver_maildir(str(md2), PREFIX, b"x" * 101, quota="100S")
    assert (e.value.code, e.value.text) == (100, "The users mailfolder is over the allowed quota (size). (#5.2.2)")
    assert e.value.percent == 101
    assert os.listdir(md2 / "new") == []


def test_count_limit_bounces_with_the_same_text(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    for _ in range(2):
        maildir.deliver_maildir(str(md), PREFIX, b"m\n", quota="2C")
    with pytest.raises(QuotaExceeded) as e:
        maildir.deliver_maildir(str(md), PREFIX, b"m\n", quota="2C")
    assert e.value.text == "The users mailfolder is over the allowed quota (size). (#5.2.2)"
    assert len(os.listdir(md / "new")) == 2


def test_warning_percent_from_70(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    percents = [maildir.deliver_maildir(str(md), PREFIX, b"m\n", quota="10C").percent for _ in range(7)]
    assert percents == [10, 20, 30, 40, 50, 60, 70]
    assert percents[-1] >= quota.WARNING_LEVEL


def test_over_quota_recounts_a_long_maildirsize_and_accepts(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    (md / "maildirsize").write_bytes(b"100S\n0 0\n90 1\n5 1\n")   # messages since deleted by hand
    d = maildir.deliver_maildir(str(md), PREFIX, b"x" * 50, quota="100S")
    assert (md / "maildirsize").read_bytes() == b"100S\n0 0\n%d 1\n" % d.size


def test_over_quota_trusts_a_short_fresh_maildirsize(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    (md / "maildirsize").write_bytes(b"100S\n95 1\n")
    with pytest.raises(QuotaExceeded):
        maildir.deliver_maildir(str(md), PREFIX, b"x" * 50, quota="100S")
    old = time.time() - quota.STALE_SECONDS - 5
    os.utime(md / "maildirsize", (old, old))
    maildir.deliver_maildir(str(md), PREFIX, b"x" * 50, quota="100S")


def test_big_or_redefined_maildirsize_is_rebuilt(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    put(md, "cur", "1.1.h,S=10:2,S", 10)
    (md / "maildirsize").write_bytes(b"500S\n" + b"1 1\n" * 2000)
    assert (quota.calc(str(md), Quota(500)).size, quota.calc(str(md), Quota(500)).count) == (10, 1)
    assert (md / "maildirsize").read_bytes() == b"500S\n10 1\n"
    assert quota.calc(str(md), Quota(600, 4)) == Usage(Quota(600, 4), 10, 1)
    assert (md / "maildirsize").read_bytes() == b"600S,4C\n10 1\n"


def test_subfolder_uses_the_top_maildirsize(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    sub = new_maildir(md / ".Lists")
    (sub / "maildirfolder").write_bytes(b"")
    d = maildir.deliver_maildir(str(sub), PREFIX, b"list mail\n", quota="1000S")
    assert (md / "maildirsize").read_bytes() == b"1000S\n0 0\n%d 1\n" % d.size
    assert not (sub / "maildirsize").exists()


def test_recursive_maildirfolder_is_a_temporary_error(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for p in (tmp_path / "a", tmp_path / "a" / "b", deep):
        (p / "maildirfolder").write_bytes(b"")
    with pytest.raises(MailboxError) as e:
        quota.quota_root(str(deep))
    assert (e.value.code, e.value.text) == (111, "Unable to calc quota: recursive maildir++ (QUOTA #1.1.1)")


def test_remove_appends_negative_deltas(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    d = maildir.deliver_maildir(str(md), PREFIX, b"x\n", quota="1000S")
    assert quota.remove(str(md), d.size)
    assert quota.calc(str(md), Quota(1000)) == Usage(Quota(1000), 0, 0)
    assert (md / "maildirsize").read_bytes().endswith(b"-%d -1\n" % d.size)


def test_warned_finds_a_quota_warning_file(tmp_path):
    md = new_maildir(tmp_path / "Maildir")
    assert not quota.warned(str(md))
    put(md, "cur", "123.456.QUOTA_WARNING,S=10:2,S", 1)
    assert quota.warned(str(md))


WARN_SCRIPT = """#!/bin/sh
echo "$1 $USER@$HOST" >> "{log}"
cat > "{log}.stdin"
exit {code}
"""


def install_quotawarn(home, tmp_path, code=0):
    log = tmp_path / "warn.log"
    prog = os.path.join(home, "bin", "qmail-quotawarn")
    os.makedirs(os.path.dirname(prog), exist_ok=True)
    if os.path.lexists(prog):
        os.unlink(prog)  # a link to our real program: replace it, never write through it
    with open(prog, "w") as f:
        f.write(WARN_SCRIPT.format(log=log, code=code))
    os.chmod(prog, 0o755)
    with open(os.path.join(home, "control", "quotawarning"), "w") as f:
        f.write("Your mailbox is nearly full.\n")
    return log


def deliver_line(tmp_path, line, env, body=b"msg\n"):
    src = tmp_path / "mess"
    src.write_bytes(body)
    with open(src, "rb") as f:
        return maildir.deliver_line(line, f.fileno(), "Return-Path: <a@b>\n", "Delivered-To: u@h\n",
                                    "From a@b Thu Nov 26 12:00:00 2026\n", env)


ENV = {"MAILDIRQUOTA": "10C", "USER": "u", "HOST": "h", "PATH": os.environ.get("PATH", "/bin")}


def test_quota_warning_runs_from_70_percent(qmailhome, tmp_path):
    log = install_quotawarn(qmailhome, tmp_path)
    md = str(new_maildir(tmp_path / "Maildir")) + "/"
    for i in range(6):
        deliver_line(tmp_path, md, ENV)
    assert not log.exists()
    deliver_line(tmp_path, md, ENV)
    assert log.read_text() == f"{md} u@h\n"
    assert (tmp_path / "warn.log.stdin").read_bytes() == b"msg\n"


def test_quota_warning_runs_before_the_bounce(qmailhome, tmp_path):
    log = install_quotawarn(qmailhome, tmp_path)
    mbox = str(tmp_path / "Mailbox")
    with pytest.raises(QuotaExceeded) as e:
        deliver_line(tmp_path, mbox, dict(ENV, MAILDIRQUOTA="10S"), body=b"x" * 11)
    assert e.value.text == "The users mailbox is over the allowed quota (size). (#5.2.2)"
    assert log.read_text() == f"{mbox} u@h\n"


def test_quota_warning_needs_control_quotawarning(qmailhome, tmp_path):
    log = install_quotawarn(qmailhome, tmp_path)
    os.unlink(os.path.join(qmailhome, "control", "quotawarning"))
    deliver_line(tmp_path, str(tmp_path / "Mailbox"), dict(ENV, MAILDIRQUOTA="10S"), body=b"x" * 9)
    assert not log.exists()


def test_quota_warning_program_failures(qmailhome, tmp_path):
    install_quotawarn(qmailhome, tmp_path, code=111)
    with pytest.raises(MailboxError) as e:
        deliver_line(tmp_path, str(tmp_path / "Mailbox"), dict(ENV, MAILDIRQUOTA="10S"), body=b"x" * 9)
    assert (e.value.code, e.value.text) == (111, "")
    os.unlink(os.path.join(qmailhome, "bin", "qmail-quotawarn"))
    with pytest.raises(MailboxError) as e:
        deliver_line(tmp_path, str(tmp_path / "Mailbox2"), dict(ENV, MAILDIRQUOTA="10S"), body=b"x" * 9)
    prog = os.path.join(qmailhome, "bin", "qmail-quotawarn")
    assert (e.value.code, e.value.text) == (111, f"Unable to run quotawarn program: {prog}: "
                                                 "file does not exist. (#4.2.2)")
