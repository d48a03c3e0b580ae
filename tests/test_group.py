"""qmail-group against the real slapd: the program with qmail-command's environment, and end to end
through the real master (lookup, qmail-local's group shortcut, qmail-group, qmail-secretary, queue)."""

import os
import re
import subprocess

import pytest

from engine import queue
from support.fakequeue import read_envelope, read_message, record_queue
from support.ldapenv import fresh_domain, point_at, write_control
from support.master import Master
from support.ports import free_port
from support.slapd import ROOTDN, ROOTPW, add_user, slapd  # noqa: F401
from support.users import delivered

GROUP_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser", "qmailGroup"]
POST = b"From: poster\nSubject: hello list\n\nbody\n"


def add_group(server, name, domain, store, **attrs):
    """A qmailGroup entry name@domain (list-catchall@domain for the -action-hash addresses)."""
    return add_user(server, f"{name}.{domain}", f"{name}@{domain}", objectClass=GROUP_CLASSES,
                    mailAlternateAddress=f"{name}-catchall@{domain}", mailMessageStore=store, **attrs)


def person(server, name, domain, **attrs):
    return add_user(server, f"{name}.{domain}", f"{name}@{domain}", mailMessageStore=f"/nonexistent/{name}/", **attrs)


@pytest.fixture
def env(qmailhome, tmp_path, slapd):  # noqa: F811
    """(run, domain): run(dn, sender, local=..., ext=..., message=...) runs bin/qmail-group as qmail-local would."""
    point_at(qmailhome, slapd)
    domain = fresh_domain("grp")
    store = tmp_path / "groupstore"
    store.mkdir()
    qqdir = tmp_path / "qq"
    qqdir.mkdir()

    def run(dn, sender, local="list", ext="", message=POST, maildir="./", **extra):
        msg = tmp_path / "message"
        msg.write_bytes(message)
        e = {"PATH": f"{qmailhome}/bin:/usr/bin:/bin", "QMAILHOME": qmailhome, "SENDER": sender,
             "LOCAL": local + (f"-{ext}" if ext else ""), "EXT": ext, "HOST": domain, "QLDAPGROUP": dn,
             "QMAILQUEUE": record_queue(qqdir), **extra}
        for f in ("message", "envelope"):
            if (qqdir / f).exists():
                (qqdir / f).unlink()
        with open(msg, "rb") as stdin:
            p = subprocess.run([f"{qmailhome}/bin/qmail-group", maildir], stdin=stdin, env=e, cwd=store,
                               capture_output=True, timeout=30)
        queued = (qqdir / "envelope").exists()
        return p.returncode, p.stderr.decode(), (read_envelope(qqdir) if queued else None), \
            (read_message(qqdir) if queued else None)

    run.domain, run.store = domain, str(store)
    return run


def test_expansion_rfc822_dn_and_filter_members(env, slapd):  # noqa: F811
    d = env.domain
    alice = person(slapd, "alice", d)
    person(slapd, "carol", d)
    dn = add_group(slapd, "list", d, env.store, rfc822member=["outside@else.example"],
                   dnmember=[alice, f"uid=ghost,ou=people,{slapd.suffix}"],
                   filtermember=[f"(&(objectClass=qmailUser)(mail=carol@{d}))"])
    rc, err, envelope, msg = env(dn, "poster@x.example")
    assert rc == 0, err
    assert re.fullmatch(r"qmail-group: ok \d+ qp \d+\.\n", err)
    sender, rcpts = envelope
    assert sender == b"poster@x.example"
    assert sorted(rcpts) == sorted([b"outside@else.example", f"alice@{d}".encode(), f"carol@{d}".encode()])
    assert msg == f"Delivered-To: list@{d}\nPrecedence: bulk\n".encode() + POST


def test_bounceadmin_verp_return_and_moderators_actions(env, slapd):  # noqa: F811
    d = env.domain
    dn = add_group(slapd, "list", d, env.store, rfc822member=["m@x.example"], bounceadmin=["admin@x.example"],
                   rfc822moderator=["mod@x.example"])
    rc, err, (sender, rcpts), _ = env(dn, "", ext="return-m=x.example")
    assert rc == 0 and rcpts == [b"admin@x.example"], err
    rc, err, (sender, rcpts), _ = env(dn, "someone@x.example", ext="moderators")
    assert rc == 0 and rcpts == [b"mod@x.example"] and sender == b"someone@x.example", err
    for ext in ("bogus", "moderators-x", "confirmx-1"):
        rc, err, queued, _ = env(dn, "someone@x.example", ext=ext)
        assert (rc, err) == (100, "qmail-group: fatal: Sorry, no mailbox here by that name. (#5.1.1)\n")
        assert queued is None
    rc, err, (sender, rcpts), _ = env(dn, "", ext="bounce-" + "a" * 40)
    assert rc == 0 and rcpts == [b"admin@x.example"], err
    nobody = add_group(slapd, "nobody", d, env.store, rfc822member=["m@x.example"], rfc822moderator=["mod@x.example"])
    rc, err, queued, _ = env(nobody, "", local="nobody", ext="bounce-" + "a" * 40)
    assert (rc, err, queued) == (0, "qmail-secretary: warn: message to moderator bounced.\n", None)
    plain = add_group(slapd, "plain", d, env.store, rfc822member=["m@x.example"], bounceadmin=["admin@x.example"])
    rc, err, (sender, rcpts), _ = env(plain, "poster@x.example", local="plain")
    assert rc == 0 and sender == f"plain-return-@{d}-@[]".encode() and rcpts == [b"m@x.example"], err


