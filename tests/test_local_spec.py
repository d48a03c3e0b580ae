"""The local delivery side checked against the spec line by line (§1.3 qmail-lspawn / qmail-local
exit codes, §3.3–3.9 the directory rules, §4.1–4.7 qmail-local, quotas, quota warnings,
directory creation, qmail-reply).

Most checks run qmail-local's logic in-process on a real home directory with real helper
programs (small shell scripts standing in for qmail-reply / qmail-group / qmail-quotawarn where
the test needs to see when and how they ran, the recording queue program of
tests/support/fakequeue.py for what gets injected); the LDAP-derived parts run against the
session's slapd through qmail-lspawn's Worker.
"""

import os
import stat

import pytest

from engine import local, lspawn, maildir, qldap, quotawarn, reply
from engine.local import Recipient
from support.fakequeue import read_envelope, read_message, record_queue
from support.ldapenv import fresh_domain, point_at, write_control
from support.slapd import add_user, slapd  # noqa: F401

MESSAGE = b"Subject: hello\n\nbody\n"


# --- helpers ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _qmailhome(qmailhome):
    """Every test has a qmail home (QMAILHOME): the queue program and helpers run from there."""
    return qmailhome


def make_home(base, name="joe"):
    home = os.path.join(base, name)
    os.makedirs(home)
    os.chmod(home, 0o755)
    return home


def message_fd(base, data=MESSAGE):
    path = os.path.join(base, "message")
    with open(path, "wb") as f:
        f.write(data)
    return os.open(path, os.O_RDONLY)


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def fake_bin(base, **programs):
    """A directory of shell scripts named after qmail helpers, to put first on PATH."""
    d = os.path.join(base, "fakebin")
    os.makedirs(d, exist_ok=True)
    for name, body in programs.items():
        script(os.path.join(d, name.replace("_", "-")), body)
    return d


def rcpt(home, ext="", dash="", sender="alice@example.org", local_part="joe", aliasempty="./Maildir/"):
    return Recipient(user="joe", home=home, local=local_part, dash=dash, ext=ext, host="example.test",
                     sender=sender, aliasempty=aliasempty)


def deliver(base, r, env, data=MESSAGE, doit=True, say=None):
    fd = message_fd(base, data)
    cwd = os.getcwd()
    try:
        return local.deliver(r, fd, doit=doit, env=env, say=say)
    finally:
        os.chdir(cwd)
        os.close(fd)


def base_env(base, **extra):
    qq = os.path.join(base, "queue-out")
    os.makedirs(qq, exist_ok=True)
    env = {"PATH": f"{os.path.join(base, 'fakebin')}:/usr/bin:/bin", "QMAILQUEUE": record_queue(qq),
           "AUTOMAILDIRMAKE": "1"}
    env.update(extra)
    return env, qq


def new_files(maildir_path):
    d = os.path.join(maildir_path, "new")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


# --- §1.3 qmail-lspawn's report for every child exit ---------------------------------------------

LSPAWN_REPORTS = [
    (112, b"Z", b"Internal qmail-lspawn bug."),
    (113, b"Z", b"Not allowed to perform deliveries as root."),
    (115, b"Z", b"NFS failure in qmail-local."),
    (116, b"Z", b"Unable to find alias user!"),
    (117, b"Z", b"Trouble reading users/cdb in qmail-lspawn."),
    (118, b"Z", b"Temporary failure in qmail-lspawn."),
    (119, b"Z", b"Out of memory in qmail-lspawn."),
    (120, b"Z", b"Unable to run qmail-local."),
    (126, b"D", b"Unable to run qmail-local."),
    (121, b"Z", b"Unable to run qmail-getpw."),
    (150, b"D", b"The message exeeded the maximum size the user accepts. (#5.2.3)"),
    (152, b"Z", b"Temporary failure in LDAP lookup. (#4.4.3)."),
    (153, b"Z", b"Unable to login into LDAP server, bad credentials. (#4.4.3)"),
    (154, b"Z", b"Timeout while performing search on LDAP server. (#4.4.3)"),
    (155, b"Z", b"Unable to contact LDAP server. (#4.4.3)"),
    (156, b"D", b"Too many results returned but needs to be unique. (#5.3.5)"),
    (157, b"D", b"LDAP attribute is not given but mandatory. (#5.3.5)"),
    (158, b"D", b"Illegal value in LDAP attribute. (#5.3.5)"),
    (159, b"D", b"Mailaddress is administratively disabled. (#5.2.1)"),
    (160, b"D", b"Sorry, no mailbox here by that name. (#5.1.1)"),
    (162, b"Z", b"Temporary error while executing qmail-forward. (#4.4.4)"),
    (163, b"D", b"Permanent error while executing qmail-forward. (#5.4.4)"),
    (167, b"Z", b"Temporary error in automatic homedir creation. (#4.3.0)"),
    (168, b"D", b"Permanent error in automatic homedir creation. (#5.3.0)"),
    (169, b"Z", b"Automatic homedir creator crashed (#4.3.0)"),
    # qmail-local's own exits keep its output after the letter
    (0, b"K", b"did 0+0+1\n"), (111, b"Z", b"did 0+0+1\n"), (71, b"Z", b"did 0+0+1\n"),
    (74, b"Z", b"did 0+0+1\n"), (75, b"Z", b"did 0+0+1\n"), (100, b"D", b"did 0+0+1\n"),
    (1, b"D", b"did 0+0+1\n"), (99, b"D", b"did 0+0+1\n"),
]


