"""qmailUser delivery semantics end to end: the real master, the session's slapd, real Maildirs.

Each test gets its own domain (the slapd is shared by the session) and a
sender user `alice` whose Maildir collects the bounces, so every assertion is
on what lands on disk: Maildir files, exact bounce lines with their #x.y.z
codes, forwarded copies with their Delivered-To and Precedence lines.
Covered: every accountStatus, every deliveryMode and qmailDotMode value with
deliveryProgramPath, mailForwardingAddress and a .qmail file in the home,
the dash-extension rounds with aliasdomains, Maildir++ quotas at and over the
limit (and the control/defaultquota* defaults) with the quota warning, mail
stores (ldapmessagestore, homeDirectory alone, control/dirmaker),
ldapobjectclass, check.c's refusals, the ldaplocaldelivery fallback to
users/cdb, a forwarding loop between two entries, and filter-injection
attempts through delivery and RCPTCHECK.
(Failover to a second ldapserver is in test_ldap_delivery's outage test.)
"""

import os
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from engine import queue
from support.ldapenv import fresh_domain, write_control
from support.master import Master
from support.ports import free_port
from support.slapd import add_user, slapd  # noqa: F401
from support.users import delivered

NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
DISABLED = "Mailaddress is administratively disabled. (#5.2.1)"
ILLEGAL = "Illegal value in LDAP attribute. (#5.3.5)"
OVER_QUOTA = "The users mailfolder is over the allowed quota (size). (#5.2.2)"
LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"

RECORDER = """#!/bin/sh
# deliveryProgramPath test program: keeps the message it was given, named after $1
cat > "{out}/$1.$$"
"""


class Site:
    """One test's domain on the shared slapd, its users' Maildirs and a master delivering for it."""

    def __init__(self, home, base, server):
        self.home, self.base, self.server = home, str(base), server
        self.domain = fresh_domain("mode")
        self.alias_domain = "al." + self.domain
        self.progout = os.path.join(self.base, "progout")
        os.makedirs(self.progout)
        self.recorder = os.path.join(self.base, "recorder")
        with open(self.recorder, "w") as f:
            f.write(RECORDER.format(out=self.progout))
        os.chmod(self.recorder, 0o755)
        write_control(home, "ldapserver", server.hostport)
        write_control(home, "ldapbasedn", server.suffix)
        write_control(home, "locals", f"{self.domain}\n{self.alias_domain}\ntesthost.example.org")
        write_control(home, "ldaplocaldelivery", "0")
        write_control(home, "ldapuid", "1000")  # virtual users (a single-user instance delivers as its owner)
        write_control(home, "ldapgid", "1000")
        self.master = Master(home, aliasempty="./", env={"PYQMAIL_RETRY_SCALE": "100"})
        self.alice = self.user("alice")

    def addr(self, local):
        return f"{local}@{self.domain}"

    def user(self, name, home=False, dotqmail=None, **attrs):
        """A qmailUser `name@domain` with its own Maildir; returns the Maildir path (ends in /).

        home=True (or dotqmail={suffix: text}) gives it a homeDirectory holding
        ./Maildir/ and those .qmail files; otherwise only an absolute mailMessageStore."""
        top = os.path.join(self.base, "u", name.replace("*", "_"))
        os.makedirs(top, mode=0o755)
        os.chmod(top, 0o755)
        if home or dotqmail:
            attrs.setdefault("homeDirectory", top)
            attrs.setdefault("mailMessageStore", "./Maildir/")  # None: no mailMessageStore at all
            store = os.path.join(top, "Maildir") + "/"
            for suffix, text in (dotqmail or {}).items():
                path = os.path.join(top, ".qmail" + suffix)
                with open(path, "w") as f:
                    f.write(text)
                os.chmod(path, 0o644)
        else:
            store = top + "/"
            attrs.setdefault("mailMessageStore", store)
        add_user(self.server, f"{name}.{self.domain}", self.addr(name), **attrs)
        return store

    def start(self):
        self.master.start()
        return self

    def send(self, rcpt, subject="t", body=b"body\n", sender=None, headers=b""):
        sender = (self.addr("alice") if sender is None else sender).encode()
        msg = b"Subject: " + subject.encode() + b"\n" + headers + b"\n" + body
        return queue.enqueue(msg, sender, [rcpt.encode()], home=self.home)

    def wait(self, pred, what, timeout=30):
        self.master.wait_for(pred, timeout, what)

    def wait_bounces(self, n):
        self.wait(lambda: len(texts(self.alice)) >= n, f"{n} bounces to alice")
        return b"".join(texts(self.alice)).decode("utf-8", "replace")

    def programs_run(self, name):
        return [n for n in os.listdir(self.progout) if n.split(".")[0] == name]


