"""engine.qq against real queue programs: fds 0/1/4, cwd, and every exit code's text (qmail.c qmail_close)."""

import os

import pytest

from engine import qq
from support.fakequeue import read_envelope, read_message, record_queue

# spec 1.3: every exit code qmail.c names, with its text
EXPECTED = {
    0: "",
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: "Zqq read error (#4.3.0)",
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
    # unnamed codes: 11..40 permanent, the rest temporary
    12: "Dqq permanent problem (#5.3.0)",
    40: "Dqq permanent problem (#5.3.0)",
    10: "Zqq temporary problem (#4.3.0)",
    41: "Zqq temporary problem (#4.3.0)",
    82: "Zqq temporary problem (#4.3.0)",  # 82 without custom text
    100: "Zqq temporary problem (#4.3.0)",
    111: "Zqq temporary problem (#4.3.0)",
    255: "Zqq temporary problem (#4.3.0)",
}


@pytest.fixture
def fake(tmp_path, qmailhome):
    program = record_queue(tmp_path)
    env = dict(os.environ, QMAILQUEUE=program)
    return tmp_path, env


def test_message_envelope_and_cwd_reach_the_program(fake, qmailhome):
    out, env = fake
    message = b"Subject: hi\n\n" + bytes(range(256)) * 300  # bigger than a pipe buffer
    assert qq.submit(message, b"a@b.example", [b"c@d.example", b"e@f.example"], env) == ""
    assert read_message(out) == message
    assert read_envelope(out) == (b"a@b.example", [b"c@d.example", b"e@f.example"])
    with open(out / "envelope", "rb") as f:
        assert f.read() == b"Fa@b.example\0Tc@d.example\0Te@f.example\0\0"
    with open(out / "cwd") as f:
        assert os.path.realpath(f.read()) == os.path.realpath(qmailhome)


def test_bounce_sender_and_no_recipients_are_framed(fake):
    out, env = fake
    assert qq.submit(b"x\n", b"", [], env) == ""
    with open(out / "envelope", "rb") as f:
        assert f.read() == b"F\0\0"


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_exit_code_text(fake, code):
    _, env = fake
    env["FAKEQQ_EXIT"] = str(code)
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == EXPECTED[code]


def test_result_text_table_matches_spec():
    for code, text in EXPECTED.items():
        assert qq.result_text(code) == text
    assert qq.result_text(0, flagerr=True) == "Zqq read error (#4.3.0)"


def test_custom_error_text_on_fd4_is_used_verbatim(fake):
    _, env = fake
    env.update(FAKEQQ_EXIT="82", FAKEQQ_ERRTEXT="DYour message contains a virus (Eicar-Test-Signature) (#5.3.0)")
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == \
        "DYour message contains a virus (Eicar-Test-Signature) (#5.3.0)"
    env["FAKEQQ_ERRTEXT"] = "Zscanner busy"
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Zscanner busy"


def test_custom_error_text_is_cut_at_255_bytes(fake):
    _, env = fake
    env.update(FAKEQQ_EXIT="82", FAKEQQ_ERRTEXT="D" + "x" * 400)
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "D" + "x" * 254


def test_short_custom_text_is_ignored(fake):
    _, env = fake
    env.update(FAKEQQ_EXIT="82", FAKEQQ_ERRTEXT="Dx")
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Zqq temporary problem (#4.3.0)"


def test_fd4_text_is_ignored_unless_exit_82(fake):
    _, env = fake
    env.update(FAKEQQ_EXIT="31", FAKEQQ_ERRTEXT="Dcustom text")
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Dmail server permanently rejected message (#5.3.0)"


def test_crash_is_temporary(fake):
    _, env = fake
    env["FAKEQQ_KILL"] = "1"
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Zqq crashed (#4.3.0)"


def test_missing_program_is_unable_to_exec(tmp_path, qmailhome):
    env = dict(os.environ, QMAILQUEUE=str(tmp_path / "nonexistent"))
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Zunable to exec qq (#4.3.0)"


def test_missing_qmail_home_is_trouble_in_home_directory(fake, tmp_path):
    _, env = fake
    env["QMAILHOME"] = str(tmp_path / "nohome")
    assert qq.submit(b"x\n", b"s@x", [b"r@y"], env) == "Zqq trouble in home directory (#4.3.0)"


def test_relative_qmailqueue_is_relative_to_qmail_home(qmailhome, tmp_path):
    record_queue(tmp_path)
    os.rename(tmp_path / "qq", os.path.join(qmailhome, "bin", "myqueue"))
    env = dict(os.environ, QMAILQUEUE="bin/myqueue")
    assert qq.submit(b"hello\n", b"s@x", [b"r@y"], env) == ""
    assert read_message(tmp_path) == b"hello\n"


def test_default_program_is_bin_qmail_queue(qmailhome, tmp_path):
    record_queue(tmp_path)
    os.rename(tmp_path / "qq", os.path.join(qmailhome, "bin", "qmail-queue"))
    env = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
    assert qq.queue_program(env) == (os.path.join(qmailhome, "bin", "qmail-queue"), qmailhome)
    assert qq.submit(b"hello\n", b"s@x", [b"r@y"], env) == ""
    assert read_envelope(tmp_path) == (b"s@x", [b"r@y"])


def test_streaming_put_in_pieces(fake):
    out, env = fake
    q = qq.Queue(env)
    assert q.qp > 0
    for piece in (b"Subject: a\n", b"\n", b"line 1\n", b"line 2\n"):
        q.put(piece)
    q.sender(b"s@x")
    q.to(b"r1@y")
    q.to(b"r2@y")
    assert q.close() == ""
    assert read_message(out) == b"Subject: a\n\nline 1\nline 2\n"
    assert read_envelope(out) == (b"s@x", [b"r1@y", b"r2@y"])


def test_fail_queues_nothing_and_reports_read_error(fake):
    """qmail_fail (size limit hit, client gone): the envelope stays empty, the program answers 54."""
    out, env = fake
    env["FAKEQQ_EXIT"] = "0"
    q = qq.Queue(env)
    q.put(b"partial")
    q.fail()
    q.sender(b"s@x")
    q.to(b"r@y")
    assert q.close() == "Zqq read error (#4.3.0)"
    with open(out / "envelope", "rb") as f:
        assert f.read() == b""


def test_program_that_exits_early_does_not_hang_the_writer(tmp_path, qmailhome):
    script = tmp_path / "early"
    script.write_text("#!/bin/sh\nexit 31\n")
    script.chmod(0o755)
    env = dict(os.environ, QMAILQUEUE=str(script))
    assert qq.submit(b"x" * (1 << 20), b"s@x", [b"r@y"], env) == \
        "Dmail server permanently rejected message (#5.3.0)"


def test_exception_inside_with_reaps_the_child(fake):
    _, env = fake
    with pytest.raises(RuntimeError):
        with qq.Queue(env) as q:
            q.put(b"x")
            raise RuntimeError("client went away")
    assert q.closed
    with pytest.raises(ChildProcessError):
        os.waitpid(q.pid, os.WNOHANG)


def test_nul_in_address_is_refused(fake):
    _, env = fake
    with qq.Queue(env) as q:
        with pytest.raises(ValueError):
            q.sender(b"a\0b")
        q.fail()
        assert q.close().startswith("Z")