@pytest.mark.parametrize("code,letter,text", LSPAWN_REPORTS)
def test_lspawn_report_for_each_exit_code(code, letter, text):
    assert lspawn.report(code, b"did 0+0+1\n") == (letter, text)


def test_lspawn_report_stops_at_a_nul():
    assert lspawn.report(0, b"program said\0hidden\ndid 0+0+1\n") == (b"K", b"program said")


def test_lspawn_empty_local_part_is_success_without_delivery(qmailhome):
    w = lspawn.Worker(qmailhome, "./Maildir/", None)
    assert w.deliver(b"0/123", b"a@b.test", b"@example.test") == (b"K", b"")
    assert w.deliver(b"0/123", b"a@b.test", b"nohost") == (b"D", b"Sorry, address must include host name. (#5.1.3)")


# --- §1.3 program exit codes in qmail-local -------------------------------------------------------

@pytest.mark.parametrize("code,want", [(0, 0), (99, 0), (100, 100), (64, 100), (65, 100), (70, 100),
                                       (76, 100), (77, 100), (78, 100), (112, 100), (1, 111), (75, 111),
                                       (111, 111), (101, 111)])
def test_program_exit_codes(tmp_path, code, want):
    home = make_home(str(tmp_path))
    with open(os.path.join(home, ".qmail"), "w") as f:
        f.write(f"|exit {code}\n|echo second line ran\n")
    env, _ = base_env(str(tmp_path))
    got, text = deliver(str(tmp_path), rcpt(home), env)
    assert got == want
    assert ("second line ran" in text) == (code == 0)


def test_crashed_program(tmp_path):
    home = make_home(str(tmp_path))
    with open(os.path.join(home, ".qmail"), "w") as f:
        f.write("|kill -9 $$\n")
    env, _ = base_env(str(tmp_path))
    assert deliver(str(tmp_path), rcpt(home), env) == (111, "Aack, child crashed. (#4.3.0)\n")


# --- §4.1 the instruction list ------------------------------------------------------------------

def test_ldap_default_delivery_of_several_lines(tmp_path):
    """The default delivery is appended to the LDAP lines as text: every line of it runs."""
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path), QMAILDOTMODE="ldaponly")
    code, text = deliver(str(tmp_path), rcpt(home, aliasempty="./Maildir/\n|echo second instruction"), env)
    assert (code, text) == (0, "second instruction\ndid 1+0+1\n")
    assert len(new_files(os.path.join(home, "Maildir"))) == 1


def test_ldap_lines_lose_trailing_blanks(tmp_path):
    home = make_home(str(tmp_path))
    env, qq = base_env(str(tmp_path), QMAILDOTMODE="ldaponly", QMAILFORWARDS="fwd@elsewhere.test \t",
                       QMAILMODE="nolocal")
    assert deliver(str(tmp_path), rcpt(home), env)[0] == 0
    assert read_envelope(qq) == (b"alice@example.org", [b"fwd@elsewhere.test"])


def test_ldap_instruction_order_and_bulk_forward(tmp_path):
    """Programs, then forwards, then the default delivery; the forwards go out as one message."""
    home = make_home(str(tmp_path))
    env, qq = base_env(str(tmp_path), QMAILDOTMODE="ldapwithprog", QMAILDELIVERYPROGRAM="echo p1:echo p2",
                       QMAILFORWARDS="f1@x.test:f2@y.test")
    code, text = deliver(str(tmp_path), rcpt(home), env)
    assert (code, text.splitlines()[:2]) == (0, ["p1", "p2"])
    assert text.splitlines()[2:] == ["did 1+2+2", f"qp {text.split('qp ')[1].strip()}"]
    assert read_envelope(qq) == (b"alice@example.org", [b"f1@x.test", b"f2@y.test"])
    assert read_message(qq) == b"Delivered-To: joe@example.test\nPrecedence: bulk\n" + MESSAGE


