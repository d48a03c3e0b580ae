"""qmail-inject run as a subprocess against a recording queue program (qmail-inject(8), qmail-header(5)).

Expected texts were checked against qmail-ldap's own qmail-inject built from source.
"""

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import hfield
from engine import token822 as tk
from support.injectrun import Runner, stamps

ME = b"testhost.example.org"


@pytest.fixture
def inject(qmailhome, tmp_path):
    return Runner("engine.inject", qmailhome, str(tmp_path))


def write_control(home, name, value):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(value + "\n")


# -- added fields and the envelope ------------------------------------------------

def test_adds_date_message_id_from_and_cc_line(inject):
    r = inject(stdin=b"Subject: hi\n\nbody\n", args=["someone@example.com"])
    assert r.rc == 0, r.stderr
    assert stamps(r.message) == (
        b"Date: DATE\n"
        b"Message-ID: <ID@testhost.example.org>\n"
        b"From: joe@testhost.example.org\n"
        b"Cc: recipient list not shown: ;\n"
        b"Subject: hi\n\nbody\n")
    assert r.sender == b"joe@testhost.example.org"
    assert r.recipients == [b"someone@example.com"]


def test_date_and_message_id_are_now_and_this_pid(inject):
    before = time.gmtime(time.time() - 1)
    r = inject(stdin=b"To: a@b.c\n\n", args=[])
    date = [line for line in r.message.split(b"\n") if line.startswith(b"Date: ")][0]
    assert date.endswith(b" -0000")
    assert str(before.tm_year).encode() in date
    msgid = [line for line in r.message.split(b"\n") if line.startswith(b"Message-ID: ")][0]
    assert msgid.endswith(b".qmail@testhost.example.org>")


def test_existing_date_message_id_from_are_kept(inject):
    msg = b"Date: 1 Jan 2000 00:00:00 -0000\nMessage-ID: <x@y>\nFrom: bob@example.net\nTo: a@b.c\n\n"
    r = inject(stdin=msg)
    assert r.message == msg


def test_recipients_from_to_cc_bcc_apparently_to_and_bcc_removed(inject):
    r = inject(stdin=b"To: a@x.org, b@x.org\nCc: c@x.org\nBcc: secret@x.org\n"
                     b"Apparently-To: d@x.org\nSubject: s\n\nbody\n")
    assert r.rc == 0, r.stderr
    # qmail reads address lists right to left: that is the envelope order
    assert r.recipients == [b"b@x.org", b"a@x.org", b"c@x.org", b"secret@x.org", b"d@x.org"]
    assert b"secret" not in r.message
    assert b"Bcc" not in r.message
    assert b"Cc: recipient list not shown" not in r.message


def test_return_path_and_content_length_are_removed_return_path_is_the_sender(inject):
    r = inject(stdin=b"Return-Path: <bounces@lists.example>\nContent-Length: 12\nTo: a@b.c\n\nbody\n")
    assert r.sender == b"bounces@lists.example"
    assert b"Return-Path" not in r.message and b"Content-Length" not in r.message


def test_qmailinject_s_ignores_return_path(inject):
    r = inject(stdin=b"Return-Path: <bounces@lists.example>\nTo: a@b.c\n\n", env={"QMAILINJECT": "s"})
    assert r.sender == b"joe@testhost.example.org"
    assert b"Return-Path" not in r.message


def test_dash_f_overrides_return_path_and_environment(inject):
    r = inject(["-f", "owner@lists.example"], b"Return-Path: <x@y.z>\nTo: a@b.c\n\n",
               env={"QMAILSUSER": "u", "QMAILSHOST": "h.example"})
    assert r.sender == b"owner@lists.example"


def test_dash_f_is_rewritten_and_may_be_empty(inject):
    assert inject(["-f", "owner"], b"To: a@b.c\n\n").sender == b"owner@testhost.example.org"
    assert inject(["-f", ""], b"To: a@b.c\n\n").sender == b""


def test_qmailsuser_qmailshost_set_the_envelope_sender_only(inject):
    r = inject(stdin=b"To: a@b.c\n\n", env={"QMAILSUSER": "bounce", "QMAILSHOST": "lists.example.com"})
    assert r.sender == b"bounce@lists.example.com"
    assert b"From: joe@testhost.example.org\n" in r.message


# -- address rewriting -------------------------------------------------------------

