"""qmail-secretary run as qmail-group runs it: a real subprocess, a real Maildir, a recording queue program."""

import os
import re
import subprocess
import time

import pytest

from support.fakequeue import read_envelope, read_message, record_queue

HOST = "lists.example"
POST = b"From: poster\nSubject: hi\n\nthe post\n"
HASH = re.compile(rb"[0-9a-f]{40}")


@pytest.fixture
def sec(qmailhome, tmp_path):
    """run(args, local=..., sender=..., message=..., **env) -> (rc, stdout, stderr, envelope or None, mail)."""
    maildir = tmp_path / "group"
    qqdir = tmp_path / "qq"
    qqdir.mkdir()

    def run(*args, local="list", ext="", sender="poster@x.example", message=POST, **extra):
        for f in ("message", "envelope"):
            if (qqdir / f).exists():
                (qqdir / f).unlink()
        env = {"PATH": f"{qmailhome}/bin:/usr/bin:/bin", "QMAILHOME": qmailhome, "SENDER": sender,
               "LOCAL": local + (f"-{ext}" if ext else ""), "EXT": ext, "HOST": HOST,
               "QMAILQUEUE": record_queue(qqdir), **extra}
        msg = tmp_path / "in"
        msg.write_bytes(message)
        with open(msg, "rb") as stdin:
            p = subprocess.run([f"{qmailhome}/bin/qmail-secretary", *args], stdin=stdin, env=env,
                               capture_output=True, timeout=30)
        queued = (qqdir / "envelope").exists()
        return (p.returncode, p.stdout, p.stderr.decode(), read_envelope(qqdir) if queued else None,
                read_message(qqdir) if queued else None)

    run.maildir = str(maildir)
    return run


def held(maildir, sub):
    return sorted(os.listdir(os.path.join(maildir, sub)))


def test_new_post_held_for_confirmation_and_request_sent(sec):
    rc, out, err, (sender, rcpts), mail = sec("-Zc", sec.maildir)
    assert (rc, out) == (99, b""), err
    assert re.fullmatch(r"qmail-secretary: info: qp \d+\n", err)
    [hashid] = held(sec.maildir, "new")
    assert HASH.fullmatch(hashid.encode()) and held(sec.maildir, "cur") == []
    with open(os.path.join(sec.maildir, "new", hashid), "rb") as f:
        assert f.read() == (b"Return-Path: <poster@x.example>\nDelivered-To: secretary for list@lists.example\n"
                            + POST)
    assert sender == f"list-reject-{hashid}@{HOST}".encode() and rcpts == [b"poster@x.example"]
    head, body = mail.split(b"\n\n", 1)
    assert head.startswith(b"Delivered-To: secretary for list@lists.example\nMessage-ID: <")
    for line in (b"To: poster@x.example", f"From: The mailgroup secretary <list-confirm-{hashid}@{HOST}>".encode(),
                 b"Subject: Message sender confirmation", b"MIME-Version: 1.0", b"Precedence: junk",
                 b"X-Mailer: qmail-secretary (by qmail-ldap)",
                 f'Content-Type: multipart/mixed; boundary="{hashid}"'.encode()):
        assert line + b"\n" in head + b"\n", line
    assert b"addressed to list@lists.example\n" in body and b"%LIST%" not in body
    assert b"Content-Type: message/rfc822\n\n" + POST in body
    assert body.endswith(f"--{hashid}--\n\n".encode())


def test_confirmation_releases_or_goes_to_the_moderators(sec):
    sec("-Zc", sec.maildir)
    [hashid] = held(sec.maildir, "new")
    rc, out, err, queued, _ = sec("-Zc", sec.maildir, ext=f"confirm-{hashid}", sender="poster@x.example",
                                  message=b"Subject: Re: confirm\n\nOK\n")
    assert (rc, queued) == (99, None), err
    assert out == b"K" + os.path.join(sec.maildir, "new", hashid).encode() + b"\0"
    rc, _, err, (sender, rcpts), mail = sec("-Zc", "-m", "mod1@x.example", "-m", "mod2@x.example", sec.maildir,
                                            ext=f"confirm-{hashid}", message=b"Subject: ok\n\nOK\n")
    assert rc == 99, err
    [moved] = held(sec.maildir, "cur")
    assert held(sec.maildir, "new") == [] and moved != hashid
    assert sender == f"list-bounce-{moved}@{HOST}".encode() and rcpts == [b"mod1@x.example", b"mod2@x.example"]
    assert b"To: The moderators of list@lists.example <list-moderators@lists.example>\n" in mail
    assert f"From: The mailgroup secretary <list-approve-{moved}@{HOST}>\n".encode() in mail
    assert b"Subject: Moderation request\n" in mail and b"Delivered-To: secretary for list@" in mail
    rc, out, err, _, _ = sec("-ZC", "-m", "mod1@x.example", sec.maildir, ext=f"approve-{moved}",
                             sender="mod1@x.example", message=b"Subject: ok\n\nOK\n")
    assert (rc, out) == (99, b"K" + os.path.join(sec.maildir, "cur", moved).encode() + b"\0"), err