def texts(store):
    """Contents of every message in a Maildir (none yet: [])."""
    if not os.path.isdir(store + "new"):
        return []
    return [open(p, "rb").read() for p in sorted(delivered(store))]


def subjects(store):
    return sorted(t.split(b"\nSubject: ", 1)[1].split(b"\n", 1)[0].decode() for t in texts(store))


def bounce_record(rcpt, text):
    """qmail-send's failure paragraph for one recipient."""
    return f"<{rcpt}>:\n{text}\n"


@pytest.fixture
def site(qmailhome, tmp_path, slapd):  # noqa: F811
    s = Site(qmailhome, tmp_path, slapd)
    yield s
    s.master.stop()


def test_every_account_status(site):
    """active, nopop, noaccess and unknown values deliver; disabled and deleted (any case) bounce.
    Also the other per-entry refusals: mailSizeMax, and an address on two entries."""
    delivering = {name: site.user(name, accountStatus=status) for name, status in
                  (("act", "active"), ("nopop", "nopop"), ("noacc", "noaccess"), ("odd", "onvacation"),
                   ("absent", None))}
    site.user("dis", accountStatus="disabled")
    site.user("dis2", accountStatus="DISABLED")
    site.user("del", accountStatus="deleted")
    site.user("small", mailSizeMax="50")  # the queued file is ~90 bytes
    site.user("twice")
    add_user(site.server, f"twin.{site.domain}", site.addr("twin"), mailAlternateAddress=site.addr("twice"),
             mailMessageStore="/nonexistent/")
    site.start()
    for name in [*delivering, "dis", "dis2", "del", "small", "twice"]:
        site.send(site.addr(name), subject=name)
    for name, store in delivering.items():
        site.wait(lambda: subjects(store) == [name], f"{name} receives its message")
    bounces = site.wait_bounces(5)
    assert bounce_record(site.addr("small"),
                         "The message exeeded the maximum size the user accepts. (#5.2.3)") in bounces
    assert bounce_record(site.addr("twice"),
                         "Too many results returned but needs to be unique. (#5.3.5)") in bounces
    assert bounce_record(site.addr("dis"), DISABLED) in bounces
    assert bounce_record(site.addr("dis2"), DISABLED) in bounces
    assert bounce_record(site.addr("del"), NO_MAILBOX) in bounces