def test_defaulthost_defaultdomain_plusdomain_from_control(inject, qmailhome):
    write_control(qmailhome, "defaulthost", "mail")
    write_control(qmailhome, "defaultdomain", "example.com")
    write_control(qmailhome, "plusdomain", "plus.example.net")
    r = inject(stdin=b"To: alice, bob@host, carol@mammoth.cs+, dave@[10.0.0.1], eve@x.y.\n\n")
    assert r.rc == 0, r.stderr
    assert r.header().endswith(b"To: alice@mail.example.com, bob@host.example.com,\n"
                                 b"  carol@mammoth.cs.plus.example.net, dave@[10.0.0.1], eve@x.y\n")
    assert r.recipients == [b"eve@x.y", b"dave@[10.0.0.1]", b"carol@mammoth.cs.plus.example.net",
                            b"bob@host.example.com", b"alice@mail.example.com"]
    assert r.sender == b"joe@mail.example.com"


def test_controls_default_to_me(inject):
    r = inject(stdin=b"To: alice, bob@host\n\n")
    assert r.recipients == [b"bob@host.testhost.example.org", b"alice@testhost.example.org"]


def test_environment_overrides_controls(inject, qmailhome):
    write_control(qmailhome, "defaulthost", "ignored.example")
    write_control(qmailhome, "idhost", "ids.example")
    r = inject(stdin=b"To: alice, bob@host+\n\n", env={
        "QMAILDEFAULTHOST": "h", "QMAILDEFAULTDOMAIN": "dom.example", "QMAILPLUSDOMAIN": "plus.example",
        "QMAILIDHOST": "env-ids.example"})
    assert set(r.recipients) == {b"alice@h.dom.example", b"bob@host.plus.example"}
    assert b".qmail@env-ids.example>\n" in r.message


def test_idhost_control(inject, qmailhome):
    write_control(qmailhome, "idhost", "ids.example.org")
    r = inject(stdin=b"To: a@b.c\n\n")
    assert stamps(r.message).startswith(b"Date: DATE\nMessage-ID: <ID@ids.example.org>\n")


def test_routes_comments_names_groups_and_quotes(inject):
    r = inject(stdin=b'To: <@relay1,@relay2:user@dest.example>, "a b"@x.org (Comment),\n'
                     b" Fred Smith <fred@x.org>, team: m1@x.org, m2@x.org;, user@x.org.\n\n")
    assert r.rc == 0, r.stderr
    assert r.header().endswith(
        b'To: <user@dest.example>, "a b"@x.org (Comment), Fred Smith <fred@x.org>,\n'
        b"  team: m1@x.org, m2@x.org;, user@x.org\n")
    assert set(r.recipients) == {b"user@dest.example", b"a b@x.org", b"fred@x.org",
                                 b"m1@x.org", b"m2@x.org", b"user@x.org"}


def test_null_and_bracket_addresses_are_left_alone(inject):
    r = inject(["-n"], b"Reply-To: <>, x@[]\nTo: a@b.c\n\n")
    assert b"Reply-To: <>, x@[]\n" in r.stdout


def test_space_separated_addresses_get_commas(inject):
    r = inject(["-n"], b"To: a@x.org b@x.org\n\n")
    assert b"To: a@x.org, b@x.org\n" in r.stdout


def test_long_address_lists_fold_at_80_columns(inject):
    to = b", ".join(b"user%d@example.com" % i for i in range(8))
    r = inject(["-n"], b"To: " + to + b"\n\n")
    lines = r.stdout.split(b"\n\n")[0].split(b"\n")
    to_lines = lines[lines.index(next(l for l in lines if l.startswith(b"To: "))):]
    assert to_lines == [
        b"To: user0@example.com, user1@example.com, user2@example.com,",
        b"  user3@example.com, user4@example.com, user5@example.com, user6@example.com,",
        b"  user7@example.com"]


# -- resent messages -------------------------------------------------------------------

def test_resent_message_uses_resent_recipients_and_stamps(inject):
    r = inject(stdin=b"To: orig@x.org\nDate: 1 Jan 2000 00:00:00 -0000\nResent-To: r1@x.org\n"
                     b"Resent-Bcc: r2@x.org\n\nbody\n")
    assert r.rc == 0, r.stderr
    assert r.recipients == [b"r1@x.org", b"r2@x.org"]
    assert stamps(r.header()) == (
        b"Resent-Date: DATE\n"
        b"Resent-Message-ID: <ID@testhost.example.org>\n"
        b"Resent-From: joe@testhost.example.org\n"
        b"To: orig@x.org\nDate: DATE\nResent-To: r1@x.org\n")  # the original Date is kept
    assert b"Date: 1 Jan 2000 00:00:00 -0000\n" in r.message


