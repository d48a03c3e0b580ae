"""engine.queued: the master's qmail-queue service, spoken to over its abstract Unix socket."""

import os
import socket
import threading

import pytest

from engine import qq, queue, queued


@pytest.fixture
def service(qmailhome):
    listener = queued.make_listener(qmailhome, 8)
    threading.Thread(target=queued.run_service, args=(qmailhome, listener), daemon=True).start()
    yield qmailhome
    listener.close()


def queued_files(home, kind):
    d = os.path.join(home, "queue", kind)
    return [os.path.join(d, sub, n) for sub in os.listdir(d) for n in os.listdir(os.path.join(d, sub))]


def test_message_is_queued_with_the_callers_uid_and_pid(service):
    assert queued.submit(b"Subject: s\n\nbody\n", b"a@x.test", [b"b@y.test", b"c@z.test"], service) == ""
    [mess] = queued_files(service, "mess")
    with open(mess, "rb") as f:
        text = f.read()
    assert text.startswith(b"Received: (qmail %d invoked by uid %d); " % (os.getpid(), os.getuid()))
    assert text.endswith(b"\nSubject: s\n\nbody\n")
    [todo] = queued_files(service, "todo")
    with open(todo, "rb") as f:
        assert f.read() == b"u%d\0p%d\0Fa@x.test\0Tb@y.test\0Tc@z.test\0" % (os.getuid(), os.getpid())


def raw(home, data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(queued.address(home))
    with s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return s.recv(1)


@pytest.mark.parametrize("data,code", [
    (b"5:hello" + b"Fa@x\0Tb@y\0\0", queue.EXIT_OK),
    (b"5:hello" + b"Xa@x\0\0", queue.EXIT_FORMAT),                 # envelope does not start with F
    (b"5:hello" + b"Fa@x\0Tb@y\0", queue.EXIT_READ),               # no final NUL
    (b"9:hello", queue.EXIT_READ),                                  # message shorter than said
    (b"x:hello", queue.EXIT_FORMAT),                                # no length
    (b"5:hello" + b"F" + b"a" * 1003 + b"\0\0", queue.EXIT_ADDR_TOO_LONG),
])
def test_protocol_answers_qmail_queue_exit_codes(service, data, code):
    assert raw(service, data) == bytes([code])
    assert len(queued_files(service, "todo")) == (code == queue.EXIT_OK)
    assert len(queued_files(service, "mess")) == (code == queue.EXIT_OK), "a refused message leaves nothing"


def test_refusal_text_is_qmail_queue_callers(service):
    assert queued.submit(b"x", b"a" * 1003, [b"b@y"], service) == qq.result_text(queue.EXIT_ADDR_TOO_LONG)


def test_without_the_service_the_program_queues(qmailhome):
    assert queued.connect(qmailhome) is None
    assert queued.submit(b"Subject: p\n\nx\n", b"a@x.test", [b"b@y.test"], qmailhome) == ""
    assert len(queued_files(qmailhome, "todo")) == 1


@pytest.mark.skipif(os.getuid() != 0, reason="an impostor needs another uid (CI runs as root)")
def test_an_impostor_listening_on_the_name_is_not_used(qmailhome):
    """A local user who binds the name first gets no mail: the client checks the server's uid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setuid(65534)
        s = queued.make_listener(qmailhome, 1)
        os.write(ready_w, b"x")
        s.accept()
        os._exit(0)
    try:
        os.read(ready_r, 1)
        assert queued.connect(qmailhome) is None
        assert queued.submit(b"Subject: i\n\nx\n", b"a@x.test", [b"b@y.test"], qmailhome) == ""
        assert len(queued_files(qmailhome, "todo")) == 1, "queued by the program instead"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