def test_moderators_own_post_goes_to_that_moderator_only(sec):
    rc, _, err, (sender, rcpts), _ = sec("-ZC", "-m", "mod1@x.example", "-m", "mod2@x.example", sec.maildir,
                                         sender="mod2@x.example")
    assert rc == 99 and rcpts == [b"mod2@x.example"], err
    assert len(held(sec.maildir, "cur")) == 1
    rc, _, err, queued, _ = sec("-ZC", sec.maildir)
    assert (rc, err, queued) == (100, "qmail-secretary: fatal: no moderators found but needed.\n", None)


@pytest.mark.parametrize("sender, text", [
    ("", "I don't reply to bounce messages. (#5.7.2)"),
    ("#@[]", "I don't reply to bounce messages. (#5.7.2)"),
    ("nohost", "I don't reply to senders without host names. (#5.7.2)"),
])
def test_refuses_bounces_and_hostless_senders(sec, sender, text):
    rc, _, err, queued, _ = sec("-Zc", sec.maildir, sender=sender)
    assert (rc, err, queued) == (100, f"qmail-secretary: fatal: {text}\n", None)
    assert held(sec.maildir, "new") == []


@pytest.mark.parametrize("header, text", [
    (b"Mailing-List: contact x@y\n", "incoming message has Mailing-List. (#5.7.2)"),
    (b"Precedence: \tBulk\n", "incoming message has bad precedence. (#5.7.2)"),
    (b"precedence: junk\n", "incoming message has bad precedence. (#5.7.2)"),
    (b"Precedence: list\n", "incoming message has bad precedence. (#5.7.2)"),
    (b"Delivered-To: secretary for list@lists.example\n",
     "this message is looping: it already has my Delivered-To line. (#5.4.6)"),
])
def test_refuses_list_mail_bulk_mail_and_its_own_loop(sec, header, text):
    rc, _, err, queued, _ = sec("-Zc", sec.maildir, message=header + POST)
    assert (rc, err, queued) == (100, f"qmail-secretary: fatal: {text}\n", None)
    rc, _, _, _, _ = sec("-Zc", sec.maildir, message=POST + header)  # in the body: no matter
    assert rc == 99


@pytest.mark.parametrize("hashid", ["0" * 40, "../../../etc/passwd", "", "x" * 40])
def test_unknown_or_hostile_hash_releases_nothing(sec, hashid):
    rc, out, err, queued, _ = sec("-ZC", "-m", "m@x.example", sec.maildir, ext=f"approve-{hashid}".rstrip("-"))
    assert out == b"" and queued is None
    if hashid:
        assert (rc, err) == (99, "qmail-secretary: warn: Message no longer in repository.\n")
    else:
        assert (rc, err) == (100, "qmail-secretary: fatal: Approve message without id.\n")


def test_reject_bounce_moderators_and_unknown_actions(sec):
    sec("-Zc", sec.maildir)
    [hashid] = held(sec.maildir, "new")
    rc, _, err, _, _ = sec("-Zc", sec.maildir, ext=f"reject-{hashid}", sender="")
    assert (rc, err) == (99, "qmail-secretary: warn: confirmation to sender bounced.\n")
    assert held(sec.maildir, "new") == []
    rc, _, err, _, _ = sec("-Zc", sec.maildir, ext="bounce-" + "a" * 40, sender="")
    assert (rc, err) == (99, "qmail-secretary: warn: message to moderator bounced.\n")
    rc, _, err, _, _ = sec("-Zc", sec.maildir, ext="moderators")
    assert (rc, err) == (100, "qmail-secretary: fatal: I do not accept messages at this address (#5.1.1)\n")
    rc, out, err, queued, _ = sec("-Zc", sec.maildir, ext="subscribe")
    assert (rc, out, err, queued) == (0, b"", "", None)


def test_group_texts_with_header_magic_and_forced_precedence(sec):
    text = ("%HEADER%\nSubject: Please confirm your post to %LIST%\nPrecedence: bulk\nX-List: yes\n"
            "Received: denied\n\nConfirm for %list% please.\n")
    rc, _, err, _, mail = sec("-Zc", sec.maildir, CONFIRMMESS=text)
    assert rc == 99, err
    head, body = mail.split(b"\n\n", 1)
    assert b"Subject: Please confirm your post to %LIST%\n" in head + b"\n"
    assert b"X-List: yes\n" in head + b"\n" and b"Received: denied" not in mail
    assert b"Precedence: junk" in head and b"Precedence: bulk" not in head
    assert b"Confirm for list@lists.example please.\n" in body and b"%HEADER%" not in body
    rc, _, err, _, mail = sec("-ZC", "-m", "m@x.example", sec.maildir, APPROVEMESS="Approve for %LIST%?\n")
    assert rc == 99 and b"\nApprove for list@lists.example?\n" in mail, err


