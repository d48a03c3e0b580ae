"""Local delivery driven by the directory, end to end: the real master, a real slapd, real Maildirs."""

import os

import pytest

from engine import queue
from support.master import Master
from support.slapd import add_user, slapd  # noqa: F401
from support.users import delivered

import itertools

_domains = itertools.count(1)
DOMAIN = "ldapdeliv.test"  # each test gets its own sub-domain: the slapd is shared by the session


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


@pytest.fixture
def ldaphost(qmailhome, tmp_path, slapd):  # noqa: F811
    global DOMAIN
    DOMAIN = f"d{next(_domains)}.ldapdeliv.test"
    write(qmailhome, "ldapserver", f"{slapd.hostport}\n")
    write(qmailhome, "ldapbasedn", f"{slapd.suffix}\n")
    write(qmailhome, "locals", f"{DOMAIN}\ntesthost.example.org\n")
    write(qmailhome, "ldaplocaldelivery", "0\n")
    write(qmailhome, "ldapuid", "1000\n")  # virtual users: one uid (a single-user instance delivers as its owner)
    write(qmailhome, "ldapgid", "1000\n")
    stores = {}

    def user(name, **attrs):
        store = str(tmp_path / "mail" / name) + "/"
        os.makedirs(store, mode=0o755)
        stores[name] = store
        add_user(slapd, f"{name}.{tmp_path.name}", f"{name}@{DOMAIN}", mailMessageStore=store, **attrs)
        return store

    m = Master(qmailhome, aliasempty="./", env={"PYQMAIL_RETRY_SCALE": "100"})
    yield m, user, stores
    m.stop()


def send(home, rcpt, sender=None, body=b"Subject: t\n\nbody\n"):
    sender = sender or b"alice@" + DOMAIN.encode()
    queue.enqueue(body, sender, [rcpt.encode()], home=home)


def texts(store):
    return [open(p, "rb").read() for p in delivered(store)] if os.path.isdir(store + "new") else []


def test_account_states_quota_forwards_and_catchall(ldaphost, qmailhome, slapd):  # noqa: F811
    m, user, stores = ldaphost
    alice = user("alice")
    bob = user("bob", mailAlternateAddress=f"robert@{DOMAIN}")
    user("off", accountStatus="disabled")
    user("gone", accountStatus="deleted")
    user("nopop", accountStatus="nopop")
    small = user("small", mailQuotaSize="600")
    add_user(slapd, f"fwd.{os.path.basename(alice.rstrip('/'))}", f"fwd@{DOMAIN}",
             mailForwardingAddress=[f"bob@{DOMAIN}"])
    m.start()
    send(qmailhome, f"bob@{DOMAIN}")
    send(qmailhome, f"robert@{DOMAIN}")
    send(qmailhome, f"nopop@{DOMAIN}")
    send(qmailhome, f"fwd@{DOMAIN}")
    m.wait_for(lambda: len(texts(bob)) == 3, 30, "bob: direct, alternate address, forward")
    m.wait_for(lambda: len(texts(stores["nopop"])) == 1, 30, "nopop still receives mail")
    assert any(b"Delivered-To: fwd@" + DOMAIN.encode() in t for t in texts(bob))
    for rcpt in ("off", "gone", "nosuchuser"):
        send(qmailhome, f"{rcpt}@{DOMAIN}")
    m.wait_for(lambda: len(texts(alice)) == 3, 30, "three bounces to alice")
    bounces = b"".join(texts(alice))
    assert b"Mailaddress is administratively disabled. (#5.2.1)" in bounces
    assert bounces.count(b"Sorry, no mailbox here by that name. (#5.1.1)") >= 1
    send(qmailhome, f"small@{DOMAIN}", body=b"Subject: fits\n\n" + b"x" * 300 + b"\n")
    m.wait_for(lambda: len(texts(small)) == 1, 30, "first message fits the quota")
    send(qmailhome, f"small@{DOMAIN}", body=b"Subject: too big\n\n" + b"x" * 400 + b"\n")
    m.wait_for(lambda: len(texts(alice)) == 4, 30, "over-quota bounce")
    assert b"over the allowed quota" in texts(alice)[-1] or b"over the allowed quota" in b"".join(texts(alice))
    assert os.path.exists(small + "maildirsize")


def test_directory_outage_defers_then_everything_arrives(ldaphost, qmailhome, slapd):  # noqa: F811
    """slapd frozen with SIGSTOP during 2,000 messages: deferrals, never a bounce; after SIGCONT all land,
    each in the right Maildir, none lost. The first ldapserver line is dead: failover in order."""
    import signal
    m, user, stores = ldaphost
    write(qmailhome, "ldapserver", f"127.0.0.1:1\n{slapd.hostport}\n")
    write(qmailhome, "ldaptimeout", "2\n")
    names = [f"out{i}" for i in range(5)]
    for n in names:
        user(n)
    m.start()
    total = 2000
    for i in range(total):
        if i == 500:
            slapd.pause()
        send(qmailhome, f"{names[i % 5]}@{DOMAIN}", body=b"Subject: n%d\n\nx\n" % i)
    try:
        m.wait_for(lambda: "Timeout_while_performing_search" in m.log() or "Unable_to_contact_LDAP" in m.log(),
                   60, "deferrals while the directory hangs")
    finally:
        slapd.resume()
    m.signal(signal.SIGALRM)

    def count():
        return sum(len(texts(stores[n])) for n in names)
    m.wait_for(lambda: count() == total, 240, "every message delivered after the outage")
    assert ": failure: " not in m.log(), "an outage must never bounce"
    for i, n in enumerate(names):
        for t in texts(stores[n]):
            k = int(t.split(b"Subject: n", 1)[1].split(b"\n", 1)[0])
            assert k % 5 == i, f"message {k} misdelivered to {n}"


def test_autoreply_once_per_sender_and_never_to_lists(ldaphost, qmailhome, slapd):  # noqa: F811
    m, user, stores = ldaphost
    alice = user("alice")
    away = user("away", deliveryMode="reply", mailReplyText="I am away until Monday.\n")
    m.start()
    send(qmailhome, f"away@{DOMAIN}", body=b"Subject: lunch?\n\nhi\n")
    m.wait_for(lambda: len(texts(alice)) == 1 and len(texts(away)) == 1, 30, "the reply and the delivery")
    reply = texts(alice)[0]
    assert reply.startswith(b"Return-Path: <>\nDelivered-To: alice@" + DOMAIN.encode() + b"\n")
    assert b"Subject: [Auto-Reply] lunch?\n" in reply and b"X-Mailer: qmail-reply (by qmail-ldap)\n" in reply
    assert b"Precedence: junk\n" in reply and b"\n\nI am away until Monday.\n" in reply
    send(qmailhome, f"away@{DOMAIN}", body=b"Subject: again\n\nhi\n")
    send(qmailhome, f"away@{DOMAIN}", body=b"Subject: list\nPrecedence: bulk\n\nhi\n", sender=b"bob@" + DOMAIN.encode())
    m.wait_for(lambda: len(texts(away)) == 3, 30, "all three delivered")
    m.wait_for(lambda: "end msg" in m.log() and m.log().count("end msg") >= 4, 30)
    assert len(texts(alice)) == 1, "one reply per sender within 14 days"
    assert os.path.exists(away + "qmail-reply.db")


def test_junk_senders():
    from engine.reply import junk_sender
    for junk in ("owner-list-request@x.test", "MAILER-DAEMON@x.test", "root@x.test", "news-relay@x.test"):
        assert junk_sender(junk), junk
    assert not junk_sender("joe@x.test")
    assert junk_sender("joe@x.test", ["joe"])
