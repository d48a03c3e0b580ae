"""qmail-queue, the program (a real subprocess, fds 0 and 1 wired as qmail does) and the in-process enqueue:
layout, Received line, every exit code and its message, BIGBROTHER, trigger, disk full, permissions, crashes."""

import io
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from engine import clean, compiled, hier, install, queue
from support.qmailhome import make_qmailhome

QUEUE_PROG = [sys.executable, "-m", "engine.queue"]
MESSAGE = b"Subject: t\n\nbody\n"
ENVELOPE = b"Fa@b.test\0Tc@d.test\0\0"
RECEIVED = re.compile(rb"Received: \(qmail (\d+) invoked (by alias|from network|for bounce|by uid \d+)\); "
                      rb"\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d -0000\n")
_scan = compiled.load("queuescan")


# --- helpers --------------------------------------------------------------------------

def _feed(fd, data):
    try:
        os.write(fd, data) if len(data) < 65536 else _write_slowly(fd, data)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _write_slowly(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:65536]):]


def as_user(name):
    pw = pwd.getpwnam(name)

    def become():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return become


def run_queue(home, message=MESSAGE, envelope=ENVELOPE, *, stdin=None, stdout=None, preexec=None,
              close_envelope=True):
    """Run qmail-queue with the message on fd 0 and the envelope on fd 1; (exit code, stderr).

    stdin/stdout replace the pipes (e.g. a directory, to make reads fail);
    close_envelope=False keeps the envelope pipe open, as a writer that never closes it.
    """
    env_r = env_w = None
    if stdout is None:
        env_r, env_w = os.pipe()
        writer = threading.Thread(target=_feed if close_envelope else os.write, args=(env_w, envelope))
        writer.start()
    try:
        p = subprocess.run(QUEUE_PROG, input=None if stdin is not None else message, stdin=stdin,
                           stdout=stdout if stdout is not None else env_r, stderr=subprocess.PIPE,
                           env={**os.environ, "QMAILHOME": home}, preexec_fn=preexec, timeout=60)
    finally:
        if env_r is not None:
            os.close(env_r)
            writer.join()
            if not close_envelope:
                os.close(env_w)
    return p.returncode, p.stderr.decode()


def qdir(home):
    return os.path.join(home, "queue")


def todo_ids(home):
    return _scan.scan_todo(qdir(home))


def files_of(home, msgid):
    return {k for k in ("mess", "intd", "todo") if os.path.exists(hier.queue_file(qdir(home), k, msgid))}


def assert_queue_empty(home):
    """No trace of a message: nothing in pid/, mess/, intd/, todo/."""
    q = qdir(home)
    assert os.listdir(os.path.join(q, "pid")) == []
    for kind in ("mess", "intd", "todo"):
        assert _scan.scan_split(q, kind) == [], f"{kind}/ is not empty"


def read_queued(home, msgid):
    with open(hier.queue_file(qdir(home), "mess", msgid), "rb") as f:
        mess = f.read()
    with open(hier.queue_file(qdir(home), "todo", msgid), "rb") as f:
        todo = f.read()
    return mess, todo


def envelope_of(todo):
    """todo/ records -> (uid, pid, sender, [recipients]); asserts qmail's record order."""
    recs = _scan.parse_records(todo)
    assert todo.endswith(b"\0") and recs[0][:1] == b"u" and recs[1][:1] == b"p" and recs[2][:1] == b"F"
    assert all(r[:1] == b"T" for r in recs[3:])
    return int(recs[0][1:]), int(recs[1][1:]), recs[2][1:], [r[1:] for r in recs[3:]]


# --- the program: a message queued ----------------------------------------------------