def test_every_delivery_mode(site):
    t1, t2 = site.user("t1"), site.user("t2")
    prog = dict(qmailDotMode="ldapwithprog", deliveryProgramPath=site.recorder + " noprog")
    stores = {
        "nolocal": site.user("nolocal", deliveryMode="nolocal", mailForwardingAddress=site.addr("t1")),
        "nombox": site.user("nombox", deliveryMode="NoMbox", mailForwardingAddress=site.addr("t1")),
        "noforward": site.user("noforward", deliveryMode="noforward", mailForwardingAddress=site.addr("t2")),
        "noprogram": site.user("noprogram", deliveryMode="noprogram", **prog),
        "ignored": site.user("ignored", deliveryMode=["local", "forward", "program", "noreply", "bogus"],
                             mailForwardingAddress=site.addr("t2")),
        "nothing": site.user("nothing", deliveryMode=["nolocal", "noforward"],
                             mailForwardingAddress=site.addr("t2")),
        "reply": site.user("reply", deliveryMode="reply", mailReplyText="Out of office.\n"),
        "modeless": site.user("modeless", mailReplyText="never sent\n"),
        "multi": site.user("multi", deliveryMode="nolocal",
                           mailForwardingAddress=[site.addr("t1"), site.addr("t2")]),
        # one value with a comma is not split (pre-2003 style): an unknown mode, ignored
        "comma": site.user("comma", deliveryMode="nolocal,noforward", mailForwardingAddress=site.addr("t2")),
    }
    site.start()
    for name in stores:
        site.send(site.addr(name), subject=name)
    site.send(site.addr("reply"), subject="reply-to-nobody", sender="")
    site.wait(lambda: subjects(t1) == ["multi", "nolocal", "nombox"], "nolocal and nombox forward only")
    site.wait(lambda: subjects(t2) == ["comma", "ignored", "multi"],
              "noforward drops the forward; ignored modes keep it")
    for name in ("noforward", "noprogram", "ignored", "modeless", "comma"):
        site.wait(lambda: subjects(stores[name]) == [name], f"{name} delivered to its Maildir")
    site.wait(lambda: subjects(stores["reply"]) == ["reply", "reply-to-nobody"], "reply delivers too")
    for store in (t1, t2):
        copy = [t for t in texts(store) if b"Subject: multi\n" in t][0]
        assert f"\nDelivered-To: multi@{site.domain}\nPrecedence: bulk\n".encode() in copy, "several forwards"
    bounces = site.wait_bounces(1)  # the one auto-reply
    assert "Subject: [Auto-Reply] reply\n" in bounces and "\n\nOut of office.\n" in bounces
    site.wait(lambda: "success: did_0+0+0/" in site.master.log(), "nolocal+noforward: nothing to do")
    assert texts(stores["nolocal"]) == texts(stores["nombox"]) == texts(stores["nothing"]) == []
    assert site.programs_run("noprog") == []
    for name in ("nolocal", "nombox"):
        copy = [t for t in texts(t1) if f"Subject: {name}\n".encode() in t][0]
        assert f"\nDelivered-To: {name}@{site.domain}\n".encode() in copy and b"Precedence: bulk" not in copy
        assert copy.startswith(f"Return-Path: <alice@{site.domain}>\n".encode()), "envelope sender kept"
    assert "Warning:_undefined_mail_delivery_mode:_bogus_(ignored)./did_1+1+0/" in site.master.log()
    assert "Warning:_undefined_mail_delivery_mode:_nolocal,noforward_(ignored)./did_1+1+0/" in site.master.log()
    assert len(texts(site.alice)) == 1, "no reply without deliveryMode reply, none to <>"