def test_moderators_from_file_and_usage(sec, tmp_path):
    modfile = tmp_path / "mods"
    modfile.write_text("# the moderators\nm1@x.example\n\nm2@x.example  \n")
    rc, _, err, (_, rcpts), _ = sec("-C", "-M", str(modfile), sec.maildir)
    assert rc == 99 and rcpts == [b"m1@x.example", b"m2@x.example"], err
    for args in ((), ("-q", sec.maildir), (sec.maildir, "extra")):
        rc, _, err, _, _ = sec(*args)
        assert rc == 100 and err.startswith("qmail-secretary: usage:"), args
    rc, _, err, _, _ = sec("-z", str(tmp_path / "nolist"), sec.maildir, "/bin/true")
    assert rc == 111 and err.startswith(f"qmail-secretary: fatal: unable to switch to {tmp_path}/nolist: ")
    rc, _, err, _, _ = sec("-z", str(tmp_path), sec.maildir)
    assert rc == 100 and err.startswith("qmail-secretary: usage:")


def test_ezmlm_mode_confirms_then_pipes_into_the_list_program(sec, tmp_path):
    listdir = tmp_path / "ezlist"
    (listdir / "text").mkdir(parents=True)
    for name, value in (("inlocal", "list"), ("inhost", HOST), ("outlocal", "list"), ("outhost", HOST)):
        (listdir / name).write_text(value + "\n")
    rc, _, err, _, _ = sec("-c", "-z", str(listdir), "held", "/bin/true")
    assert (rc, err) == (100, f"qmail-secretary: fatal: {listdir}/mailinglist does not exist\n")
    (listdir / "mailinglist").write_text(f"contact list-help@{HOST}; run by ezmlm\n")
    (listdir / "text" / "confirm").write_text("Say yes to %LIST%.\n")
    sink = tmp_path / "sink"
    prog = tmp_path / "fake-ezmlm-send"
    prog.write_text(f'#!/bin/sh\necho "$SENDER" > {sink}.sender\ncat > {sink}\n')
    prog.chmod(0o755)
    rc, _, err, (sender, rcpts), mail = sec("-c", "-z", str(listdir), "held", str(prog))
    assert rc == 99, err
    [hashid] = os.listdir(listdir / "held" / "new")
    assert f"Mailing-List: contact list-help@{HOST}; run by ezmlm\n".encode() in mail
    assert b"Say yes to list@lists.example." in mail and rcpts == [b"poster@x.example"]
    rc, _, err, _, _ = sec("-c", "-z", str(listdir), "held", str(prog), local="other", ext=f"confirm-{hashid}")
    assert (rc, err) == (100, "qmail-secretary: fatal: I do not accept messages at this address (#5.1.1)\n")
    rc, out, err, _, _ = sec("-c", "-z", str(listdir), "held", str(prog), ext=f"confirm-{hashid}",
                             message=b"Subject: yes\n\nyes\n")
    assert (rc, out) == (99, b""), err
    assert sink.read_bytes().endswith(POST) and (tmp_path / "sink.sender").read_text() == "poster@x.example\n"
    assert os.listdir(listdir / "held" / "new") == []


def test_large_message_is_cut_in_the_request(sec):
    big = b"Subject: big\n\n" + b"y" * 50000 + b"\n"
    rc, _, err, _, mail = sec("-Zc", sec.maildir, message=big)
    assert rc == 99, err
    assert b"\n\n--- End of message stripped.\n" in mail and len(mail) < 15000
    [hashid] = held(sec.maildir, "new")
    assert os.path.getsize(os.path.join(sec.maildir, "new", hashid)) > 50000  # the held copy is whole


def test_week_old_messages_are_removed(sec):
    sec("-Zc", sec.maildir)
    old, recent = os.path.join(sec.maildir, "cur", "a" * 40), os.path.join(sec.maildir, "new", "b" * 40)
    for path, age in ((old, 8 * 86400), (recent, 6 * 86400)):
        with open(path, "wb") as f:
            f.write(POST)
        os.utime(path, (time.time() - age, time.time() - age))
    sec("-Zc", sec.maildir, ext="bounce-" + "c" * 40, sender="")
    assert not os.path.exists(old) and os.path.exists(recent)