def test_program_queues_message_and_envelope(qmailhome):
    code, err = run_queue(qmailhome, envelope=b"Fa@b.test\0Tc@d.test\0Te@f.test\0\0")
    assert (code, err) == (0, "")
    [msgid] = todo_ids(qmailhome)
    assert files_of(qmailhome, msgid) == {"mess", "todo"}  # intd was renamed to todo
    assert os.stat(hier.queue_file(qdir(qmailhome), "mess", msgid)).st_ino == msgid
    assert msgid % 23 == int(os.path.basename(os.path.dirname(hier.queue_file(qdir(qmailhome), "todo", msgid))))
    mess, todo = read_queued(qmailhome, msgid)
    m = RECEIVED.match(mess)
    assert m and m.group(2) == b"by uid %d" % os.getuid()
    assert mess[m.end():] == MESSAGE
    pid = int(m.group(1))
    assert todo == b"u%d\0p%d\0Fa@b.test\0Tc@d.test\0Te@f.test\0" % (os.getuid(), pid)
    assert os.listdir(os.path.join(qdir(qmailhome), "pid")) == []


def test_queue_files_are_0644_whatever_the_callers_umask(qmailhome):
    code, _ = run_queue(qmailhome, preexec=lambda: os.umask(0o077))
    assert code == 0
    [msgid] = todo_ids(qmailhome)
    for kind in ("mess", "todo"):
        assert os.stat(hier.queue_file(qdir(qmailhome), kind, msgid)).st_mode & 0o777 == 0o644


def test_empty_sender_no_recipients_and_long_but_legal_addresses(qmailhome):
    longest = b"x" * 1001 + b"@"  # 1002 bytes: the longest address qmail-queue takes
    assert run_queue(qmailhome, envelope=b"F\0\0")[0] == 0
    assert run_queue(qmailhome, envelope=b"F" + longest + b"\0T" + longest + b"\0\0")[0] == 0
    envelopes = sorted((envelope_of(read_queued(qmailhome, i)[1])[2:] for i in todo_ids(qmailhome)), key=len)
    assert (b"", []) in envelopes and (longest, [longest]) in envelopes


def test_envelope_is_read_up_to_its_final_nul_only(qmailhome):
    """The writer need not close fd 1, and bytes after the final NUL are not read as recipients."""
    code, err = run_queue(qmailhome, envelope=b"Fa@b\0Tc@d\0\0Tjunk\0", close_envelope=False)
    assert (code, err) == (0, "")
    [msgid] = todo_ids(qmailhome)
    assert envelope_of(read_queued(qmailhome, msgid)[1])[3] == [b"c@d"]