def test_every_dot_mode(site):
    """ldaponly ignores programs, ldapwithprog runs them, dotonly uses only ~/.qmail, both merges the
    LDAP forwards with the .qmail ones into one bulk copy; none and bad case bounce."""
    write_control(site.home, "ldapdefaultdotmode", "ldapwithprog")
    t1, t2 = site.user("t1", qmailDotMode="ldaponly"), site.user("t2", qmailDotMode="ldaponly")
    rec = site.recorder
    stores = {
        "ldaponly": site.user("ldaponly", qmailDotMode="LDAPonly", deliveryProgramPath=f"{rec} ldaponly",
                              mailForwardingAddress=site.addr("t1")),
        "withprog": site.user("withprog", qmailDotMode="ldapwithprog",
                              deliveryProgramPath=[f"{rec} withprog", f"{rec} withprog2"]),
        "default": site.user("default", deliveryProgramPath=f"{rec} default"),
        "dotonly": site.user("dotonly", qmailDotMode="dotonly", mailForwardingAddress=site.addr("t1"),
                             deliveryMode="nolocal", deliveryProgramPath=f"{rec} dotonlyldap",
                             dotqmail={"": f"./Maildir/\n&{site.addr('t2')}\n|{rec} dotonly\n"}),
        "dotnone": site.user("dotnone", qmailDotMode="dotonly", home=True),
        "both": site.user("both", qmailDotMode="both", mailForwardingAddress=site.addr("t1"),
                          deliveryProgramPath=f"{rec} bothldap",
                          dotqmail={"": f"{site.addr('t2')}\n|{rec} bothdot\n"}),
    }
    site.user("none", qmailDotMode="none")
    site.user("badcase", qmailDotMode="Both")
    site.start()
    for name in [*stores, "none", "badcase"]:
        site.send(site.addr(name), subject=name)
    for name in ("ldaponly", "withprog", "default", "dotonly", "dotnone", "both"):
        site.wait(lambda: subjects(stores[name]) == [name], f"{name}: default delivery")
    site.wait(lambda: subjects(t1) == ["both", "ldaponly"], "LDAP forwards (not for dotonly)")
    site.wait(lambda: subjects(t2) == ["both", "dotonly"], ".qmail forwards (dotonly, both)")
    for name in ("withprog", "withprog2", "default", "dotonly", "bothldap", "bothdot"):
        site.wait(lambda: len(site.programs_run(name)) == 1, f"program {name} ran once")
    assert site.programs_run("ldaponly") == [] and site.programs_run("dotonlyldap") == []
    both_t1 = [t for t in texts(t1) if b"Subject: both" in t][0]
    both_t2 = [t for t in texts(t2) if b"Subject: both" in t][0]
    assert both_t1.split(b"\n", 2)[2] == both_t2.split(b"\n", 2)[2], "one injection for both forwards"
    assert f"Delivered-To: both@{site.domain}\nPrecedence: bulk\n".encode() in both_t1
    assert b"Precedence: bulk" not in [t for t in texts(t1) if b"Subject: ldaponly" in t][0]
    bounces = site.wait_bounces(2)
    assert bounce_record(site.addr("none"), "Error: Non valid dot-mode found: none. (#5.3.5)") in bounces
    assert bounce_record(site.addr("badcase"), ILLEGAL) in bounces
    recorded = open(os.path.join(site.progout, site.programs_run("withprog")[0]), "rb").read()
    assert recorded.startswith(b"Subject: withprog\n") or b"\nSubject: withprog\n" in recorded


def test_dash_extension_rounds_catchalls_and_aliasdomains(site):
    foo = site.user("foo")
    foo_c = site.user("foo-catchall")
    foobar_c = site.user("foo-bar-catchall", qmailDotMode="dotonly", dotqmail={"-baz": "./baz/\n"})
    deep4 = site.user("a-b-c-d-catchall")
    deep5 = site.user("a-b-c-d-e-catchall")  # past DASH_EXT_LEVELS: never a round
    dom_c = site.user("catchall")
    write_control(site.home, "aliasdomains", f"{site.alias_domain.upper()}:{site.domain}")
    site.start()
    baz = os.path.join(os.path.dirname(foobar_c.rstrip("/")), "baz") + "/"
    cases = {"foo": foo, "FOO": foo, "foo-x": foo_c, "foo-bar-baz": baz, "a-b-c-d-e-f": deep4,
             "zzz": dom_c, "-foo": dom_c, "bar-foo": dom_c, "foo-catchall": foo_c}
    for local in cases:
        site.send(site.addr(local), subject=local)
    site.send(f"foo@{site.alias_domain}", subject="alias-foo")
    site.send(f"nobody-here@{site.alias_domain}", subject="alias-catchall")
    site.send(site.addr("foo-bar-qux"), subject="foo-bar-qux")
    expect = {}
    for local, store in cases.items():
        expect.setdefault(store, []).append(local)
    expect[foo].append("alias-foo")
    expect[dom_c].append("alias-catchall")
    for store, subs in expect.items():
        site.wait(lambda: subjects(store) == sorted(subs), f"{store} gets {sorted(subs)}")
    assert texts(deep5) == [] and texts(foobar_c) == []
    alias_copy = [t for t in texts(foo) if b"Subject: alias-foo" in t][0]
    assert f"\nDelivered-To: foo@{site.alias_domain}\n".encode() in alias_copy
    bounces = site.wait_bounces(1)  # dotonly catchall: .qmail-qux and .qmail-default both missing
    assert bounce_record(site.addr("foo-bar-qux"), NO_MAILBOX) in bounces