def test_loop_no_recipients_and_usage(env, slapd):  # noqa: F811
    d = env.domain
    dn = add_group(slapd, "list", d, env.store, rfc822member=["m@x.example"])
    rc, err, queued, _ = env(dn, "p@x.example", message=f"Delivered-To: list@{d}\n\nx\n".encode())
    assert (rc, queued) == (100, None)
    assert err == "qmail-group: fatal: this message is looping: it already has my Delivered-To line. (#5.4.6)\n"
    empty = add_group(slapd, "empty", d, env.store)
    rc, err, queued, _ = env(empty, "p@x.example", local="empty")
    assert (rc, err, queued) == (100, "qmail-group: fatal: no recipients found in this group.\n", None)
    rc, err, _, _ = env(dn, "p@x.example", maildir="")
    assert rc == 0  # an empty argument is still one argument
    p = subprocess.run([f"{os.environ['QMAILHOME']}/bin/qmail-group"], stdin=subprocess.DEVNULL,
                       capture_output=True)
    assert p.returncode == 100 and b"usage: qmail-group Maildir" in p.stderr


def test_membersonly_who_may_post(env, slapd):  # noqa: F811
    d = env.domain
    alice = person(slapd, "alice", d)
    person(slapd, "bob", d, departmentNumber="sales")
    person(slapd, "eve", d)
    dn = add_group(slapd, "list", d, env.store, membersonly="TRUE", rfc822member=["Listed@X.example"],
                   dnmember=[alice.upper()], filtermember=["(departmentNumber=sales)"])
    for sender in ("listed@x.example", f"alice@{d}", f"bob@{d}"):
        rc, err, queued, _ = env(dn, sender)
        assert rc == 0 and queued, (sender, err)
    for sender in (f"eve@{d}", "stranger@x.example", "", "#@[]"):
        rc, err, queued, _ = env(dn, sender)
        assert (rc, queued) == (100, None), sender
        assert err == "qmail-group: fatal: You are not allowed to post to this list. (#5.7.2)\n"


def test_membersonly_sender_attributes_replace_members(env, slapd):  # noqa: F811
    d = env.domain
    alice = person(slapd, "alice", d)
    person(slapd, "bob", d, departmentNumber="boss")
    dn = add_group(slapd, "list", d, env.store, membersonly="TRUE", rfc822member=[f"alice@{d}"],
                   dnmember=[alice], rfc822sender=["chief@x.example"], filtersender=["(departmentNumber=boss)"])
    assert env(dn, f"alice@{d}")[0] == 100, "a member is not a sender once sender attributes exist"
    assert env(dn, "chief@x.example")[0] == 0
    assert env(dn, f"bob@{d}")[0] == 0


def test_filter_injection_in_sender_cannot_widen_membersonly(env, slapd):  # noqa: F811
    """Unescaped, each of these senders would find alice's entry, which dnmember lists."""
    d = env.domain
    alice = person(slapd, "alice", d)
    dn = add_group(slapd, "list", d, env.store, membersonly="TRUE", dnmember=[alice],
                   filtermember=[f"(mail=alice@{d})"])
    assert env(dn, f"alice@{d}")[0] == 0
    for sender in (f"al*@{d}", f"*@{d}", f"alice@{d})(mail=*", f"x)(|(mail=alice@{d}", f"alice@{d}\\"):
        rc, err, queued, _ = env(dn, sender)
        assert (rc, queued) == (100, None), (sender, err)
        assert "You are not allowed to post to this list. (#5.7.2)" in err