def test_program_pulls_the_trigger(qmailhome):
    fifo = os.open(os.path.join(qdir(qmailhome), "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert run_queue(qmailhome)[0] == 0
        [msgid] = todo_ids(qmailhome)
        assert os.read(fifo, 30) == b"%d\0" % msgid, "the new message's id, so qmail-todo need not scan"
    finally:
        os.close(fifo)


def test_program_as_another_user_says_by_uid(nobody_home):
    code, err = run_queue(nobody_home, preexec=as_user("nobody"))
    assert (code, err) == (0, "")
    [msgid] = todo_ids(nobody_home)
    mess, todo = read_queued(nobody_home, msgid)
    uid = pwd.getpwnam("nobody").pw_uid
    assert b" invoked by uid %d); " % uid in mess.split(b"\n", 1)[0]
    assert envelope_of(todo)[0] == uid


# --- the program: every failure -------------------------------------------------------

@pytest.mark.parametrize("envelope,code,words", [
    (b"Xa@b\0Tc@d\0\0", 91, "envelope format error: envelope on fd 1 does not start with F"),
    (b"Fa@b\0Xc@d\0\0", 91, "envelope format error: recipient record 1 starts with b'X', not T"),
    (b"Fa@b\0Tc@d\0Te@f\0", 54, "read error: envelope on fd 1 ended before its final NUL"),
    (b"Fa@b\0Tc@d", 54, "read error: envelope on fd 1 ended before its final NUL"),
    (b"", 54, "read error: envelope on fd 1 ended before its final NUL"),
    (b"F" + b"a" * 1003 + b"\0Tc@d\0\0", 11, "envelope address too long: sender reaches 1003 bytes"),
    (b"F" + b"a" * 1003, 11, "envelope address too long: sender reaches 1003 bytes"),
    (b"Fa@b\0Tc@d\0T" + b"c" * 5000 + b"\0\0", 11, "envelope address too long: recipient 2 reaches 1003 bytes"),
])
def test_bad_envelopes_leave_nothing(qmailhome, envelope, code, words):
    got, err = run_queue(qmailhome, envelope=envelope)
    assert (got, err) == (code, f"qmail-queue: {words}\n")
    assert_queue_empty(qmailhome)


def test_read_error_on_fd0(qmailhome, tmp_path):
    """fd 0 open for writing only: read() fails (EBADF). (A directory on fd 0 cannot be tried: the Python
    interpreter itself refuses to start with one, exit 1, before qmail-queue runs.)"""
    fd = os.open(tmp_path / "writeonly", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        code, err = run_queue(qmailhome, stdin=fd)
    finally:
        os.close(fd)
    assert (code, err) == (54, "qmail-queue: read error: message on fd 0: Bad file descriptor\n")
    assert_queue_empty(qmailhome)


def test_read_error_on_fd1(qmailhome, tmp_path):
    fd = os.open(tmp_path / "writeonly", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        code, err = run_queue(qmailhome, stdout=fd)
    finally:
        os.close(fd)
    assert (code, err) == (54, "qmail-queue: read error: envelope on fd 1: Bad file descriptor\n")
    assert_queue_empty(qmailhome)


def test_missing_home_is_61(tmp_path):
    code, err = run_queue(str(tmp_path / "nowhere"))
    assert (code, err) == (61, f"qmail-queue: trouble with the qmail home: {tmp_path}/nowhere: "
                               "No such file or directory\n")


def test_missing_queue_is_62(qmailhome):
    os.rename(qdir(qmailhome), qdir(qmailhome) + ".away")
    code, err = run_queue(qmailhome)
    assert (code, err) == (62, f"qmail-queue: trouble with the queue directory: {qdir(qmailhome)}: "
                               "No such file or directory\n")


def test_unreadable_bigbrother_is_55(qmailhome):
    os.mkdir(os.path.join(qmailhome, "control", "bigbrother"))
    code, err = run_queue(qmailhome)
    assert code == 55 and err.startswith("qmail-queue: unable to read control/bigbrother: ")
    assert err.count("\n") == 1
    assert_queue_empty(qmailhome)


@pytest.fixture
def nobody_home():
    """A single-user qmail home owned by nobody, in a directory nobody can reach."""
    if os.getuid() != 0:
        pytest.fail("the permission tests need root (CI runs as root)")
    base = tempfile.mkdtemp(prefix="pyqmail-queue-", dir="/tmp")
    os.chmod(base, 0o755)
    home = make_qmailhome(os.path.join(base, "qmail"))
    pw = pwd.getpwnam("nobody")
    for d, dirs, files in os.walk(home):
        for name in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)
    yield home
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("dirs,code,words", [
    (["queue"], 62, "trouble with the queue directory: {q}: Permission denied"),
    (["queue/pid"], 63, "trouble with queue/pid: {q}/pid/"),
    ([f"queue/mess/{i}" for i in range(23)], 64, "trouble with queue/mess: {q}/mess/"),
    ([f"queue/intd/{i}" for i in range(23)], 65, "trouble with queue/intd: {q}/intd/"),
    ([f"queue/todo/{i}" for i in range(23)], 66, "trouble with queue/todo: {q}/todo/"),
])
def test_queue_directories_without_permission(nobody_home, dirs, code, words):
    """Run as nobody (root ignores modes) with one part of the queue closed to writing: 62..66, nothing left."""
    for d in dirs:
        os.chmod(os.path.join(nobody_home, d), 0o500 if d != "queue" else 0o000)
    got, err = run_queue(nobody_home, preexec=as_user("nobody"))
    for d in dirs:
        os.chmod(os.path.join(nobody_home, d), 0o700)
    assert got == code, err
    assert err.startswith("qmail-queue: " + words.format(q=qdir(nobody_home))) and err.count("\n") == 1
    if code != 62:
        assert err.endswith(": Permission denied\n")
    assert_queue_empty(nobody_home)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KB tmpfs (root mounts it; CI runs as root), unmounted afterwards."""
    if os.getuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    yield make_qmailhome(str(mnt / "qmail"))
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_while_writing_the_message_is_53(tiny_fs):
    code, err = run_queue(tiny_fs, message=b"Subject: big\n\n" + b"x" * (1 << 20))
    assert code == 53
    assert re.fullmatch(r"qmail-queue: write error or disk full: .*/queue/mess/\d+/\d+: No space left on device\n", err)
    assert_queue_empty(tiny_fs)
    assert run_queue(tiny_fs)[0] == 0  # the space came back: the next message goes in


def test_disk_full_while_writing_the_envelope_is_53(tiny_fs):
    many = b"".join(b"T%06d@recipients.example.test\0" % i for i in range(20000))  # ~640 KB of envelope
    code, err = run_queue(tiny_fs, envelope=b"Fa@b\0" + many + b"\0")
    assert code == 53
    assert re.fullmatch(r"qmail-queue: write error or disk full: .*/queue/intd/\d+/\d+: No space left on device\n",
                        err)
    assert_queue_empty(tiny_fs)


def test_alarm_exits_52_without_cleanup(qmailhome):
    """qmail-queue's one-day alarm, fired early: exit 52 at once (qmail does no cleanup in the handler)."""
    env_r, env_w = os.pipe()
    p = subprocess.Popen(QUEUE_PROG, stdin=subprocess.PIPE, stdout=env_r, stderr=subprocess.PIPE,
                         env={**os.environ, "QMAILHOME": qmailhome})
    os.close(env_r)
    try:
        p.stdin.write(b"Subject: slow\n\n")
        p.stdin.flush()
        deadline = time.monotonic() + 30
        while not _scan.scan_split(qdir(qmailhome), "mess") and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until it has made its mess/ file and is reading fd 0
        p.send_signal(signal.SIGALRM)
        assert p.wait(timeout=30) == 52
    finally:
        os.close(env_w)
        p.stdin.close()
        p.stderr.close()
    assert todo_ids(qmailhome) == []


# --- BIGBROTHER -----------------------------------------------------------------------

def test_bigbrother_adds_copies_for_sender_and_recipients(qmailhome):
    with open(os.path.join(qmailhome, "control", "bigbrother"), "w") as f:
        f.write("# watched\nwatched@example.test:archive@example.test\n@spy.test:spy-copy@example.test\n"
                "exact@spy.test:exact-copy@example.test\nnocolon@example.test\n\n")
    envelope = (b"FWatched@Example.TEST\0Ta@spy.test\0Tb@other.test\0Texact@spy.test\0"
                b"Tnocolon@example.test\0\0")
    assert run_queue(qmailhome, envelope=envelope)[0] == 0
    [msgid] = todo_ids(qmailhome)
    assert envelope_of(read_queued(qmailhome, msgid)[1])[3] == [
        b"a@spy.test", b"b@other.test", b"exact@spy.test", b"nocolon@example.test",
        b"archive@example.test", b"spy-copy@example.test", b"exact-copy@example.test"]


def test_bigbrother_in_process(qmailhome):
    with open(os.path.join(qmailhome, "control", "bigbrother"), "w") as f:
        f.write("@example.test:copy@archive.test\n")
    msgid = queue.enqueue(b"x\n", b"", [b"r@example.test"], home=qmailhome)
    assert envelope_of(read_queued(qmailhome, msgid)[1])[3] == [b"r@example.test", b"copy@archive.test"]


# --- the in-process enqueue -----------------------------------------------------------

def test_enqueue_returns_the_id_of_a_complete_message(qmailhome):
    fifo = os.open(os.path.join(qdir(qmailhome), "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        msgid = queue.enqueue(b"Subject: x\n\nhi\n", b"s@x.test", [b"r@x.test", b"q@y.test"], home=qmailhome)
        assert os.read(fifo, 30) == b"%d\0" % msgid
    finally:
        os.close(fifo)
    assert todo_ids(qmailhome) == [msgid] and files_of(qmailhome, msgid) == {"mess", "todo"}
    mess, todo = read_queued(qmailhome, msgid)
    assert RECEIVED.match(mess) and mess.endswith(b"\nSubject: x\n\nhi\n")
    assert envelope_of(todo) == (os.getuid(), os.getpid(), b"s@x.test", [b"r@x.test", b"q@y.test"])


@pytest.mark.parametrize("message", [
    b"Subject: x\n\nbytes\n", bytearray(b"Subject: x\n\nbytearray\n"), memoryview(b"Subject: x\n\nview\n"),
    io.BytesIO(b"Subject: x\n\nfile\n" + b"z" * 200000),
])
def test_enqueue_takes_bytes_like_and_files(qmailhome, message):
    expect = message.getvalue() if isinstance(message, io.BytesIO) else bytes(message)
    msgid = queue.enqueue(message, b"s@x.test", [b"r@x.test"], home=qmailhome)
    assert read_queued(qmailhome, msgid)[0].split(b"\n", 1)[1] == expect


@pytest.mark.parametrize("received,words", [
    (queue.RECEIVED_NETWORK, b"from network"), (queue.RECEIVED_ALIAS, b"by alias"),
    (queue.RECEIVED_BOUNCE, b"for bounce"), (None, b"by uid %d" % os.getuid()),
])
def test_enqueue_received_line(qmailhome, received, words):
    msgid = queue.enqueue(b"x\n", b"", [b"r@x.test"], home=qmailhome, received=received)
    m = RECEIVED.match(read_queued(qmailhome, msgid)[0])
    assert m.group(2) == words and int(m.group(1)) == os.getpid()


def test_received_words_follow_qmails_users(tmp_path):
    """alias -> by alias, qmaild -> from network, qmails -> for bounce, anyone else -> by uid N."""
    if os.getuid() != 0:
        pytest.fail("creating qmail's users needs root (CI runs as root)")
    install.ensure_ids(str(tmp_path))
    for user, words in (("alias", "by alias"), ("qmaild", "from network"), ("qmails", "for bounce")):
        uid = pwd.getpwnam(user).pw_uid
        assert f" invoked {words}); ".encode() in queue.received_line(77, uid)
    assert queue.received_line(77, 65534, when=0) == \
        b"Received: (qmail 77 invoked by uid 65534); 1 Jan 1970 00:00:00 -0000\n"


@pytest.mark.parametrize("sender,recipients,code,detail", [
    (b"a@b", [b"c" * 2000], 11, "recipient 1 is 2000 bytes, the limit is 1002"),
    (b"a" * 1003, [b"c@d"], 11, "sender is 1003 bytes, the limit is 1002"),
    (b"a@b", [b"c@d", b"e\0f"], 91, "recipient 2 contains a NUL byte"),
])
def test_enqueue_errors_are_queue_errors_and_leave_nothing(qmailhome, sender, recipients, code, detail):
    with pytest.raises(queue.QueueError) as e:
        queue.enqueue(b"x", sender, recipients, home=qmailhome)
    assert (e.value.code, e.value.detail) == (code, detail)
    assert e.value.text == {11: "Denvelope address too long for qq (#5.1.3)", 91: "Zqq internal bug (#4.3.0)"}[code]
    assert_queue_empty(qmailhome)


def test_enqueue_file_read_error_is_54(qmailhome):
    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError(5, "Input/output error")
    with pytest.raises(queue.QueueError) as e:
        queue.enqueue(Broken(), b"a@b", [b"c@d"], home=qmailhome)
    assert (e.value.code, str(e.value)) == (54, "read error: message: Input/output error")
    assert_queue_empty(qmailhome)


def test_enqueue_from_threads_gives_distinct_ids(qmailhome):
    ids, errors = [], []

    def worker(n):
        try:
            for i in range(15):
                ids.append(queue.enqueue(b"Subject: %d-%d\n\n" % (n, i), b"a@b", [b"c@d"], home=qmailhome))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 90 and sorted(todo_ids(qmailhome)) == sorted(ids)
    subjects = {read_queued(qmailhome, i)[0].split(b"\n")[1] for i in ids}
    assert len(subjects) == 90


# --- crashes --------------------------------------------------------------------------

# (syscall, which call) at which strace kills qmail-queue, and the files it must leave (INTERNALS.md)
CRASH_POINTS = [
    ("rename", 1, {"pid"}),                  # pid file made, not yet mess/
    ("fsync", 1, {"mess"}),                  # message written, not yet synced
    ("fsync", 2, {"mess", "intd"}),          # envelope written, not yet synced
    ("rename", 2, {"mess", "intd"}),         # both synced, not yet in todo/
    ("fsync", 3, {"mess", "todo"}),          # queued; only the directory sync was missing
]


@pytest.mark.skipif(not shutil.which("strace"), reason="strace injects the crashes (Debian package strace)")
@pytest.mark.parametrize("syscall,nth,left", CRASH_POINTS, ids=[f"{s}{n}" for s, n, _ in CRASH_POINTS])
def test_crash_at_each_step_leaves_what_internals_says(qmailhome, syscall, nth, left):
    env_r, env_w = os.pipe()
    os.write(env_w, ENVELOPE)
    os.close(env_w)
    try:
        p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                            "-e", f"inject={syscall}:signal=KILL:when={nth}", *QUEUE_PROG],
                           input=MESSAGE, stdout=env_r, stderr=subprocess.PIPE,
                           env={**os.environ, "QMAILHOME": qmailhome}, timeout=60)
    finally:
        os.close(env_r)
    assert p.returncode in (-9, 137), p.stderr
    q = qdir(qmailhome)
    found = {k for k in ("mess", "intd", "todo") if _scan.scan_split(q, k)}
    pids = os.listdir(os.path.join(q, "pid"))
    assert found | ({"pid"} if pids else set()) == left
    if "todo" in left:
        [msgid] = todo_ids(qmailhome)
        mess, todo = read_queued(qmailhome, msgid)
        assert mess.endswith(MESSAGE) and envelope_of(todo)[2:] == (b"a@b.test", [b"c@d.test"])
    if pids:  # qmail-clean removes a dead qmail-queue's pid file after 36 hours
        clean.cleanup_pid(q, now=time.time() + 37 * 3600)
        assert os.listdir(os.path.join(q, "pid")) == []


def _run_and_kill(home, body, delay):
    """qmail-queue takes `body`, then is SIGKILLed after `delay` s (None: left to finish).

    Returns (exit code, seconds from having the whole message to the end).
    p.stdin.write() returns only once it is reading: the pipe holds 64 KB of the body.
    """
    env_r, env_w = os.pipe()
    p = subprocess.Popen(QUEUE_PROG, stdin=subprocess.PIPE, stdout=env_r, stderr=subprocess.DEVNULL,
                         env={**os.environ, "QMAILHOME": home})
    os.close(env_r)
    try:
        p.stdin.write(body)
        p.stdin.close()
        os.write(env_w, ENVELOPE)
    except BrokenPipeError:
        pass
    taken = time.monotonic()
    if delay is not None:
        time.sleep(delay)
        p.kill()
    code = p.wait()
    os.close(env_w)
    return code, time.monotonic() - taken


def test_sigkill_at_random_points_never_leaves_a_partial_message(qmailhome):
    """200 runs killed at random moments while queueing: every todo/ entry is a whole message with its
    whole envelope, and every run that exited 0 is in todo/."""
    rng = random.Random(4711)
    body = b"Subject: crash\n\n" + b"0123456789abcdef\n" * 12000 + b"END\n"  # ~200 KB: 3 pipefuls
    start = time.monotonic()
    calibration = [_run_and_kill(qmailhome, body, None) for _ in range(3)]
    assert [code for code, _ in calibration] == [0, 0, 0]
    # most of a run after the todo/ rename is the interpreter's exit: aim at its first half
    window = 0.5 * max(took for _, took in calibration)
    codes = [_run_and_kill(qmailhome, body, rng.uniform(0, window))[0] for _ in range(197)]
    queued = todo_ids(qmailhome)
    for msgid in queued:
        mess, todo = read_queued(qmailhome, msgid)
        assert RECEIVED.match(mess) and mess.endswith(body), f"todo/{msgid} has a partial message"
        assert envelope_of(todo)[2:] == (b"a@b.test", [b"c@d.test"])
    completed = 3 + codes.count(0)
    assert completed <= len(queued) and -signal.SIGKILL in codes
    print(f"200 runs, kills within {window * 1e3:.0f} ms, in {time.monotonic() - start:.1f} s: "
          f"{len(queued)} queued, {completed} exited 0")


# --- group commit (engine.queue.enqueue_batch, smtpservices.GroupCommit) -------------------

def test_a_batch_queues_every_message_and_refuses_only_the_bad_one(qmailhome):
    fifo = os.open(os.path.join(qdir(qmailhome), "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        items = [(b"Subject: %d\n\n%d\n" % (i, i), b"s@x.test", [b"r%d@x.test" % i]) for i in range(4)]
        items[2] = (b"Subject: bad\n\n", b"s@x.test", [b"r@" + b"x" * 1003])
        results = queue.enqueue_batch(items, home=qmailhome, received=queue.RECEIVED_NETWORK)
        announced = os.read(fifo, 200)
    finally:
        os.close(fifo)
    assert isinstance(results[2], queue.QueueError) and results[2].code == queue.EXIT_ADDR_TOO_LONG
    ids = [results[i] for i in (0, 1, 3)]
    assert all(isinstance(i, int) for i in ids)
    assert sorted(todo_ids(qmailhome)) == sorted(ids), "the refused message left nothing in todo/"
    assert announced == b"".join(b"%d\0" % i for i in ids)
    for n, msgid in zip((0, 1, 3), ids):
        mess, todo = read_queued(qmailhome, msgid)
        assert mess.split(b"\n", 1)[0].startswith(b"Received: (qmail ") and b" from network); " in mess
        assert mess.endswith(b"Subject: %d\n\n%d\n" % (n, n))
        assert envelope_of(todo)[2:] == (b"s@x.test", [b"r%d@x.test" % n])
        assert files_of(qmailhome, msgid) == {"mess", "todo"}
    assert os.listdir(os.path.join(qdir(qmailhome), "pid")) == []


STRACED_BATCH = """
import sys
from engine import queue
n = int(sys.argv[1])
items = [(b"Subject: x\\n\\nbody\\n", b"s@x.test", [b"r@x.test"])] * n
results = queue.enqueue_batch(items, home=sys.argv[2])
assert all(isinstance(r, int) for r in results), results
"""


STRACED_SESSIONS = """
import asyncio, sys
from engine import smtpservices
async def main(n):
    committer = smtpservices.GroupCommit(sys.argv[2])
    return await asyncio.gather(*(committer.enqueue(b"x\\n", b"s@x.test", [b"r@x.test"]) for _ in range(n)))
assert all(isinstance(r, int) for r in asyncio.run(main(int(sys.argv[1]))))
"""


def flush_calls(home, n, script=STRACED_BATCH):
    """(fsync + fdatasync calls, syncfs calls) made by enqueue_batch of n messages, counted by strace."""
    out = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o", "/dev/stdout",
                          sys.executable, "-c", script, str(n), home],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    calls = re.findall(r"\b(fsync|fdatasync|syncfs)\(", out.stdout)
    return sum(c != "syncfs" for c in calls), calls.count("syncfs")


@pytest.mark.skipif(not shutil.which("strace"), reason="strace counts the flushes (Debian package strace)")
def test_a_batch_shares_two_flushes_where_one_message_has_three(qmailhome):
    assert flush_calls(qmailhome, 1) == (3, 0), "alone: mess, intd and the todo/ subdirectory"
    assert flush_calls(qmailhome, 8) == (0, 2), "eight: one syncfs before the renames, one after"
    assert len(todo_ids(qmailhome)) == 9


@pytest.mark.skipif(not shutil.which("strace"), reason="strace counts the flushes (Debian package strace)")
def test_sessions_ending_data_during_a_flush_share_the_next(qmailhome):
    assert flush_calls(qmailhome, 10, STRACED_SESSIONS) == (3, 2), \
        "the first message is flushed alone, the nine that end DATA meanwhile together"


def test_group_commit_queues_concurrent_sessions_together(qmailhome):
    import asyncio

    from engine import smtpservices

    async def submit_all():
        committer = smtpservices.GroupCommit(qmailhome)
        return await asyncio.gather(*(committer.enqueue(b"Subject: %d\n\n" % i, b"s@x.test", [b"r@x.test"])
                                      for i in range(10)))

    ids = asyncio.run(submit_all())
    assert len(set(ids)) == 10 and sorted(ids) == sorted(todo_ids(qmailhome))
    for i, msgid in enumerate(ids):
        assert read_queued(qmailhome, msgid)[0].endswith(b"Subject: %d\n\n" % i), "each session gets its own id"
