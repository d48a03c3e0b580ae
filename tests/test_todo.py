"""qmail-todo's rewriting: envnoathost, percenthack, locals / locals.cdb, virtualdomains order."""

import os

from engine import cdb, queue, todo


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def test_rewrite_rules(qmailhome):
    write(qmailhome, "locals", "example.test\nLocal.Test\n")
    write(qmailhome, "envnoathost", "example.test\n")
    write(qmailhome, "percenthack", "hack.test\n")
    write(qmailhome, "virtualdomains", "joe@virt.test:special\nvirt.test:v\n.sub.test:s\nnone.test:\n:catchall\n")
    r = todo.Rewriter(qmailhome)
    assert r.rewrite(b"postmaster") == (b"L", b"postmaster@example.test")
    assert r.rewrite(b"joe@LOCAL.test") == (b"L", b"joe@LOCAL.test")
    assert r.rewrite(b"a%b%far.test@hack.test") == (b"L", b"catchall-a%b@far.test"), "hack, then the catch-all"
    assert r.rewrite(b"a%example.test@hack.test") == (b"L", b"a@example.test")
    assert r.rewrite(b"joe@virt.test") == (b"L", b"special-joe@virt.test")
    assert r.rewrite(b"ann@virt.test") == (b"L", b"v-ann@virt.test")
    assert r.rewrite(b"ann@x.sub.test") == (b"L", b"s-ann@x.sub.test")
    assert r.rewrite(b"ann@none.test") == (b"R", b"ann@none.test"), "empty prepend: not virtual"
    assert r.rewrite(b"ann@elsewhere.test") == (b"L", b"catchall-ann@elsewhere.test")


def test_locals_cdb_replaces_locals(qmailhome):
    write(qmailhome, "locals", "example.test\n")
    cdb.create(os.path.join(qmailhome, "control", "locals.cdb"), [(b"cdb.test", b"")])
    r = todo.Rewriter(qmailhome)
    assert r.rewrite(b"a@CDB.test") == (b"L", b"a@CDB.test")
    assert r.rewrite(b"a@example.test") == (b"R", b"a@example.test"), "locals is ignored once locals.cdb exists"


def test_parse_envelope():
    assert todo.parse_envelope(b"u0\0p12\0Fa@b\0Tc@d\0Te@f\0") == (b"0", b"12", b"a@b", [b"c@d", b"e@f"])
    for bad in (b"u0\0p1\0", b"u0\0Fa@b\0Xz\0", b"Fa@b"):
        try:
            todo.parse_envelope(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def fifo(home):
    path = os.path.join(home, "queue", "lock", "trigger")
    if not os.path.exists(path):
        os.mkfifo(path)
    return path


def test_trigger_carries_ids_and_anything_else_asks_for_a_scan(qmailhome):
    t = todo.Trigger(os.path.join(qmailhome, "queue"))
    try:
        assert t.drain() == ([], False), "nothing waiting"
        queue.pull_trigger(os.path.join(qmailhome, "queue"), 123)
        queue.pull_trigger(os.path.join(qmailhome, "queue"), 45)
        assert t.drain() == ([123, 45], False)
        queue.pull_trigger(os.path.join(qmailhome, "queue"))
        assert t.drain() == ([], True), "qmail's single byte: rescan"
        w = os.open(fifo(qmailhome), os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"7\0x\n\0" + b"8")
        assert t.drain() == ([7], True), "an administrator's echo: rescan"
        os.write(w, b"9\0")
        assert t.drain() == ([89], False), "a record cut by a read is completed by the next"
        os.close(w)
    finally:
        t.close()


def test_a_pipe_drained_full_means_ids_may_be_missing(qmailhome):
    q = os.path.join(qmailhome, "queue")
    t = todo.Trigger(q)
    try:
        n = 0
        while True:
            w = os.open(fifo(qmailhome), os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(w, b"%d\0" % (1000000 + n))
            except BlockingIOError:
                break
            finally:
                os.close(w)
            n += 1
        queue.pull_trigger(q, 5)  # the pipe is full: this id is lost, as a busy qmail-queue's would be
        ids, scan = t.drain()
        assert len(ids) == n and 5 not in ids
        assert scan, "a full pipe forces the scan that finds the lost id"
    finally:
        t.close()