def test_resent_without_resent_to_gets_resent_cc_line(inject):
    r = inject(["-n"], b"Resent-From: me@x.org\n\n")
    assert b"Resent-Cc: recipient list not shown: ;\n" in r.stdout
    assert b"\nCc: " not in r.stdout and b"\nFrom: " not in r.stdout


# -- recipient strategy flags -----------------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    ([], [b"arg@x.org"]),                          # -A: arguments when given
    (["-A"], [b"arg@x.org"]),
    (["-a"], [b"arg@x.org"]),
    (["-h"], [b"hdr@x.org"]),
    (["-H"], [b"arg@x.org", b"hdr@x.org"]),
])
def test_recipient_strategy(inject, flags, expected):
    r = inject([*flags, "arg@x.org"], b"To: hdr@x.org\n\n")
    assert r.rc == 0, r.stderr
    assert r.recipients == expected


def test_header_recipients_when_no_arguments(inject):
    assert inject(stdin=b"To: hdr@x.org\n\n").recipients == [b"hdr@x.org"]


def test_argument_recipients_are_rewritten_and_quoted(inject):
    r = inject(["alice", "a b@x.org"], b"Subject: s\n\n")
    assert r.recipients == [b"alice@testhost.example.org", b"a b@x.org"]


# -- From, names, QMAILINJECT letters ----------------------------------------------------

@pytest.mark.parametrize("env, from_line", [
    ({"QMAILUSER": "q", "MAILUSER": "m", "USER": "u", "LOGNAME": "l"}, b"From: q@testhost.example.org"),
    ({"MAILUSER": "m", "USER": "u", "LOGNAME": "l"}, b"From: m@testhost.example.org"),
    ({"USER": "u", "LOGNAME": "l"}, b"From: u@testhost.example.org"),
    ({"USER": None, "LOGNAME": "l"}, b"From: l@testhost.example.org"),
    ({"USER": None}, b"From: anonymous@testhost.example.org"),
    ({"QMAILHOST": "qh.example", "MAILHOST": "mh.example"}, b"From: joe@qh.example"),
    ({"MAILHOST": "mh.example"}, b"From: joe@mh.example"),
    ({"QMAILNAME": "Q Name", "MAILNAME": "M", "NAME": "N"}, b'From: "Q Name" <joe@testhost.example.org>'),
    ({"MAILNAME": "M. Name", "NAME": "N"}, b'From: "M. Name" <joe@testhost.example.org>'),
    ({"NAME": "N"}, b'From: "N" <joe@testhost.example.org>'),
    ({"NAME": "Joe User", "QMAILINJECT": "c"}, b"From: joe@testhost.example.org (Joe User)"),
    ({"QMAILUSER": "john smith"}, b'From: "john smith"@testhost.example.org'),
])
def test_default_from(inject, env, from_line):
    r = inject(["-n"], b"To: a@b.c\n\n", env=env)
    assert from_line + b"\n" in r.stdout, r.stdout


def test_qmailinject_f_replaces_from_and_i_replaces_message_id(inject):
    r = inject(["-n"], b"From: forged@x.org\nMessage-ID: <old@x.org>\nTo: a@b.c\n\n",
               env={"QMAILINJECT": "fi"})
    assert b"forged" not in r.stdout and b"old@x.org" not in r.stdout
    assert b"From: joe@testhost.example.org\n" in r.stdout
    assert b".qmail@testhost.example.org>\n" in r.stdout


def test_qmailinject_r_per_recipient_verp(inject):
    assert inject(stdin=b"To: a@b.c\n\n", env={"QMAILINJECT": "r"}).sender == \
        b"joe-@testhost.example.org-@[]"
    r = inject(stdin=b"Return-Path: <list@x.org>\nTo: a@b.c\n\n", env={"QMAILINJECT": "r"})
    assert r.sender == b"list@x.org-@[]"


def test_qmailinject_m_per_message_verp(inject):
    start = int(time.time())
    sender = inject(stdin=b"To: a@b.c\n\n", env={"QMAILINJECT": "m"}).sender
    user, host = sender.split(b"@")
    assert host == ME
    name, stamp = user.split(b"-")
    when, pid = stamp.split(b".")
    assert name == b"joe" and start - 1 <= int(when) <= start + 60 and int(pid) > 0