def test_reply_runs_while_modes_are_parsed(tmp_path):
    """qmail-reply runs before the .qmail file is looked at: with a writable .qmail (both mode) the
    reply has gone out, then the delivery defers."""
    base = str(tmp_path)
    home = make_home(base)
    with open(os.path.join(home, ".qmail"), "w") as f:
        f.write("./Maildir/\n")
    os.chmod(os.path.join(home, ".qmail"), 0o602)
    log = os.path.join(base, "reply.log")
    fake_bin(base, qmail_reply=f'echo "$@|$NEWSENDER|${{DEFAULT-unset}}" >> {log}\n')
    env, _ = base_env(base, QMAILDOTMODE="both", QMAILMODE="reply", QMAILREPLYTEXT="away")
    assert deliver(base, rcpt(home), env) == (111, "Uh-oh: .qmail file is writable. (#4.7.0)\n")
    with open(log) as f:
        assert f.read() == "./Maildir/|alice@example.org|unset\n"


@pytest.mark.parametrize("exit_code,want", [(0, 0), (100, 100), (111, 111), (75, 111)])
def test_reply_failure_stops_the_delivery(tmp_path, exit_code, want):
    base = str(tmp_path)
    home = make_home(base)
    fake_bin(base, qmail_reply=f"exit {exit_code}\n")
    env, _ = base_env(base, QMAILDOTMODE="ldaponly", QMAILMODE="reply", QMAILREPLYTEXT="away")
    code, text = deliver(base, rcpt(home), env)
    assert code == want
    assert bool(new_files(os.path.join(home, "Maildir"))) == (want == 0)
    if want == 0:
        assert text == "did 1+1+0\n"  # the reply counts as a forward


def test_reply_exit_99_runs_only_the_first_line(tmp_path):
    base = str(tmp_path)
    home = make_home(base)
    fake_bin(base, qmail_reply="exit 99\n")
    env, _ = base_env(base, QMAILDOTMODE="ldapwithprog", QMAILMODE="reply", QMAILREPLYTEXT="away",
                      QMAILDELIVERYPROGRAM="echo first:echo second")
    assert deliver(base, rcpt(home), env) == (0, "first\ndid 0+1+1\n")


def test_reply_needs_sender_and_text(tmp_path):
    base = str(tmp_path)
    home = make_home(base)
    fake_bin(base, qmail_reply="echo replied\n")
    env, _ = base_env(base, QMAILDOTMODE="ldaponly", QMAILMODE="reply")
    assert deliver(base, rcpt(home), env) == (
        0, "Warning: Reply mode is on but there is no reply text.\ndid 1+0+0\n")
    env["QMAILREPLYTEXT"] = "away"
    assert deliver(base, rcpt(home, sender=""), env) == (0, "did 1+0+0\n")
    assert deliver(base, rcpt(home, aliasempty="Mailbox"), dict(env, QMAILMODE="reply:nolocal")) == (
        0, "replied\ndid 0+1+0\n")


def test_group_shortcut(tmp_path):
    base = str(tmp_path)
    home = make_home(base)
    fake_bin(base, qmail_group='echo "group $#:$1"\n')
    env, _ = base_env(base, QLDAPGROUP="cn=list,dc=x", QMAILDOTMODE="bogus", QMAILFORWARDS="f@x.test")
    assert deliver(base, rcpt(home), env) == (0, "group 1:./Maildir/\ndid 0+0+1\n")
    assert deliver(base, rcpt(home, aliasempty="Maildir/"), env) == (0, "group 0:\ndid 0+0+1\n")
    assert new_files(os.path.join(home, "Maildir")) == []


def test_n_mode_describes_the_ldap_delivery(tmp_path):
    base = str(tmp_path)
    home = make_home(base)
    said = []
    env, _ = base_env(base, QMAILDOTMODE="ldapwithprog", MAILDIRQUOTA="1000S",
                      QMAILMODE="noforward:reply:noprogram", QMAILREPLYTEXT="away",
                      QMAILFORWARDS="f@x.test", QMAILDELIVERYPROGRAM="prog")
    code, text = deliver(base, rcpt(home), env, doit=False, say=said.append)
    assert said == ["quota defined as: 1000S", "DOTMODE_LDAPWITHPROG ", "no mail forwarding ",
                    "reply to alice@example.org", "replytext away", "no program delivery ",
                    "maildir ./Maildir/"]
    assert (code, text) == (0, "did 1+1+0\n")
    said.clear()
    env.update(QMAILDOTMODE="dotonly", MAILDIRQUOTA="")
    with open(os.path.join(home, ".qmail"), "w") as f:
        f.write("&fwd@x.test\n|prog\n./Mailbox\n")
    assert deliver(base, rcpt(home), env, doit=False, say=said.append) == (0, "did 1+1+1\n")
    assert said == ["unlimited quota", "DOTMODE_DOTONLY ", "forward fwd@x.test", "program prog", "mbox ./Mailbox"]