def test_directory_trouble_defers(env, slapd, qmailhome):  # noqa: F811
    d = env.domain
    dn = add_group(slapd, "list", d, env.store, rfc822member=["m@x.example"])
    write_control(qmailhome, "ldapgrouplogin", ROOTDN)
    write_control(qmailhome, "ldapgrouppassword", "wrong")
    rc, err, queued, _ = env(dn, "p@x.example")
    assert (rc, queued) == (111, None)
    assert err == "qmail-group: fatal: get ldap group entry: wrong bind password for ldap server\n"
    write_control(qmailhome, "ldapgrouppassword", ROOTPW)
    assert env(dn, "p@x.example")[0] == 0
    write_control(qmailhome, "ldapserver", f"127.0.0.1:{free_port()}")
    rc, err, queued, _ = env(dn, "p@x.example")
    assert (rc, queued) == (111, None)
    assert err == "qmail-group: fatal: get ldap group entry: ldap server down or unreachable\n"
    point_at(qmailhome, slapd, ldaptimeout="1")
    slapd.pause()
    try:
        rc, err, queued, _ = env(dn, "p@x.example")
    finally:
        slapd.resume()
    assert (rc, queued) == (111, None), err
    rc, err, queued, _ = env(f"uid=gone,ou=people,{slapd.suffix}", "p@x.example")
    assert (rc, err) == (111, "qmail-group: fatal: get ldap group entry: no such object\n")


# -- end to end ----------------------------------------------------------------------------------

@pytest.fixture
def site(qmailhome, tmp_path, slapd):  # noqa: F811
    """The master on a qmail home that takes its users from slapd; user(name) makes a Maildir user."""
    domain = fresh_domain("e2e")
    point_at(qmailhome, slapd, locals=f"{domain}\n", ldaplocaldelivery="0", ldapuid="1000", ldapgid="1000")
    stores = {}

    def user(name, group=False, **attrs):
        store = str(tmp_path / "mail" / name) + "/"
        os.makedirs(store, mode=0o755)
        stores[name] = store
        if group:
            dn = add_group(slapd, name, domain, store, **attrs)
        else:
            dn = add_user(slapd, f"{name}.{domain}", f"{name}@{domain}", mailMessageStore=store, **attrs)
        return dn, store

    m = Master(qmailhome, aliasempty="./", env={"PYQMAIL_RETRY_SCALE": "100"})
    yield m, user, domain
    m.stop()


def texts(store):
    return [open(p, "rb").read() for p in delivered(store)] if os.path.isdir(store + "new") else []


def send(home, rcpt, sender, body=POST):
    queue.enqueue(body, sender.encode(), [rcpt.encode()], home=home)


def test_group_delivers_once_to_every_kind_of_member(site, qmailhome):
    m, user, d = site
    alice, alice_store = user("alice")
    _, bob_store = user("bob")
    _, carol_store = user("carol", departmentNumber=f"team-{d}")
    user("list", group=True, rfc822member=[f"bob@{d}"], dnmember=[alice],
         filtermember=[f"(departmentNumber=team-{d})"])
    m.start()
    send(qmailhome, f"list@{d}", f"bob@{d}")
    for store in (alice_store, bob_store, carol_store):
        m.wait_for(lambda: len(texts(store)) == 1, 30, f"the post in {store}")
    m.wait_for(lambda: "qmail-group:_ok" in m.log(), 10, "qmail-group's ok in the delivery report")
    for store, name in ((alice_store, "alice"), (bob_store, "bob"), (carol_store, "carol")):
        [t] = texts(store)
        head = t.split(b"\n\n", 1)[0]
        assert f"Delivered-To: {name}@{d}\n".encode() in head
        assert f"Delivered-To: list@{d}\nPrecedence: bulk\n".encode() in head
        assert t.startswith(f"Return-Path: <bob@{d}>\n".encode())
        assert head.count(b"Precedence: bulk") == 1


def test_membersonly_post_bounces_with_the_reason(site, qmailhome):
    m, user, d = site
    _, out_store = user("outsider")
    _, member_store = user("member")
    user("list", group=True, membersonly="TRUE", rfc822member=[f"member@{d}"])
    m.start()
    send(qmailhome, f"list@{d}", f"outsider@{d}")
    m.wait_for(lambda: len(texts(out_store)) == 1, 30, "the bounce to the outsider")
    assert b"You are not allowed to post to this list. (#5.7.2)" in texts(out_store)[0]
    assert texts(member_store) == []