def _mess_size(home, msgid):
    return os.path.getsize(os.path.join(home, "queue", "mess", str(msgid % 23), str(msgid)))


def test_quota_at_limit_one_byte_over_count_and_defaults(site, slapd):  # noqa: F811
    write_control(site.home, "defaultquotasize", "2000")
    write_control(site.home, "defaultquotacount", "2")
    unlimited = dict(mailQuotaSize="0", mailQuotaCount="0")
    slapd.conn().modify_s(f"uid=alice.{site.domain},ou=people,{slapd.suffix}",
                          [(0, "mailQuotaSize", [b"0"]), (0, "mailQuotaCount", [b"0"])])
    body = b"x" * 500 + b"\n"
    sizes = [_mess_size(site.home, site.send(site.addr(n), subject="q", body=body)) for n in ("edge", "over")]
    edge = site.user("edge", mailQuotaSize=str(sizes[0]), mailQuotaCount="0")
    site.user("over", mailQuotaSize=str(sizes[1] - 1), mailQuotaCount="0")
    cnt = site.user("cnt", mailQuotaSize="0", mailQuotaCount="2")
    dq = site.user("dq")
    dq0 = site.user("dq0", **unlimited)
    site.start()
    site.wait(lambda: len(texts(edge)) == 1, "a message exactly the size of the quota is delivered")
    bounces = site.wait_bounces(1)
    assert bounce_record(site.addr("over"), OVER_QUOTA) in bounces
    lines = open(edge + "maildirsize").read().splitlines()
    assert lines[0] == f"{sizes[0]}S" and lines[-1] == f"{len(texts(edge)[0])} 1"
    assert [sum(int(x) for x in col) for col in zip(*(ln.split() for ln in lines[1:]))] == [len(texts(edge)[0]), 1]
    for i in range(3):  # one at a time: the count check is per delivery
        site.send(site.addr("cnt"), subject=f"c{i}")
        site.send(site.addr("dq"), subject=f"d{i}")
        site.wait(lambda: len(texts(cnt)) == min(i + 1, 2) and len(texts(dq)) == min(i + 1, 2)
                  and len(texts(site.alice)) == 1 + 2 * max(i - 1, 0), f"round {i}")
    bounces = site.wait_bounces(3)
    assert bounce_record(site.addr("cnt"), OVER_QUOTA) in bounces
    assert bounce_record(site.addr("dq"), OVER_QUOTA) in bounces, "defaultquotacount applies"
    site.send(site.addr("dq0"), subject="big", body=b"y" * 5000 + b"\n")
    site.send(site.addr("dq0"), subject="big2", body=b"y" * 5000 + b"\n")
    site.send(site.addr("dq0"), subject="big3", body=b"y" * 5000 + b"\n")
    site.wait(lambda: len(texts(dq0)) == 3, "mailQuotaSize/Count 0 override the defaults")
    assert not os.path.exists(dq0 + "maildirsize")
    new = site.user("dqsize")
    site.send(site.addr("dqsize"), subject="big", body=b"z" * 2500 + b"\n")
    bounces = site.wait_bounces(4)
    assert bounce_record(site.addr("dqsize"), OVER_QUOTA) in bounces, "defaultquotasize applies"
    assert texts(new) == []