@pytest.mark.parametrize("mode", ["none", "", "LdapOnly ", "dot"])
def test_invalid_dot_mode(tmp_path, mode):
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path), QMAILDOTMODE=mode)
    assert deliver(str(tmp_path), rcpt(home), env) == (100, f"Error: Non valid dot-mode found: {mode}. (#5.3.5)\n")


def test_qmail_file_in_a_symlink_loop_is_no_file(tmp_path):
    """qmeexists(): only temporary errors, EPERM and EACCES defer; ELOOP means no such file."""
    home = make_home(str(tmp_path))
    os.symlink(".qmail-loop", os.path.join(home, ".qmail-loop"))
    env, _ = base_env(str(tmp_path))
    r = rcpt(home, dash="-", ext="loop", local_part="joe-loop")
    assert deliver(str(tmp_path), r, env) == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")


def test_sticky_home_is_a_warning_with_n(tmp_path):
    home = make_home(str(tmp_path))
    os.chmod(home, 0o1755)
    env, _ = base_env(str(tmp_path))
    said = []
    assert deliver(str(tmp_path), rcpt(home), env, doit=False, say=said.append) == (
        0, "Warning: home directory is sticky.\ndid 1+0+0\n")
    assert deliver(str(tmp_path), rcpt(home), env)[0] == 111


# --- §4.4 the quota warning comes before the message is written ----------------------------------

def fail_quotawarn(qmailhome, code):
    path = os.path.join(qmailhome, "bin", "qmail-quotawarn")
    os.unlink(path)
    script(path, f"exit {code}\n")


@pytest.mark.parametrize("code,want", [(111, 111), (1, 100)])
def test_failing_quota_warning_leaves_nothing_delivered(qmailhome, tmp_path, code, want):
    write_control(qmailhome, "quotawarning", "You are near your quota.")
    fail_quotawarn(qmailhome, code)
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path), MAILDIRQUOTA="130S", QMAILHOME=qmailhome)
    got, _ = deliver(str(tmp_path), rcpt(home), env, data=b"x" * 100 + b"\n")
    assert got == want
    assert new_files(os.path.join(home, "Maildir")) == []
    mbox = os.path.join(home, "Mailbox")
    got, _ = deliver(str(tmp_path), rcpt(home, aliasempty="./Mailbox"), env, data=b"x" * 100 + b"\n")
    assert got == want and not os.path.exists(mbox)


def test_quota_warning_then_message(qmailhome, tmp_path):
    write_control(qmailhome, "quotawarning", "You are near your quota.")
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path), MAILDIRQUOTA="130S", QMAILHOME=qmailhome)
    assert deliver(str(tmp_path), rcpt(home), env, data=b"x" * 100 + b"\n") == (0, "did 1+0+0\n")
    names = new_files(os.path.join(home, "Maildir"))
    assert len(names) == 2 and sum(".QUOTA_WARNING," in n for n in names) == 1


def test_quotawarn_mbox_line_matches_in_any_case(tmp_path):
    mbox = str(tmp_path / "mbox")
    with open(mbox, "wb") as f:
        f.write(b"From x\nqmail-quotawarning: JOE@Example.TEST\n\n")
    assert quotawarn.mbox_warned(mbox, b"Qmail-QuotaWarning: joe@example.test\n")
    assert not quotawarn.mbox_warned(mbox, b"Qmail-QuotaWarning: ann@example.test\n")
    assert not quotawarn.mbox_warned(str(tmp_path / "none"), b"Qmail-QuotaWarning: joe@example.test\n")


# --- §4.5 dirmaker ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body,want", [("mkdir -p \"$1\"\n", 0), ("exit 100\n", lspawn.QLX_DIRMAKEHARD),
                                       ("exit 3\n", lspawn.QLX_DIRMAKESOFT), ("exit 111\n", lspawn.QLX_DIRMAKESOFT),
                                       ("kill -9 $$\n", lspawn.QLX_DIRMAKECRASH)])
