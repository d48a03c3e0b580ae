"""qmail-queue (program and in-process enqueue): layout, exit codes, BIGBROTHER, trigger, crash safety."""

import os
import pwd
import random
import signal
import subprocess
import sys
import time

import pytest

from engine import hier, queue, todo

QUEUE_PROG = [sys.executable, "-m", "engine.queue"]


def run_queue(home, message=b"Subject: t\n\nbody\n", envelope=b"Fa@b.test\0Tc@d.test\0\0", stdin=None,
              preexec=None):
    """Run qmail-queue with the message on fd 0 and the envelope on fd 1 (pipes)."""
    env_r, env_w = os.pipe()
    os.write(env_w, envelope)
    os.close(env_w)
    try:
        p = subprocess.run(QUEUE_PROG, input=None if stdin else message, stdin=stdin, stdout=env_r,
                           stderr=subprocess.PIPE, env={**os.environ, "QMAILHOME": home},
                           preexec_fn=preexec)
    finally:
        os.close(env_r)
    return p.returncode, p.stderr.decode()


def queued_ids(home):
    q = os.path.join(home, "queue", "todo")
    return [int(n) for sub in os.listdir(q) for n in os.listdir(os.path.join(q, sub))]


def files_of(home, msgid):
    q = os.path.join(home, "queue")
    return {k for k in ("mess", "intd", "todo") if os.path.exists(hier.queue_file(q, k, msgid))}


def test_program_queues_message_and_envelope(qmailhome):
    code, err = run_queue(qmailhome, envelope=b"Fa@b.test\0Tc@d.test\0Te@f.test\0\0")
    assert (code, err) == (0, "")
    [msgid] = queued_ids(qmailhome)
    q = os.path.join(qmailhome, "queue")
    assert files_of(qmailhome, msgid) == {"mess", "intd", "todo"}
    assert os.stat(hier.queue_file(q, "mess", msgid)).st_ino == msgid
    with open(hier.queue_file(q, "mess", msgid), "rb") as f:
        mess = f.read()
    assert mess.startswith(b"Received: (qmail ") and b" invoked by uid %d); " % os.getuid() in mess
    assert mess.endswith(b" -0000\nSubject: t\n\nbody\n")
    with open(hier.queue_file(q, "todo", msgid), "rb") as f:
        uid, pid, sender, rcpts = todo.parse_envelope(f.read())
    assert (uid, sender, rcpts) == (str(os.getuid()).encode(), b"a@b.test", [b"c@d.test", b"e@f.test"])
    assert not os.listdir(os.path.join(q, "pid"))


@pytest.mark.parametrize("envelope,code", [
    (b"Xa@b\0Tc@d\0\0", 91),
    (b"Fa@b\0Xc@d\0\0", 91),
    (b"Fa@b\0Tc@d\0", 54),
    (b"", 54),
    (b"F" + b"a" * 1003 + b"\0Tc@d\0\0", 11),
    (b"Fa@b\0T" + b"c" * 1003 + b"\0\0", 11),
])
def test_bad_envelopes_leave_nothing(qmailhome, envelope, code):
    got, err = run_queue(qmailhome, envelope=envelope)
    assert got == code and err.startswith("qmail-queue: ") and err.count("\n") == 1
    assert queued_ids(qmailhome) == []
    mess = os.path.join(qmailhome, "queue", "mess")
    assert not any(os.listdir(os.path.join(mess, s)) for s in os.listdir(mess))


def test_read_error_on_fd0(qmailhome, tmp_path):
    # fd 0 open for writing only: every read fails (EBADF)
    fd = os.open(str(tmp_path / "writeonly"), os.O_WRONLY | os.O_CREAT)
    try:
        code, err = run_queue(qmailhome, stdin=fd)
    finally:
        os.close(fd)
    assert code == 54 and "read error" in err
    assert queued_ids(qmailhome) == []