def test_mail_followup_to_for_listed_lists(inject, tmp_path):
    (tmp_path / "lists").write_text("# my lists\nQMAIL@list.cr.yp.to\n")
    r = inject(["-n"], b"To: qmail@list.cr.yp.to, other@x.org\nCc: c@x.org\n\n",
               env={"QMAILMFTFILE": "lists"})  # relative to the current directory
    assert b"Mail-Followup-To: c@x.org,\n  qmail@list.cr.yp.to,\n  other@x.org\n" in r.stdout
    r = inject(["-n"], b"To: other@x.org\n\n", env={"QMAILMFTFILE": "lists"})
    assert b"Mail-Followup-To" not in r.stdout
    r = inject(["-n"], b"To: qmail@list.cr.yp.to\nMail-Followup-To: me@x.org\n\n",
               env={"QMAILMFTFILE": "lists"})
    assert r.stdout.count(b"Mail-Followup-To") == 1


# -- -n, header/body boundaries ----------------------------------------------------------

def test_dash_n_prints_with_return_path_and_queues_nothing(inject):
    r = inject(["-n", "-f", "snd@x.org"], b"To: a@b.c\nSubject: s\n\nbody\n")
    assert r.rc == 0 and not r.queued
    assert stamps(r.stdout) == (b"Return-Path: <snd@x.org>\nDate: DATE\n"
                                b"Message-ID: <ID@testhost.example.org>\nFrom: joe@testhost.example.org\n"
                                b"To: a@b.c\nSubject: s\n\nbody\n")


def test_dash_capital_n_queues_after_dash_n(inject):
    r = inject(["-n", "-N"], b"To: a@b.c\n\n")
    assert r.queued and r.stdout == b""


def test_mbox_from_line_non_header_line_and_missing_final_newline(inject):
    r = inject(["-n"], b"From joe Mon Jan 1\nTo: a@b.c\nnot a header\nlast")
    header, body = r.stdout.split(b"\n\n", 1)
    assert b"MBOX-Line: From joe Mon Jan 1\n" in header + b"\n"
    assert body == b"not a header\nlast\n"


def test_continuation_lines_and_8bit_body_survive(inject):
    body = "Grüße\r\n\x00\xff".encode("latin-1") + "ünïcode\n".encode()
    r = inject(stdin=b"To: a@b.c\nSubject: long\n  subject\n\tline\n\n" + body)
    assert b"Subject: long\n  subject\n\tline\n\n" + body in r.message


def test_header_only_message(inject):
    r = inject(["-n"], b"To: a@b.c\nSubject: s")
    assert r.stdout.endswith(b"To: a@b.c\nSubject: s\n")


# -- errors -------------------------------------------------------------------------------

def test_unparsable_recipient_header_is_permanent(inject):
    r = inject(stdin=b"To: bad (comment\n\nbody\n")
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: unable to parse this line:\nTo: bad (comment\n")
    assert not r.queued


def test_unbalanced_group_is_permanent(inject):
    r = inject(stdin=b"To: a:\n\n")
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: unable to parse this line:\nTo: a:\n")


def test_unparsable_argument(inject):
    r = inject(["x@)bad"], b"To: a@b.c\n\n")
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: unable to parse address: x@)bad\n")


@pytest.mark.parametrize("args, message", [
    (["-x"], b"qmail-inject: illegal option -- x\n"),
    (["-f"], b"qmail-inject: option requires an argument -- f\n"),
])
def test_bad_options(inject, args, message):
    r = inject(args, b"To: a@b.c\n\n")
    assert (r.rc, r.stderr, r.queued) == (100, message, False)


def test_no_recipients_is_refused(inject):
    r = inject(stdin=b"Subject: nobody\n\nbody\n")
    assert (r.rc, r.stderr, r.queued) == (100, b"qmail-inject: fatal: no recipients\n", False)
    r = inject(["-a"], b"To: a@b.c\n\n")
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: no recipients\n")


