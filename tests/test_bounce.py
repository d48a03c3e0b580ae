"""QSBMF bounce texts, byte for byte as qmail-send writes them."""

from engine import bounce
from engine.control import ConstMap

VDOMS = ConstMap(["virt.example:v1", ".sub.example:v2", "plain.example:"], values=True)
S = bounce.Settings(bouncefrom=b"MAILER-DAEMON", bouncehost=b"mx.example.org",
                    doublebounce=b"postmaster@mx.example.org")
WHEN = 1_800_000_000  # 15 Jan 2027 08:00:00 UTC


def test_failure_record_marks_blank_lines_and_strips_prepend():
    rec = bounce.failure_record(b"v1-joe@virt.example", b"Sorry.\n\nReally.", VDOMS)
    assert rec == b"<joe@virt.example>:\nSorry.\n/Really.\n\n"


def test_failure_record_suffix_vdom_and_newline_in_recipient():
    assert bounce.failure_record(b"v2-a@x.sub.example", b"no", VDOMS) == b"<a@x.sub.example>:\nno\n\n"
    assert bounce.failure_record(b"a\nb@remote.example", b"", VDOMS) == b"<a_b@remote.example>:\n\n"


def test_prepend_kept_when_it_does_not_match():
    assert bounce.strip_vdom_prepend(b"zz-joe@virt.example", VDOMS) == b"zz-joe@virt.example"
    assert bounce.strip_vdom_prepend(b"joe@plain.example", VDOMS) == b"joe@plain.example"


def test_bounce_text_exact():
    records = bounce.failure_record(b"joe@remote.example", b"Remote host said: 550 no such user", VDOMS)
    message = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2027 00:00:00 -0000\nSubject: hi\n\nbody\n"
    sender, rcpt, text = bounce.compose(b"alice@example.org", records, message, S, when=WHEN)
    assert (sender, rcpt) == (b"", b"alice@example.org")
    assert text == (
        b"Date: 15 Jan 2027 08:00:00 -0000\n"
        b"From: MAILER-DAEMON@mx.example.org\n"
        b"To: alice@example.org\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.example.org.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
        b"\n"
        b"<joe@remote.example>:\n"
        b"Remote host said: 550 no such user\n"
        b"\n"
        b"--- Below this line is a copy of the message.\n"
        b"\n"
        b"Return-Path: <alice@example.org>\n" + message)


def test_custom_text_and_maxbytes():
    s = bounce.Settings(bouncehost=b"h", custom=b"Call the helpdesk.", maxbytes=10)
    _, _, text = bounce.compose(b"a@b", b"<x@y>:\nno\n\n", b"0123456789abcdef", s, when=WHEN)
    assert b"Sorry it didn't work out.\nCall the helpdesk.\n\n<x@y>:" in text
    assert text.endswith(b"Return-Path: <a@b>\n0123456789\n\n--- End of message stripped.\n")
    _, _, short = bounce.compose(b"a@b", b"", b"012345678", s, when=WHEN)
    assert short.endswith(b"Return-Path: <a@b>\n012345678")


def test_double_and_triple_bounce():
    sender, rcpt, text = bounce.compose(b"", b"<a@b>:\nx\n\n", b"m", S, when=WHEN)
    assert (sender, rcpt) == (b"#@[]", b"postmaster@mx.example.org")
    assert b"but the bounce bounced!\n\n<a@b>:" in text
    assert b"--- Below this line is the original bounce.\n\nReturn-Path: <>\nm" in text
    assert bounce.compose(b"#@[]", b"", b"m", S) is None
    assert bounce.is_triple_bounce(b"#@[]")


def test_verp_owner_sender():
    assert bounce.owner_sender(b"list-owner-@lists.example-@[]", b"joe@x.org") == \
        b"list-owner-joe=x.org@lists.example"
    assert bounce.owner_sender(b"plain@x", b"joe@x.org") == b"plain@x"
    assert bounce.bounce_sender_of(b"list-owner-@lists.example-@[]") == b"list-owner-@lists.example"


def test_quoted_sender():
    _, rcpt, text = bounce.compose(b'a b@x.org', b"", b"", S, when=WHEN)
    assert b'To: "a b"@x.org\n' in text and b'Return-Path: <"a b"@x.org>\n' in text
