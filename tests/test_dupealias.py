"""DUPEALIAS (control/ldapdupealias): an address with several LDAP entries, end to end and in qmail-verify."""

import asyncio
import os

from engine import queue, verify
from support.ldapenv import fresh_domain, point_at, write_control
from support.master import Master
from support.slapd import add_user, slapd  # noqa: F401
from support.users import delivered


def texts(maildir):
    return [open(p, "rb").read() for p in delivered(maildir)] if os.path.isdir(maildir + "new") else []


def test_duplicate_entries_bounce_or_go_to_dupealias(qmailhome, tmp_path, slapd):  # noqa: F811
    d = fresh_domain("dupe")
    point_at(qmailhome, slapd, locals=f"{d}\n", ldaplocaldelivery="0", ldapuid="1000", ldapgid="1000")
    sender_store = str(tmp_path / "sender") + "/"
    os.makedirs(sender_store, mode=0o755)
    add_user(slapd, f"sender.{d}", f"sender@{d}", mailMessageStore=sender_store)
    for n in (1, 2):
        add_user(slapd, f"dup{n}.{d}", f"dup@{d}", mailMessageStore=str(tmp_path / f"dup{n}") + "/")
    # a single-user instance's dupealias user is its owner with <home>/dupealias
    dupe_home = os.path.join(qmailhome, "dupealias")
    os.makedirs(dupe_home, mode=0o755)
    with open(os.path.join(dupe_home, ".qmail-default"), "w") as f:
        f.write("./inbox/\n")

    m = Master(qmailhome, aliasempty="./", env={"PYQMAIL_RETRY_SCALE": "100"}).start()
    try:
        queue.enqueue(b"Subject: one\n\nx\n", f"sender@{d}".encode(), [f"dup@{d}".encode()], home=qmailhome)
        m.wait_for(lambda: len(texts(sender_store)) == 1, 30, "the bounce")
    finally:
        m.stop()
    assert b"Too many results returned but needs to be unique. (#5.3.5)" in texts(sender_store)[0]
    assert asyncio.run(verify.check(qmailhome, f"dup@{d}")) == ("Z", "")

    write_control(qmailhome, "ldapdupealias", "1")
    verify._threads.clear()  # qmail-verify reads its controls when it (re)connects
    assert asyncio.run(verify.check(qmailhome, f"dup@{d}")) == ("K", "")
    m = Master(qmailhome, aliasempty="./", env={"PYQMAIL_RETRY_SCALE": "100"}).start()
    try:
        queue.enqueue(b"Subject: two\n\nx\n", f"sender@{d}".encode(), [f"dup@{d}".encode()], home=qmailhome)
        inbox = os.path.join(dupe_home, "inbox") + "/"
        m.wait_for(lambda: len(texts(inbox)) == 1, 30, "delivery to dupealias")
    finally:
        m.stop()
    assert b"Subject: two" in texts(inbox)[0] and len(texts(sender_store)) == 1
    assert f"Delivered-To: dup@{d}\n".encode() in texts(inbox)[0]  # ~dupealias/.qmail-default, ext "dup"