def test_dirmaker_exit_codes(tmp_path, body, want):
    maker = script(str(tmp_path / "dirmaker"), body)
    assert lspawn.make_home(maker, str(tmp_path / "newhome"), "./Maildir/") == want


def test_dirmaker_that_cannot_run_is_permanent(tmp_path):
    assert lspawn.make_home(str(tmp_path / "missing"), str(tmp_path / "h"), "./Maildir/") == lspawn.QLX_DIRMAKEHARD
    assert lspawn.make_home(str(tmp_path / "missing"), str(tmp_path), "./Maildir/") == 0  # home exists


# --- §3.4–3.7 the order of checks after a hit, on entries ----------------------------------------

CFG = qldap.Config(servers=["x"], me="me.example.test", cluster=True)
RND = qldap.Round(0, "joe@example.test", "", "")


def entry(**attrs):
    base = {"objectClass": ["qmailUser"]}
    base.update(attrs)
    return qldap.Entry("uid=joe,dc=x", {k: [v.encode() for v in (vals if isinstance(vals, list) else [vals])]
                                        for k, vals in base.items()})


@pytest.mark.parametrize("attrs,size,want", [
    # accountStatus comes first: a disabled entry bounces even when too big or broken
    (dict(accountStatus="disabled", mailSizeMax="1", homeDirectory="relative"), 10, qldap.Disabled),
    (dict(accountStatus="DELETED", mailSizeMax="1"), 10, qldap.Deleted),
    # then mailSizeMax (the whole queued file), before the cluster check
    (dict(mailSizeMax="9", mailHost="other.example.test"), 10, qldap.MaxSize),
    (dict(mailSizeMax="10", mailHost="other.example.test"), 10, "cluster"),
    # a broken quota attribute is caught before the size test
    (dict(mailQuotaSize="12x", mailSizeMax="1"), 10, qldap.IllVal),
    (dict(mailSizeMax=["1", "2"]), 10, qldap.TooMany),
    # the cluster forward needs nothing else from the entry
    (dict(mailHost="other.example.test", homeDirectory="relative"), 10, "cluster"),
    # mail store before uid: no store and no forward -> NEEDED even with a bad uid
    (dict(uid="-bad"), 10, qldap.Needed),
    (dict(uid="-bad", mailForwardingAddress="f@x.test"), 10, "forwardonly"),
    (dict(homeDirectory="/home/joe", uid="-bad"), 10, qldap.IllVal),
    (dict(homeDirectory="/home/joe", uid="joe"), 10, qldap.Needed),  # no qmailUID, no ldapuid
    (dict(homeDirectory="/home/joe", uid="joe", qmailUID="99", qmailGID="100"), 10, qldap.IllVal),
    (dict(homeDirectory="/home/joe", uid="joe", qmailUID="100", qmailGID="65536"), 10, qldap.IllVal),
    (dict(homeDirectory="/home/joe", uid="joe", qmailUID="100", qmailGID="65535",
          deliveryProgramPath="prog;rm"), 10, qldap.IllVal),
    (dict(homeDirectory="/home/joe", uid="joe", qmailUID="100", qmailGID="100", qmailDotMode="Both"), 10,
     qldap.IllVal),
    (dict(homeDirectory="/home/joe", uid="joe", qmailUID="100", qmailGID="100", qmailDotMode="LDAPONLY"), 10,
     "local"),
    (dict(mailHost="ME.example.test", homeDirectory="/home/joe", uid="joe", qmailUID="100",
          qmailGID="100"), 10, "local"),
])
def test_order_of_checks_after_a_hit(attrs, size, want):
    e = entry(**attrs)
    if isinstance(want, str):
        assert qldap.resolve(e, CFG, "joe@example.test", RND, size).kind == want
    else:
        with pytest.raises(want):
            qldap.resolve(e, CFG, "joe@example.test", RND, size)


def test_local_env_from_an_entry():
    d = qldap.resolve(entry(homeDirectory="/home/joe", mailMessageStore="./Maildir/", uid="joe", qmailUID="100",
                            qmailGID="100", mailQuotaCount="0", mailQuotaSize="5000",
                            deliveryMode=["Reply", "NoLocal"], mailReplyText="away",
                            mailForwardingAddress=["a@x.test", "b:c@y.test"], qmailDotMode="LdapOnly",
                            objectClass=["qmailUser", "QMAILGROUPextra"]),
                      qldap.Config(servers=["x"], quota_count=7), "joe@example.test", RND, 1)
    assert (d.home, d.aliasempty, d.user, d.uid, d.gid) == ("/home/joe", "./Maildir/", "joe", 100, 100)
    assert d.local_env() == {"QLDAPGROUP": "uid=joe,dc=x", "MAILDIRQUOTA": "5000S",
                             "QMAILFORWARDS": "a@x.test:b\\:c@y.test", "QMAILDELIVERYPROGRAM": None,
                             "QMAILREPLYTEXT": "away", "QMAILMODE": "reply:nolocal", "QMAILDOTMODE": "ldaponly"}


