"""qbiff (engine/qbiff.py): the real program writing to a real pseudo-terminal that a utmp file of the
test's own ($QBIFF_UTMP) lists as the user's login."""

import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import tty

import pytest

QBIFF = os.path.join(os.path.dirname(sys.executable), "qbiff")
UTMP = struct.Struct("=h2xi32s4s32s256s2hi2i4i20s")  # glibc's struct utmp, written independently here
USER_PROCESS = 7
NOBODY = 65534
MESSAGE = b"From: Mary <mary@remote.test>\nSubject: lunch\tplans\n\nSee you at noon.\n"
ENV = {"USER": "joe", "SENDER": "mary@remote.test", "LOCAL": "joe-biff"}


def utmp_record(user, line):
    return UTMP.pack(USER_PROCESS, 4242, line.encode(), b"ts/0", user.encode(), b"", 0, 0, 0, 0, 0,
                     0, 0, 0, 0, b"")


@pytest.fixture
def pty(tmp_path):
    """(master fd, line such as 'pts/3', utmp path): a raw pty with biff on, logged in as joe."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no output processing: the bytes read are the bytes written
    os.fchmod(slave, 0o720)  # biff y: the owner's execute bit
    line = os.ttyname(slave).removeprefix("/dev/")
    utmp = tmp_path / "utmp"
    utmp.write_bytes(utmp_record("mary", "pts/999") + utmp_record("joe", line))
    yield master, slave, line, utmp
    os.close(master)
    os.close(slave)


def run(utmp, message=MESSAGE, user=None, **env):
    full = {**os.environ, **ENV, "QBIFF_UTMP": str(utmp), **env}
    p = subprocess.run([QBIFF], input=message, env=full, capture_output=True, timeout=30, user=user)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")  # qbiff never fails a delivery


def screen(master, wait=0.5):
    """Everything written to the terminal so far."""
    out = b""
    while select.select([master], [], [], wait)[0]:
        out += os.read(master, 4096)
        wait = 0.1
    return out


def test_announces_recipient_sender_and_subject_on_the_users_terminal(pty):
    master, _, _, utmp = pty
    run(utmp)
    assert screen(master) == (b"\r\n\a*** TO <joe-biff> FROM <mary@remote.test>\r\n"
                              b"    lunch/plans//See you at noon./\r\n")


def test_text_is_cut_at_78_characters_and_controls_replaced(pty):
    master, _, _, utmp = pty
    run(utmp, b"Subject: " + b"x" * 100 + b"\n\nbody\n", SENDER="m\x01ry@remote.test")
    out = screen(master)
    assert out == b"\r\n\a*** TO <joe-biff> FROM <m_ry@remote.test>\r\n    " + b"x" * 74 + b"\r\n"


def test_no_subject_shows_the_body(pty):
    master, _, _, utmp = pty
    run(utmp, b"From: a@b.test\n\nfirst line\n")
    assert screen(master).endswith(b"\r\n    /first line/\r\n")


def test_biff_off_means_silence(pty):
    master, slave, _, utmp = pty
    os.fchmod(slave, 0o620)
    run(utmp)
    assert screen(master, 0.3) == b""


def test_other_users_terminal_is_left_alone(pty):
    master, _, _, utmp = pty
    run(utmp, USER="mary")  # mary's utmp line is pts/999, and joe's pty is not hers
    assert screen(master, 0.3) == b""


def test_terminal_must_belong_to_the_user_qbiff_runs_as(pty):
    master, slave, _, utmp = pty
    with tempfile.TemporaryDirectory() as d:  # a utmp user nobody can read, like the real one
        os.chmod(d, 0o755)
        shared = os.path.join(d, "utmp")
        shutil.copy(utmp, shared)
        os.chmod(shared, 0o644)
        os.fchmod(slave, 0o722)  # anyone may write, but the terminal is root's
        run(shared, user=NOBODY)
        assert screen(master, 0.3) == b""
        os.fchown(slave, NOBODY, -1)  # now it is nobody's own terminal
        run(shared, user=NOBODY)
        assert screen(master).startswith(b"\r\n\a*** TO <joe-biff> FROM <mary@remote.test>\r\n")


@pytest.mark.parametrize("mangle", [lambda line: "/dev/" + line, lambda line: line.replace("/", "/./")])
def test_lines_that_leave_dev_are_skipped(pty, mangle):
    master, _, line, utmp = pty
    utmp.write_bytes(utmp_record("joe", mangle(line)))
    run(utmp)
    assert screen(master, 0.3) == b""


@pytest.mark.parametrize("missing", ["USER", "SENDER", "LOCAL"])
def test_missing_variables_mean_silence(pty, missing):
    master, _, _, utmp = pty
    env = {**os.environ, **ENV, "QBIFF_UTMP": str(utmp)}
    del env[missing]
    p = subprocess.run([QBIFF], input=MESSAGE, env=env, capture_output=True, timeout=30)
    assert p.returncode == 0 and screen(master, 0.3) == b""


def test_no_utmp_file_exits_0(tmp_path):
    run(tmp_path / "missing")


def test_every_login_of_the_user_is_told(pty, tmp_path):
    master, _, line, utmp = pty
    master2, slave2 = os.openpty()
    try:
        tty.setraw(slave2)
        os.fchmod(slave2, 0o720)
        utmp.write_bytes(utmp_record("joe", line) + utmp_record("joe", os.ttyname(slave2).removeprefix("/dev/")))
        run(utmp)
        assert b"FROM <mary@remote.test>" in screen(master) and b"FROM <mary@remote.test>" in screen(master2)
    finally:
        os.close(master2)
        os.close(slave2)