def test_quota_warning_once_then_bounce(site):
    write_control(site.home, "quotawarning", "Your mailbox is nearly full.\n")
    warn = site.user("warn", mailQuotaSize="1100")
    site.start()
    for i in range(3):  # ~390 bytes queued, ~470 delivered: 35 %, then 77 % (warning), then over quota
        site.send(site.addr("warn"), subject=f"w{i}", body=b"x" * 300 + b"\n")
        site.wait(lambda: subjects(warn).count("QUOTA-WARNING!") == len(texts(warn)) - min(i + 1, 2)
                  and len(texts(site.alice)) == max(i - 1, 0), f"message {i}")
    bounces = site.wait_bounces(1)
    assert bounce_record(site.addr("warn"), OVER_QUOTA) in bounces
    warnings = [n for n in os.listdir(warn + "new") if ".QUOTA_WARNING," in n]
    assert len(warnings) == 1, "one warning, not one per delivery"
    text = open(warn + "new/" + warnings[0], "rb").read()
    assert b"Subject: QUOTA-WARNING!\n" in text and f"To: warn@{site.domain}\n".encode() in text
    assert text.endswith(b"\n\nYour mailbox is nearly full.\n\n")  # qmail-quotawarn adds one newline


DIRMAKER = """#!/bin/sh
# control/dirmaker for the test: argv home aliasempty; refuses homes named *nomake*
case "$1" in *nomake*) exit 100;; esac
mkdir -p "$1" && chmod 755 "$1"
"""


def test_mail_stores_dirmaker_and_attribute_checks(site):
    """ldapmessagestore prefix, homeDirectory alone, control/dirmaker for a missing home, and the
    check.c refusals of paths, ids and programs."""
    prefix = os.path.join(site.base, "stores")
    os.makedirs(os.path.join(prefix, "rel"), mode=0o755)
    write_control(site.home, "ldapmessagestore", prefix)  # no trailing '/': qmail-ldap appends one
    dirmaker = os.path.join(site.base, "dirmaker")
    with open(dirmaker, "w") as f:
        f.write(DIRMAKER)
    os.chmod(dirmaker, 0o755)
    write_control(site.home, "dirmaker", dirmaker)
    homeonly = site.user("homeonly", home=True, mailMessageStore=None)
    site.user("rel", mailMessageStore="rel/")
    made = os.path.join(site.base, "made", "home")
    add_user(site.server, f"made.{site.domain}", site.addr("made"), homeDirectory=made,
             mailMessageStore="./Maildir/")
    add_user(site.server, f"nomake.{site.domain}", site.addr("nomake"),
             homeDirectory=os.path.join(site.base, "nomake"), mailMessageStore="./Maildir/")
    refused = {"relhome": dict(homeDirectory="relative/home"), "dotdot": dict(mailMessageStore="/var/../etc/"),
               "lowuid": dict(qmailUID="50"), "shell": dict(qmailDotMode="ldapwithprog",
                                                           deliveryProgramPath="/bin/echo hi; rm -rf /")}
    for name, attrs in refused.items():
        site.user(name, **attrs)
    site.start()
    for name in ["homeonly", "rel", "made", "nomake", *refused]:
        site.send(site.addr(name), subject=name)
    site.wait(lambda: subjects(os.path.dirname(homeonly.rstrip("/")) + "/") == ["homeonly"],
              "homeDirectory alone: qmail-start's default delivery (./) in the home")
    site.wait(lambda: subjects(os.path.join(prefix, "rel") + "/") == ["rel"], "relative store under the prefix")
    site.wait(lambda: subjects(made + "/Maildir/") == ["made"], "dirmaker made the home, Maildir made too")
    bounces = site.wait_bounces(1 + len(refused))
    assert bounce_record(site.addr("nomake"), "Permanent error in automatic homedir creation. (#5.3.0)") in bounces
    for name in refused:
        assert bounce_record(site.addr(name), ILLEGAL) in bounces, name


def test_forwarding_loop_between_two_entries_bounces(site):
    site.user("ping", deliveryMode="nolocal", mailForwardingAddress=site.addr("pong"))
    site.user("pong", deliveryMode="nolocal", mailForwardingAddress=site.addr("ping"))
    site.start()
    site.send(site.addr("ping"), subject="loop")
    bounces = site.wait_bounces(1)
    assert bounce_record(site.addr("ping"), LOOPING) in bounces
    copy = bounces.split("--- Below this line is a copy of the message.\n", 1)[1]
    assert f"Delivered-To: pong@{site.domain}\n" in copy and f"Delivered-To: ping@{site.domain}\n" in copy
    time.sleep(0.5)
    assert len(texts(site.alice)) == 1, "the loop ends with that one bounce"