def test_missing_home(tmp_path):
    code, err = run_queue(str(tmp_path / "nowhere"))
    assert code == 61 and "home" in err


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the queue to another user")
def test_queue_without_permission(qmailhome):
    nobody = pwd.getpwnam("nobody")
    os.chmod(qmailhome, 0o755)
    parent = os.path.dirname(qmailhome)
    while parent != "/":
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
        parent = os.path.dirname(parent)

    def as_nobody():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    code, err = run_queue(qmailhome, preexec=as_nobody)
    assert code in (62, 63) and "queue" in err or "pid" in err
    assert queued_ids(qmailhome) == []


@pytest.fixture
def tiny_fs(tmp_path):
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_53_and_leaves_nothing(tiny_fs):
    from support.qmailhome import make_qmailhome
    home = make_qmailhome(os.path.join(tiny_fs, "qmail"))
    code, err = run_queue(home, message=b"Subject: big\n\n" + b"x" * (1 << 20))
    assert code == 53 and "disk full" in err
    assert queued_ids(home) == []
    mess = os.path.join(home, "queue", "mess")
    assert not any(os.listdir(os.path.join(mess, s)) for s in os.listdir(mess))


def test_bigbrother_adds_copies(qmailhome):
    with open(os.path.join(qmailhome, "control", "bigbrother"), "w") as f:
        f.write("watched@example.test:archive@example.test\n@spy.test:spy-copy@example.test\n")
    msgid = queue.enqueue(b"x\n", b"Watched@Example.test", [b"a@spy.test", b"b@other.test"], home=qmailhome)
    with open(hier.queue_file(os.path.join(qmailhome, "queue"), "todo", msgid), "rb") as f:
        rcpts = todo.parse_envelope(f.read())[3]
    assert rcpts == [b"a@spy.test", b"b@other.test", b"archive@example.test", b"spy-copy@example.test"]


def test_enqueue_pulls_the_trigger_and_names_network(qmailhome):
    fifo = os.open(os.path.join(qmailhome, "queue", "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        msgid = queue.enqueue(b"Subject: x\n\n", b"", [b"r@x.test"], home=qmailhome, invoked="network")
        assert os.read(fifo, 10) == b"\0"
    finally:
        os.close(fifo)
    with open(hier.queue_file(os.path.join(qmailhome, "queue"), "mess", msgid), "rb") as f:
        assert b" invoked from network); " in f.readline()


def test_enqueue_errors_are_queue_errors(qmailhome):
    with pytest.raises(queue.QueueError) as e:
        queue.enqueue(b"x", b"a@b", [b"c" * 2000], home=qmailhome)
    assert e.value.code == 11 and e.value.text == "Denvelope address too long for qq (#5.1.3)"
    assert queued_ids(qmailhome) == []


def test_sigkill_at_random_points_never_leaves_a_partial_message(qmailhome):
    """200 runs killed at random moments: every todo entry has its whole message and envelope."""
    rng = random.Random(4711)
    body = b"Subject: crash\n\n" + b"0123456789abcdef\n" * 4096 + b"END\n"
    env = {**os.environ, "QMAILHOME": qmailhome}
    for _ in range(200):
        env_r, env_w = os.pipe()
        p = subprocess.Popen(QUEUE_PROG, stdin=subprocess.PIPE, stdout=env_r, stderr=subprocess.DEVNULL, env=env)
        os.close(env_r)
        deadline = time.monotonic() + rng.uniform(0.0, 0.25)
        try:
            for i in range(0, len(body), 8192):
                p.stdin.write(body[i:i + 8192])
                p.stdin.flush()
                if time.monotonic() > deadline:
                    break
            else:
                p.stdin.close()
                os.write(env_w, b"Fa@b.test\0Tc@d.test\0\0")
        except BrokenPipeError:
            pass
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        p.wait()
        os.close(env_w)
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
    q = os.path.join(qmailhome, "queue")
    complete = 0
    for msgid in queued_ids(qmailhome):
        with open(hier.queue_file(q, "mess", msgid), "rb") as f:
            assert f.read().endswith(body), f"todo/{msgid} has a partial message"
        with open(hier.queue_file(q, "todo", msgid), "rb") as f:
            assert todo.parse_envelope(f.read())[2:] == (b"a@b.test", [b"c@d.test"])
        complete += 1
    print(f"{complete} of 200 killed runs had completed")