@pytest.mark.parametrize("path,ok", [("/home/joe", True), ("../x", False), ("/a/../b", False), ("/a/..", True),
                                     ("/a/.../b", True), ("/a/..../b", False), ("/a/b../c", True),
                                     ("-x", False), ("/a b", False), ("/a@b:c=d#e_f.g-h", True)])
def test_path_check(path, ok):
    assert qldap.check_path(path) is ok


# --- §3.4 / §4.1 through qmail-lspawn with the directory ------------------------------------------

def test_lspawn_ldap_delivery_with_several_default_lines(qmailhome, slapd, tmp_path):  # noqa: F811
    dom = fresh_domain("spec")
    point_at(qmailhome, slapd, ldaplocaldelivery="0")
    home = make_home(str(tmp_path), "u")
    add_user(slapd, f"u-{dom}", f"u@{dom}", homeDirectory=home, qmailUID="1000", qmailGID="1000")
    add_user(slapd, f"c-{dom}", f"a-catchall@{dom}", homeDirectory=home, qmailUID="1000", qmailGID="1000",
             deliveryMode="nolocal", qmailDotMode="both")
    with open(os.path.join(home, ".qmail-b-c"), "w") as f:
        f.write("|echo ext=$EXT\n")
    w = lspawn.Worker(qmailhome, "./Maildir/\n|echo default line two", None)
    fd = message_fd(str(tmp_path))
    try:
        assert w.deliver_fd(fd, "u", dom, "s@x.test") == (b"K", b"default line two\ndid 1+0+1\n")
        assert w.deliver_fd(fd, "a-b-c", dom, "s@x.test") == (b"K", b"ext=b-c\ndid 0+0+1\n")
    finally:
        os.close(fd)
    assert len(new_files(os.path.join(home, "Maildir"))) == 1


# --- §4.6 qmail-reply ------------------------------------------------------------------------------

REPLY_ENV = {"DTLINE": "Delivered-To: joe@example.test\n", "SENDER": "ann@x.test",
             "RECIPIENT": "joe@example.test", "HOST": "example.test"}


@pytest.mark.parametrize("header,unwanted,subject", [
    (b"Subject: one\nSubject: two\n\nbody\n", False, b"two"),
    (b"Subject:   \t spaced\n\n", False, b"spaced"),
    (b"Subject: \n\n", False, b"Your Mail"),
    (b"PRECEDENCE: Bulk\n\n", True, None),
    (b"Precedence: first-class\n\n", False, b"Your Mail"),
    (b"mailing-list: x\n\n", True, None),
    (b"X-Spam-Status: yes, score=9\n\n", True, None),
    (b"X-Spam-Status: No\n\n", False, b"Your Mail"),
    (b"x-rbl: listed\n\n", True, None),
])
def test_reply_header_rules(header, unwanted, subject):
    assert reply.parse_header(header) == (unwanted, subject)


def test_reply_premature_end_of_header_is_answered(capfd):
    assert reply.parse_header(b"Subject: x\n") == (False, b"x")
    assert capfd.readouterr().err == "qmail-reply: warn: Premature end of header. The message has no body.\n"


@pytest.mark.parametrize("sender,junk", [("MAILER-DAEMON@x.test", True), ("list-request@x.test", True),
                                        ("a-b-Relay@x.test", True), ("root@x.test", True),
                                        ("joe@x.test", False), ("daemonic@x.test", False)])
def test_reply_junk_senders(sender, junk):
    assert reply.junk_sender(sender) is junk


def test_reply_message_and_subject_magic(tmp_path, monkeypatch):
    env, qq = base_env(str(tmp_path))
    monkeypatch.setenv("QMAILQUEUE", env["QMAILQUEUE"])
    text = "%HEADER%\nSubject: Re: %subject% (%SUBJECT%)\nTo: forced@x.test\nX-Info: kept\nBcc: no\n\nI am away.\n"
    code = reply.run([], dict(REPLY_ENV, QMAILREPLYTEXT=text, QMAILQUEUE=env["QMAILQUEUE"]),
                     b"Subject: lunch?\n\nhi\n")
    assert code == 0
    assert read_envelope(qq) == (b"", [b"ann@x.test"])
    mail = read_message(qq)
    head, _, body = mail.partition(b"\n\n")
    lines = head.split(b"\n")
    assert lines[0] == b"Delivered-To: joe@example.test"
    assert lines[1].startswith(b"Message-ID: <") and lines[2].startswith(b"Date: ")
    assert lines[3:] == [b"Subject: Re: lunch? (lunch?)", b"X-Info: kept", b"From: joe@example.test",
                         b"To: ann@x.test", b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                         b"Content-Transfer-Encoding: 8bit", b"X-Mailer: qmail-reply (by qmail-ldap)",
                         b"Precedence: junk"]
    assert body == b"I am away.\n\n"


