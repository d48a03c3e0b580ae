"""Queue scanning kernel (compiled and pure), qmail-qread and qmail-qstat."""

import os
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from engine import hier, queue
from engine import _queuescan_py as pure
from support.twins import both


@both("queuescan")
def test_scan_split_and_dir(k, qmailhome):
    q = os.path.join(qmailhome, "queue")
    ids = {queue.enqueue(b"x\n", b"a@b", [b"c@d"], home=qmailhome) for _ in range(30)}
    assert set(k.scan_split(q, "todo")) == ids == set(k.scan_split(q, "mess"))
    assert k.scan_split(q, "info") == []
    open(os.path.join(q, "todo", "3", "notanumber"), "w").close()
    open(os.path.join(q, "todo", "3", "12a"), "w").close()
    assert set(k.scan_split(q, "todo")) == ids


@both("queuescan")
def test_missing_directory_is_an_oserror(k, tmp_path):
    try:
        k.scan_dir(str(tmp_path / "nope"))
    except OSError:
        return
    raise AssertionError("no error for a missing directory")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ab.", min_size=1, max_size=21).filter(lambda n: n not in (".", "..")),
                max_size=30, unique=True))
def test_twins_agree_on_names(tmp_path_factory, names):
    from engine import compiled
    d = tmp_path_factory.mktemp("scan")
    for n in names:
        open(d / n, "w").close()
    c = compiled.variants("queuescan").get("c", pure)
    assert sorted(c.scan_dir(str(d))) == sorted(pure.scan_dir(str(d)))


def run(module, home):
    return subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                          env={**os.environ, "QMAILHOME": home})


def test_qstat_and_qread(qmailhome):
    q = os.path.join(qmailhome, "queue")
    msgid = queue.enqueue(b"Subject: x\n\nhello\n", b"sender@example.org", [b"r@example.net"], home=qmailhome)
    assert run("engine.qstat", qmailhome).stdout == \
        "messages in queue: 1\nmessages in queue but not yet preprocessed: 1\n"
    with open(hier.queue_file(q, "info", msgid), "wb") as f:
        f.write(b"Fsender@example.org\0")
    os.utime(hier.queue_file(q, "info", msgid), (1800000000, 1800000000))
    with open(hier.queue_file(q, "remote", msgid), "wb") as f:
        f.write(b"Tr@example.net\0Ddone@example.net\0")
    with open(hier.queue_file(q, "bounce", msgid), "wb") as f:
        f.write(b"<x@y>:\nno\n\n")
    size = os.path.getsize(hier.queue_file(q, "mess", msgid))
    assert run("engine.qread", qmailhome).stdout == (
        f"15 Jan 2027 08:00:00 GMT  #{msgid}  {size}  <sender@example.org>  bouncing\n"
        "\tremote\tr@example.net\n  done\tremote\tdone@example.net\n")