def test_moderated_post_is_held_then_released_by_the_approval(site, qmailhome):
    m, user, d = site
    _, poster_store = user("poster")
    _, mod_store = user("mod")
    _, member_store = user("member")
    _, list_store = user("list", group=True, rfc822member=[f"member@{d}"], rfc822moderator=[f"mod@{d}"])
    m.start()
    send(qmailhome, f"list@{d}", f"poster@{d}", b"Subject: please post\n\nmoderated body\n")
    m.wait_for(lambda: len(texts(mod_store)) == 1, 30, "the moderation request")
    request = texts(mod_store)[0]
    found = re.search(rb"From: The mailgroup secretary <list-approve-([0-9a-f]{40})@" + d.encode() + b">", request)
    assert found, request[:800]
    hashid = found.group(1).decode()
    assert f"Return-Path: <list-bounce-{hashid}@{d}>".encode() in request
    assert b"Precedence: junk\n" in request and b"Subject: Moderation request\n" in request
    assert f"to the list@{d} mailinglist".encode() in request and b"moderated body" in request
    assert os.listdir(list_store + "cur") == [hashid]
    assert texts(member_store) == []
    send(qmailhome, f"list-approve-{hashid}@{d}", f"mod@{d}", b"Subject: Re: Moderation request\n\nOK\n")
    m.wait_for(lambda: len(texts(member_store)) == 1, 30, "the released post")
    post = texts(member_store)[0]
    assert post.startswith(f"Return-Path: <poster@{d}>\n".encode())
    assert f"Delivered-To: list@{d}\nPrecedence: bulk\n".encode() in post and b"moderated body" in post
    m.wait_for(lambda: os.listdir(list_store + "cur") == [], 10, "the held copy removed")
    send(qmailhome, f"list-approve-{hashid}@{d}", f"mod@{d}", b"Subject: again\n\nOK\n")
    m.wait_for(lambda: "Message_no_longer_in_repository" in m.log(), 30, "a second approval finds nothing")
    assert len(texts(member_store)) == 1


def test_group_deferred_while_its_directory_login_fails(site, qmailhome):
    m, user, d = site
    _, member_store = user("member")
    user("list", group=True, rfc822member=[f"member@{d}"])
    write_control(qmailhome, "ldapgrouplogin", ROOTDN)
    write_control(qmailhome, "ldapgrouppassword", "wrong")
    m.start()
    send(qmailhome, f"list@{d}", f"member@{d}")
    m.wait_for(lambda: "wrong_bind_password_for_ldap_server" in m.log(), 30, "a deferral")
    assert ": failure: " not in m.log() and texts(member_store) == []


def test_qmail_local_hands_groups_to_qmail_group(env, slapd, qmailhome, tmp_path):  # noqa: F811
    """qmail-local's shortcut: `qmail-group <aliasempty>` only for a ./ or / aliasempty; -n just says so."""
    d = env.domain
    dn = add_group(slapd, "list", d, env.store, rfc822member=["m@x.example"])
    msg = tmp_path / "msg"
    msg.write_bytes(POST)
    rec = tmp_path / "rec"
    rec.mkdir()
    e = {"PATH": f"{qmailhome}/bin:/usr/bin:/bin", "QMAILHOME": qmailhome, "QLDAPGROUP": dn,
         "QMAILQUEUE": record_queue(rec)}

    def local(flag, aliasempty):
        with open(msg, "rb") as stdin:
            return subprocess.run([f"{qmailhome}/bin/qmail-local", flag, "--", "list", env.store, "list", "", "",
                                   d, "p@x.example", aliasempty], stdin=stdin, env=e, capture_output=True)
    p = local("-n", "./")
    assert (p.returncode, p.stdout) == (0, b"group delivery\ndid 0+0+0\n")
    p = local("-N", "./")
    assert p.returncode == 0 and re.search(rb"qmail-group: ok \d+ qp \d+\.\ndid 0\+0\+1\n$", p.stdout), p.stdout
    assert read_envelope(rec) == (b"p@x.example", [b"m@x.example"])
    p = local("-N", "Maildir/")
    assert p.returncode == 100 and b"qmail-group: usage: qmail-group Maildir" in p.stdout


def test_sender_confirmation_holds_then_releases(env, slapd):  # noqa: F811
    d = env.domain
    dn = add_group(slapd, "list", d, env.store, senderconfirm="TRUE", rfc822member=["m@x.example"],
                   bounceadmin=["admin@x.example"], confirmtext="Confirm your post to %LIST%.\n")
    rc, err, (sender, rcpts), request = env(dn, "poster@x.example")
    assert rc == 0 and "qmail-secretary: info: qp" in err, err
    [hashid] = os.listdir(os.path.join(env.store, "new"))
    assert sender == f"list-reject-{hashid}@{d}".encode() and rcpts == [b"poster@x.example"]
    assert f"Confirm your post to list@{d}.".encode() in request
    rc, err, (sender, rcpts), post = env(dn, "poster@x.example", ext=f"confirm-{hashid}",
                                         message=b"Subject: Re: confirm\n\nOK\n")
    assert rc == 0 and re.search(r"qmail-group: ok \d+ qp \d+\.\n$", err), err
    assert sender == f"list-return-@{d}-@[]".encode() and rcpts == [b"m@x.example"]
    assert post.startswith(f"Delivered-To: list@{d}\nPrecedence: bulk\nReturn-Path: <poster@x.example>\n".encode())
    assert post.endswith(POST) and os.listdir(os.path.join(env.store, "new")) == []
