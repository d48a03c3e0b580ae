"""qmail-quotawarn: one warning per mailbox, %HEADER% rules, silent without control/quotawarning."""

import os
import subprocess
import sys

ENV = {"USER": "joe", "HOST": "example.test", "RECIPIENT": "joe@example.test",
       "DTLINE": "Delivered-To: joe@example.test\n"}


def run(home, target, env=ENV):
    base = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run([sys.executable, "-m", "engine.quotawarn", target], capture_output=True, text=True,
                          env={**base, "QMAILHOME": home, **env}, stdin=subprocess.DEVNULL)


def maildir(tmp_path):
    md = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True)
    return str(md) + "/"


def test_nothing_without_quotawarning(qmailhome, tmp_path):
    md = maildir(tmp_path)
    assert run(qmailhome, md).returncode == 0
    assert os.listdir(md + "new") == []


def test_one_warning_in_a_maildir_with_header_magic(qmailhome, tmp_path):
    with open(os.path.join(qmailhome, "control", "quotawarning"), "w") as f:
        f.write("%HEADER%\nSubject: Your mailbox is nearly full\nTo: someone@else.test\nX-Info: yes\n"
                "Bcc: nope@x.test\n\nPlease delete some mail.\n")
    md = maildir(tmp_path)
    assert run(qmailhome, md).returncode == 0
    [name] = os.listdir(md + "new")
    assert ".QUOTA_WARNING,S=" in name
    text = open(md + "new/" + name).read()
    head, body = text.split("\n\n", 1)
    assert head.startswith("Return-Path: <>\nDelivered-To: joe@example.test\nQmail-QuotaWarning: joe@example.test\n"
                           "Received: (directly through the qmail-quotawarning program);\n\t")
    assert "Subject: Your mailbox is nearly full\n" in head and "X-Info: yes\n" in head
    assert "To: joe@example.test\n" in head and "someone@else.test" not in head and "Bcc" not in head
    assert "From: Qmail-QUOTAGUARD <MAILER-DAEMON@testhost.example.org>\n" in head
    assert "MIME-Version: 1.0\n" in head and "Message-ID: <" in head
    assert body == "Please delete some mail.\n\n"
    assert run(qmailhome, md).returncode == 0
    assert len(os.listdir(md + "new")) == 1, "only one warning"


def test_mbox_warning_once_and_usage(qmailhome, tmp_path):
    with open(os.path.join(qmailhome, "control", "quotawarning"), "w") as f:
        f.write("Your mailbox is nearly full.\n")
    mbox = str(tmp_path / "Mailbox")
    assert run(qmailhome, mbox).returncode == 0
    assert run(qmailhome, mbox).returncode == 0
    text = open(mbox).read()
    assert text.startswith("From MAILER-DAEMON ") and text.count("Qmail-QuotaWarning: joe@example.test\n") == 1
    assert "Subject: QUOTA-WARNING!\n" in text
    p = subprocess.run([sys.executable, "-m", "engine.quotawarn"], capture_output=True, text=True)
    assert p.returncode == 100 and "usage" in p.stderr
    assert run(qmailhome, mbox, env={"HOST": "x"}).returncode == 100