@pytest.mark.parametrize("argv,env,code,err", [
    (["-x"], {}, 100, "qmail-reply: usage: qmail-reply [-f mailfile] [-j junkfile] [maildir]\n"),
    ([], dict(REPLY_ENV), 100, "qmail-reply: fatal: QMAILREPLYTEXT not present.\n"),
    (["-f", "/nonexistent/text"], dict(REPLY_ENV), 100,
     "qmail-reply: fatal: Unable to open '/nonexistent/text': file does not exist\n"),
    (["-j", "/nonexistent/junk"], dict(REPLY_ENV, QMAILREPLYTEXT="t"), 100,
     "qmail-reply: fatal: Unable to read '/nonexistent/junk': file does not exist\n"),
    ([], dict(REPLY_ENV, QMAILREPLYTEXT="t", RECIPIENT="@example.test", HOST=None), 100,
     "qmail-reply: fatal: Bad RECIPIENT address.\n"),
    ([], dict(REPLY_ENV, QMAILREPLYTEXT="t", HOST=None), 100, "qmail-reply: fatal: Environment HOST not present.\n"),
    ([], dict(REPLY_ENV, QMAILREPLYTEXT="t", SENDER="nodomain"), 111, "qmail-reply: fatal: Bad SENDER address.\n"),
])
def test_reply_errors(monkeypatch, capsys, argv, env, code, err):
    env = {k: v for k, v in env.items() if v is not None}
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert reply.main(argv) == code
    assert capsys.readouterr().err == err


def test_reply_junk_file_adds_senders(tmp_path, monkeypatch):
    junk = tmp_path / "junk"
    junk.write_text("# comment\nann@x.test  \n\n")
    env, qq = base_env(str(tmp_path))
    monkeypatch.setenv("QMAILQUEUE", env["QMAILQUEUE"])
    assert reply.run(["-j", str(junk)], dict(REPLY_ENV, QMAILREPLYTEXT="t", QMAILQUEUE=env["QMAILQUEUE"]),
                     b"\n") == 0
    assert not os.path.exists(os.path.join(qq, "envelope"))


def test_reply_memory_is_per_reply_text(tmp_path, monkeypatch):
    box = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    env, qq = base_env(str(tmp_path))
    monkeypatch.setenv("QMAILQUEUE", env["QMAILQUEUE"])
    renv = dict(REPLY_ENV, QMAILREPLYTEXT="first text", QMAILQUEUE=env["QMAILQUEUE"])
    cwd = os.getcwd()
    try:
        assert reply.run([str(box) + "/"], renv, b"\n") == 0
        assert os.path.exists(os.path.join(qq, "envelope"))
        os.unlink(os.path.join(qq, "envelope"))
        assert reply.run([str(box) + "/"], renv, b"\n") == 0
        assert not os.path.exists(os.path.join(qq, "envelope")), "answered once per sender"
        with open(box / "qmail-reply.db", "rb") as f:
            head, line = f.read().split(b"\n")[:2]
        assert head.startswith(b"QRDBv1:") and len(head) == 7 + 32 and line.startswith(b"ann@x.test:")
        assert len(line.split(b":")[1]) == 8
        # a stamp left while the lock was busy does not count for another reply text
        (box / "tmp" / "@ann@x.test").write_bytes(b"")
        assert reply.run([str(box) + "/"], dict(renv, QMAILREPLYTEXT="new text"), b"\n") == 0
        assert os.path.exists(os.path.join(qq, "envelope"))
    finally:
        os.chdir(cwd)


# --- §4.2 mbox and Maildir texts ----------------------------------------------------------------

