"""qreceipt (engine/qreceipt.py): the real program with a recording queue program, then from a .qmail
file through the real master."""

import os
import subprocess
import sys

import pytest

from support.fakequeue import read_envelope, read_message, record_queue
from support.master import Master
from support.users import delivered, make_users

from engine import queue

QRECEIPT = os.path.join(os.path.dirname(sys.executable), "qreceipt")
ME = "joe@nowhere.test"
MESSAGE = (b"Message-ID: <123@remote.test>\n"
           b"Notice-Requested-Upon-Delivery-To: Someone Else <x@y.test>,\n"
           b"  \"Joe\" <joe@nowhere.test> (that's me)\n"
           b"Subject: hi\n\nbody\n")


@pytest.fixture
def run(qmailhome, tmp_path):
    qq = record_queue(str(tmp_path))

    def start(message, *args, sender="mary@remote.test", **env):
        full = {**os.environ, "QMAILQUEUE": qq, **env}
        if sender is not None:
            full["SENDER"] = sender
        return subprocess.run([QRECEIPT, *args], input=message, env=full, capture_output=True, timeout=30)
    return start


def test_sends_the_success_notice_to_the_envelope_sender(run, tmp_path):
    p = run(MESSAGE, ME)
    assert (p.returncode, p.stderr) == (0, b"")
    assert read_envelope(tmp_path) == (b"", [b"mary@remote.test"])
    assert read_message(tmp_path) == (
        b"From: DELIVERY NOTICE SYSTEM <mary@remote.test>\n"
        b"To: <mary@remote.test>\n"
        b"Subject: success notice\n\n"
        b"Hi! This is the qreceipt program. Your message was delivered to the\n"
        b"following address: joe@nowhere.test. Thanks for asking.\n"
        b"Your Message-ID: <123@remote.test>\n")


def test_sender_local_part_is_quoted_and_no_message_id_means_no_last_line(run, tmp_path):
    p = run(b"Notice-Requested-Upon-Delivery-To: joe@nowhere.test\n\nbody\n", ME, sender="a b@remote.test")
    assert p.returncode == 0
    assert read_envelope(tmp_path) == (b"", [b"a b@remote.test"])
    message = read_message(tmp_path)
    assert message.startswith(b'From: DELIVERY NOTICE SYSTEM <"a b"@remote.test>\nTo: <"a b"@remote.test>\n')
    assert message.endswith(b"Thanks for asking.\n")


@pytest.mark.parametrize("message", [
    b"Subject: no request\n\nNotice-Requested-Upon-Delivery-To: joe@nowhere.test\n",
    b"Notice-Requested-Upon-Delivery-To: Joe@nowhere.test\n\n",  # the comparison is exact
    b"Notice-Requested-Upon-Delivery-To: joe@nowhere.test.other\n\n",
    b"",
])
def test_no_request_for_this_address_sends_nothing(run, tmp_path, message):
    p = run(message, ME)
    assert (p.returncode, p.stderr) == (0, b"")
    assert not os.path.exists(tmp_path / "envelope")


@pytest.mark.parametrize("sender", ["", "#@[]"])
def test_bounces_get_no_notice(run, tmp_path, sender):
    assert run(MESSAGE, ME, sender=sender).returncode == 0
    assert not os.path.exists(tmp_path / "envelope")


def test_request_in_a_group_and_header_ending_without_blank_line(run, tmp_path):
    p = run(b"Notice-Requested-Upon-Delivery-To: friends: a@b.test, joe@nowhere.test;\nnot a header line\n", ME)
    assert p.returncode == 0
    assert read_envelope(tmp_path) == (b"", [b"mary@remote.test"])


def test_usage(run, tmp_path):
    for args, kw in [((), {}), ((ME,), {"sender": None})]:
        p = run(MESSAGE, *args, **kw)
        assert (p.returncode, p.stderr) == (100, b"qreceipt: usage: qreceipt deliveryaddress\n")
    assert not os.path.exists(tmp_path / "envelope")


def test_unparsable_field_is_a_permanent_error(run, tmp_path):
    field = b"Notice-Requested-Upon-Delivery-To: joe@nowhere.test (unclosed\n"
    p = run(field + b"\nbody\n", ME)
    assert (p.returncode, p.stderr) == (100, b"qreceipt: fatal: unable to parse this: " + field)


@pytest.mark.parametrize("code, exit_code, text", [
    (31, 100, b"qreceipt: fatal: permanent qmail-queue error\n"),
    (53, 111, b"qreceipt: fatal: temporary qmail-queue error\n"),
])
def test_queue_errors(run, code, exit_code, text):
    p = run(MESSAGE, ME, FAKEQQ_EXIT=str(code))
    assert (p.returncode, p.stderr) == (exit_code, text)


def test_queue_program_that_cannot_run_is_temporary(run):
    p = run(MESSAGE, ME, QMAILQUEUE="/nonexistent/qmail-queue")
    assert (p.returncode, p.stderr) == (111, b"qreceipt: fatal: temporary qmail-queue error\n")


def test_from_a_dot_qmail_file_through_the_master(qmailhome, tmp_path):
    """joe's .qmail files his mail and runs qreceipt; mary (the sender) gets the notice."""
    users = make_users(qmailhome, str(tmp_path / "home"), ["joe", "mary"])
    joe_home = os.path.dirname(users["joe"])
    with open(os.path.join(joe_home, ".qmail"), "w") as f:
        f.write("./Maildir/\n|qreceipt joe@example.test\n")
    m = Master(qmailhome)
    try:
        m.start()
        queue.enqueue(b"Message-ID: <m1@example.test>\nNotice-Requested-Upon-Delivery-To: joe@example.test\n"
                      b"Subject: please confirm\n\nhello\n", b"mary@example.test", [b"joe@example.test"],
                      home=qmailhome)
        m.wait_for(lambda: delivered(users["mary"]) and delivered(users["joe"]), 60, "the notice")
    finally:
        m.stop()
    [notice] = delivered(users["mary"])
    text = open(notice, "rb").read()
    assert b"Return-Path: <>\n" in text and b"Subject: success notice\n" in text
    assert b"following address: joe@example.test. Thanks for asking.\nYour Message-ID: <m1@example.test>\n" in text
    assert b"Subject: please confirm" in open(delivered(users["joe"])[0], "rb").read()