@pytest.mark.parametrize("code, rc, text", [
    ("31", 100, b"mail server permanently rejected message (#5.3.0)"),
    ("11", 100, b"envelope address too long for qq (#5.1.3)"),
    ("53", 111, b"qq write error or disk full (#4.3.0)"),
    ("81", 111, b"qq internal bug (#4.3.0)"),
])
def test_queue_failures(inject, code, rc, text):
    r = inject(stdin=b"To: a@b.c\n\n", env={"FAKEQQ_EXIT": code})
    assert (r.rc, r.stderr) == (rc, b"qmail-inject: fatal: " + text + b"\n")


def test_queue_custom_error_text(inject):
    r = inject(stdin=b"To: a@b.c\n\n", env={"FAKEQQ_EXIT": "82", "FAKEQQ_ERRTEXT": "DVirus found (#5.3.0)"})
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: Virus found (#5.3.0)\n")


def test_queue_program_missing(inject, tmp_path):
    r = inject(stdin=b"To: a@b.c\n\n", env={"QMAILQUEUE": str(tmp_path / "none")})
    assert (r.rc, r.stderr) == (111, b"qmail-inject: fatal: unable to exec qq (#4.3.0)\n")


def test_missing_qmail_home(inject, tmp_path):
    r = inject(stdin=b"To: a@b.c\n\n", env={"QMAILHOME": str(tmp_path / "none")})
    assert (r.rc, r.stderr) == (111, b"qmail-inject: fatal: internal bug\n")


# -- the token822 port, in process ----------------------------------------------------------

def test_token822_parse_unparse_examples():
    toks = tk.parse(b'To: "a \\" b" (c (d) e) [1.2\\]] x.y@z')
    assert toks == [(tk.ATOM, b"To"), (tk.COLON, b""), (tk.QUOTE, b'a " b'), (tk.COMMENT, b"c d e"),
                    (tk.LITERAL, b"1.2]"), (tk.ATOM, b"x"), (tk.DOT, b""), (tk.ATOM, b"y"),
                    (tk.AT, b""), (tk.ATOM, b"z")]
    assert tk.unparse(toks, 80) == b'To: "a \\" b" (c d e) [1.2\\]] x.y@z\n'
    assert tk.unquote(toks[2:]) == b'a " b[1.2]]x.y@z'
    for bad in (b"To: (x", b'To: "x', b"To: [x", b"To: )x", b"To: ]x"):
        with pytest.raises(tk.ParseError):
            tk.parse(bad)


def test_hfield_known_and_valid():
    assert hfield.known(b"TO :x") == hfield.TO
    assert hfield.known(b"resent-message-id: x") == hfield.R_MESSAGEID
    assert hfield.known(b"X-To: x") == 0
    assert hfield.valid(b"X-Foo \t: bar") and not hfield.valid(b"X Foo: bar")
    assert not hfield.valid(b": bar") and not hfield.valid(b"no colon")


# no backslash: qmail keeps an escaped special (\>) as a bare atom character, which cannot round-trip
_address_text = st.text(alphabet='abc .,@<>:;"()[]\t', max_size=40).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(_address_text)
def test_unparse_output_reparses_to_the_same_addresses(text):
    """Printing rewritten tokens and reading them back must not change any address."""
    try:
        toks = tk.addrlist(tk.parse(b"To: " + text), lambda addr: None)
    except tk.ParseError:
        return
    first = []
    tk.addrlist(toks, lambda addr: first.append(tk.unquote(addr[::-1])))
    again = []
    tk.addrlist(tk.parse(tk.unparse(toks, 80)), lambda addr: again.append(tk.unquote(addr[::-1])))
    assert again == first


# -- end to end ---------------------------------------------------------------------------

def test_message_lands_in_the_real_queue(inject, qmailhome):
    """No QMAILQUEUE: the installed qmail-queue (engine.queue) gets the message."""
    r = inject(["-f", "snd@x.org"], b"To: alice@example.com\nSubject: e2e\n\nhello\n",
               env={"QMAILQUEUE": None})
    assert (r.rc, r.stderr) == (0, b"")
    queue = os.path.join(qmailhome, "queue")
    todo = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(queue, "todo")) for f in files]
    assert len(todo) == 1
    with open(todo[0], "rb") as f:
        assert f.read().endswith(b"\0Fsnd@x.org\0Talice@example.com\0")
    mess = os.path.join(queue, "mess", os.path.basename(os.path.dirname(todo[0])), os.path.basename(todo[0]))
    with open(mess, "rb") as f:
        text = f.read()
    assert text.startswith(b"Received: (qmail ")
    assert text.endswith(b"To: alice@example.com\nSubject: e2e\n\nhello\n")