def test_mbox_quota_bounce_and_maildir_quota_bounce(qmailhome, tmp_path):
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path), MAILDIRQUOTA="50S", QMAILHOME=qmailhome)
    big = b"x" * 100 + b"\n"
    assert deliver(str(tmp_path), rcpt(home, aliasempty="./Mailbox"), env, data=big) == (
        100, "The users mailbox is over the allowed quota (size). (#5.2.2)\n")
    assert deliver(str(tmp_path), rcpt(home), env, data=big) == (
        100, "The users mailfolder is over the allowed quota (size). (#5.2.2)\n")
    assert deliver(str(tmp_path), rcpt(home), dict(env, MAILDIRQUOTA="1C"), data=big)[0] == 0
    assert deliver(str(tmp_path), rcpt(home), dict(env, MAILDIRQUOTA="1C"), data=big) == (
        100, "The users mailfolder is over the allowed quota (size). (#5.2.2)\n")


def test_corrupted_maildir(tmp_path):
    home = make_home(str(tmp_path))
    os.makedirs(os.path.join(home, "Maildir"))
    with open(os.path.join(home, "Maildir", "new"), "w"):
        pass
    env, _ = base_env(str(tmp_path))
    assert deliver(str(tmp_path), rcpt(home), env) == (
        111, "The maildir './Maildir/' seems to be corrupted. (#4.2.1)\n")


def test_maildir_directories_are_private(tmp_path):
    home = make_home(str(tmp_path))
    env, _ = base_env(str(tmp_path))
    assert deliver(str(tmp_path), rcpt(home), env)[0] == 0
    for d in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(os.path.join(home, "Maildir", d)).st_mode) == 0o700
    maildir.make_maildir(os.path.join(home, "Maildir"))  # existing dirs are fine


# --- system error texts are qmail's error_str ones ---------------------------------------------

def test_error_texts_use_qmail_wording(tmp_path):
    env, _ = base_env(str(tmp_path))
    missing = str(tmp_path / "nohome")
    assert deliver(str(tmp_path), rcpt(missing), env) == (
        111, f"Unable to switch to {missing}: file does not exist. (#4.3.0)\n")
    assert deliver(str(tmp_path), rcpt("relative"), env) == (
        100, "qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty\n")
    home = make_home(str(tmp_path))
    assert deliver(str(tmp_path), rcpt(home, aliasempty="./nodir/Mailbox"), env) == (
        111, "Unable to open ./nodir/Mailbox: file does not exist. (#4.2.1)\n")


# --- §3.3 a server that refuses the LDAPv3 bind gets an LDAPv2 one ------------------------------

class BindOnlyServer:
    """A loopback LDAP server that answers bind requests only: protocolError to the versions in
    `refuse`, success to the others; it records the version of every bind it got."""

    def __init__(self, refuse):
        import socket
        import threading
        self.refuse, self.versions = refuse, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                # 30 LL 02 01 <msgid> 60 LL 02 01 <version> ...: short lengths for an anonymous bind
                if len(data) < 10 or data[5] != 0x60:
                    continue
                msgid, version = data[4], data[9]
                self.versions.append(version)
                code = 2 if version in self.refuse else 0
                conn.sendall(bytes([0x30, 0x0c, 0x02, 0x01, msgid, 0x61, 0x07, 0x0a, 0x01, code,
                                    0x04, 0x00, 0x04, 0x00]))
                conn.recv(4096)  # the unbind, or the client going away

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("refuse,versions,error", [((3,), [3, 2], None), ((3, 2), [3, 2], qldap.LdapFail),
                                                   ((), [3], None)])
def test_ldapv2_fallback_after_protocol_error(refuse, versions, error):
    server = BindOnlyServer(refuse)
    cfg = qldap.Config(servers=[f"127.0.0.1:{server.port}"], timeout=5)
    try:
        d = qldap.Directory(cfg)
        if error:
            with pytest.raises(error):
                d.connect()
            assert error.report == "ZTemporary failure in LDAP lookup. (#4.4.3)."
        else:
            d.connect()
            d.close()
    finally:
        server.close()
    assert server.versions == versions


# --- §3.8 an unusable userPassword is a broken entry (auth_pop exit 25), not a wrong password ------

@pytest.mark.parametrize("stored,code", [("{NS-MTA-MD5}" + "a" * 63, 25), ("{SSHA}not*base64", 25),
                                         ("{smd5}AAAA", 25), ("{SHA}wrongdigest", 3), ("{crypt}xx", 3)])
def test_unusable_password_value_is_a_broken_entry(qmailhome, slapd, boxes, stored, code):  # noqa: F811
    from engine import checkpassword as cp
    from support.pop3 import ldap_controls
    ldap_controls(qmailhome, slapd)
    login, _ = boxes.user(slapd, make_home=False, userPassword=stored)
    with pytest.raises(cp.AuthError) as e:
        cp.authenticate(login, b"pw", cp.Settings.load(qmailhome))
    assert e.value.code == code
