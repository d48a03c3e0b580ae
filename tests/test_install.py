"""make setup / make check: engine.install and engine.instcheck as programs."""

import os
import pwd
import stat
import subprocess
import sys

import pytest

from engine import conf


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)


def test_single_user_setup_is_complete(tmp_path):
    home = str(tmp_path / "qm")
    r = run("engine.install", "--single-user", "--me", "mx.example.net", home)
    assert r.returncode == 0, r.stderr
    assert run("engine.instcheck", home).returncode == 0
    with open(os.path.join(home, "control", "me")) as f:
        assert f.read() == "mx.example.net\n"
    queue_prog = os.path.join(home, "bin", "qmail-queue")
    assert os.path.islink(queue_prog) and os.access(queue_prog, os.X_OK)
    assert stat.S_IMODE(os.stat(os.path.join(home, "queue", "todo", "22")).st_mode) == 0o750
    assert stat.S_ISFIFO(os.stat(os.path.join(home, "queue", "lock", "trigger")).st_mode)
    assert os.path.getsize(os.path.join(home, "queue", "lock", "tcpto")) == 1024
    assert not os.path.exists(os.path.join(home, "queue", "todo", str(conf.SPLIT)))


def test_setup_keeps_existing_control_files(tmp_path):
    home = str(tmp_path / "qm")
    os.makedirs(os.path.join(home, "control"))
    with open(os.path.join(home, "control", "locals"), "w") as f:
        f.write("only.example\n")
    assert run("engine.install", "--single-user", "--me", "a.example", home).returncode == 0
    with open(os.path.join(home, "control", "locals")) as f:
        assert f.read() == "only.example\n"


def test_instcheck_names_each_problem(tmp_path):
    home = str(tmp_path / "qm")
    assert run("engine.install", "--single-user", home).returncode == 0
    os.chmod(os.path.join(home, "queue", "todo"), 0o777)
    os.rmdir(os.path.join(home, "queue", "info", "7"))
    os.unlink(os.path.join(home, "bin", "qmail-inject"))
    r = run("engine.instcheck", home)
    assert r.returncode == 111
    assert f"{home}/queue/todo: mode 777, want 750" in r.stderr
    assert f"{home}/queue/info/7: missing" in r.stderr
    assert f"{home}/bin/qmail-inject: missing" in r.stderr


def test_instcheck_without_queue_is_fatal(tmp_path):
    r = run("engine.instcheck", str(tmp_path))
    assert r.returncode == 111
    assert "queue: missing; run make setup" in r.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="creating qmail's users needs root (CI runs as root)")
def test_root_setup_uses_qmail_users(tmp_path):
    home = str(tmp_path / "qm")
    os.chmod(tmp_path, 0o755)
    r = run("engine.install", "--me", "mx.example.net", home)
    assert r.returncode == 0, r.stderr
    for user in conf.USERS:
        pwd.getpwnam(user)
    uid = lambda p: os.stat(os.path.join(home, p)).st_uid  # noqa: E731
    assert uid("queue/mess/3") == pwd.getpwnam("qmailq").pw_uid
    assert uid("queue/info/3") == pwd.getpwnam("qmails").pw_uid
    assert uid("queue/lock/tcpto") == pwd.getpwnam("qmailr").pw_uid
    assert uid("alias") == pwd.getpwnam("alias").pw_uid
    assert stat.S_IMODE(os.stat(os.path.join(home, "alias")).st_mode) == 0o2755
    assert run("engine.instcheck", home).returncode == 0
    queue_prog = os.stat(os.path.join(home, "bin", "qmail-queue"))
    assert (queue_prog.st_uid, stat.S_IMODE(queue_prog.st_mode)) == (pwd.getpwnam("qmailq").pw_uid, 0o4711)
    os.chmod(os.path.join(home, "bin", "qmail-queue"), 0o755)
    r = run("engine.instcheck", home)
    assert r.returncode == 111 and "must be a setuid qmailq program, mode 4711" in r.stderr