def test_ldaplocaldelivery_falls_back_to_users_cdb(site):
    """ldaplocaldelivery 1: the directory first; an address it does not know goes by users/cdb, then
    passwd, then the alias user."""
    write_control(site.home, "ldaplocaldelivery", "1")
    homes = {}
    lines = []
    for name in ("cdbonly", "dual"):
        homes[name] = os.path.join(site.base, "cdb", name) + "/"
        os.makedirs(homes[name], mode=0o755)
        lines.append(f"={name}:{name}:{os.getuid()}:{os.getgid()}:{homes[name]}:::")
    with open(os.path.join(site.home, "users", "assign"), "w") as f:
        f.write("\n".join(lines) + "\n.\n")
    subprocess.run([sys.executable, "-m", "engine.newu"], check=True, env={**os.environ, "QMAILHOME": site.home})
    dual = site.user("dual")
    site.start()
    for name in ("cdbonly", "dual", "zz-nobody-here"):
        site.send(site.addr(name), subject=name)
    site.wait(lambda: subjects(homes["cdbonly"]) == ["cdbonly"], "users/cdb answers for a name LDAP lacks")
    site.wait(lambda: subjects(dual) == ["dual"], "the directory wins over users/cdb")
    bounces = site.wait_bounces(1)
    assert bounce_record(site.addr("zz-nobody-here"), NO_MAILBOX) in bounces
    assert texts(homes["dual"]) == []


def test_ldapobjectclass_restricts_every_round(site):
    """control/ldapobjectclass: entries without that class are invisible to the lookup, in the exact
    and in the catchall rounds."""
    write_control(site.home, "ldapobjectclass", "qmailUser")
    person = ["top", "person", "organizationalPerson", "inetOrgPerson"]
    for local in ("plain", "catchall"):
        add_user(site.server, f"{local}.{site.domain}", site.addr(local), objectClass=person)
    real = site.user("real")
    site.start()
    site.send(site.addr("plain"), subject="plain")
    site.send(site.addr("real"), subject="real")
    bounces = site.wait_bounces(1)
    assert bounce_record(site.addr("plain"), NO_MAILBOX) in bounces
    site.wait(lambda: subjects(real) == ["real"], "a qmailUser entry is still found")


INJECTIONS = ["*", "vic*", "*tim", "v*m", "victim)(mail=*", "*)(|(mail=*", "x)(objectClass=*",
              "\\2a", "\\00", "victim\\00", "\\5c*", "(victim)", "victim\\"]


def test_filter_injection_matches_nobody(site):
    """Recipients with filter syntax in the local part find no entry: no delivery, a #5.1.1 bounce
    from delivery, 554 from RCPTCHECK; the real address still works."""
    victim = site.user("victim")
    port = free_port()
    write_control(site.home, "smtplisten", f"127.0.0.1:{port}")
    write_control(site.home, "smtpworkers", "1")
    write_control(site.home, "rcpthosts", site.domain)
    write_control(site.home, "smtprules", '127.:allow,RCPTCHECK=""')
    site.start()
    for local in INJECTIONS:
        site.send(site.addr(local), subject="inject")
    site.send(site.addr("victim"), subject="real")
    bounces = site.wait_bounces(len(INJECTIONS))
    for local in INJECTIONS:
        assert bounce_record(site.addr(local), NO_MAILBOX) in bounces, local
    assert subjects(victim) == ["real"]
    _wait_listening(port)
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.test")
        s.mail(site.addr("alice"))
        for local in INJECTIONS:
            if "\\" in local:
                continue  # qmail-smtpd takes a backslash as an escape inside <>
            code, text = s.docmd(f"RCPT TO:<{site.addr(local)}>")
            assert (code, text.decode()) == (554, NO_MAILBOX), local
        assert s.docmd(f"RCPT TO:<{site.addr('victim')}>")[0] == 250


def _wait_listening(port, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
