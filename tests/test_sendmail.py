"""sendmail (sendmail.c) run as a subprocess: options, the qmail-inject flags it implies, -bs, -bp, mailq."""

import os

import pytest

from support.injectrun import Runner

USAGE = b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"
MSG = b"To: hdr@x.org\nSubject: s\n\nbody\n"


@pytest.fixture
def sendmail(qmailhome, tmp_path):
    return Runner("engine.sendmail", qmailhome, str(tmp_path))


def install(home, name, script):
    """A stand-in program in the home's bin/, replacing (never writing through) the link to ours."""
    path = os.path.join(home, "bin", name)
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)


def test_arguments_only_by_default(sendmail):
    r = sendmail(["a@y.org", "b"], MSG)
    assert r.rc == 0, r.stderr
    assert r.recipients == [b"a@y.org", b"b@testhost.example.org"]
    assert r.sender == b"joe@testhost.example.org"
    assert b"To: hdr@x.org\n" in r.message  # the header is still rewritten, not used


def test_dash_t_adds_header_recipients(sendmail):
    r = sendmail(["-t", "extra@y.org"], MSG + b"Bcc: ignored-in-body\n")
    assert r.rc == 0, r.stderr
    assert r.recipients == [b"extra@y.org", b"hdr@x.org"]
    r = sendmail(["-t"], b"To: a@x.org\nBcc: b@x.org\n\n")
    assert r.recipients == [b"a@x.org", b"b@x.org"]
    assert b"Bcc" not in r.message


def test_dash_f_sets_envelope_sender_and_from(sendmail):
    r = sendmail(["-f", "owner@lists.example", "a@y.org"], b"Subject: s\n\n", env={"NAME": "Env Name"})
    assert r.sender == b"owner@lists.example"
    assert b"From: owner@lists.example\n" in r.message  # and the personal name is cleared


def test_attached_dash_f_without_host(sendmail):
    r = sendmail(["-fdaemon", "a@y.org"], b"Subject: s\n\n", env={"QMAILHOST": "ignored.example"})
    assert r.sender == b"daemon@testhost.example.org"
    assert b"From: daemon@testhost.example.org\n" in r.message


def test_dash_capital_f_sets_the_name(sendmail):
    r = sendmail(["-F", "Cron Daemon", "a@y.org"], b"Subject: s\n\n")
    assert b'From: "Cron Daemon" <joe@testhost.example.org>\n' in r.message


def test_dash_capital_f_survives_dash_f(sendmail):
    r = sendmail(["-t", "-f", "mon@x.org", "-F", "Monitor"], b"To: a@y.org\n\n")
    assert r.sender == b"mon@x.org"
    assert b'From: "Monitor" <mon@x.org>\n' in r.message


def test_sendmail_options_qmail_ignores(sendmail):
    args = ["-i", "-oi", "-oem", "-odb", "-v", "-x", "-m", "-B8BITMIME", "-e", "m", "-p", "smtp:host",
            "-bm", "-Efoo", "-J", "a@y.org"]
    r = sendmail(args, MSG)
    assert r.rc == 0, r.stderr
    assert r.recipients == [b"a@y.org"]


def test_dots_are_not_special(sendmail):
    r = sendmail(["-oi", "a@y.org"], b"Subject: s\n\n.\nline\n..\n")
    assert r.message.endswith(b"\n\n.\nline\n..\n")


def test_double_dash_ends_options(sendmail):
    r = sendmail(["--", "-odd@y.org"], MSG)
    assert r.recipients == [b"-odd@y.org"]


@pytest.mark.parametrize("args, complaint", [
    (["-N", "a@y.org"], b"sendmail: illegal option -- N\n"),
    (["-bx", "a@y.org"], b""),
    (["-bt"], b""),
    (["-b"], b"sendmail: option requires an argument -- b\n"),
    (["-f"], b"sendmail: option requires an argument -- f\n"),
])
def test_usage_errors(sendmail, args, complaint):
    r = sendmail(args, MSG)
    assert (r.rc, r.stderr, r.queued) == (100, complaint + USAGE, False)


def test_no_recipients(sendmail):
    r = sendmail(["-t"], b"Subject: s\n\n")
    assert (r.rc, r.stderr) == (100, b"qmail-inject: fatal: no recipients\n")


def test_queue_failure_is_reported_by_qmail_inject(sendmail):
    r = sendmail(["a@y.org"], MSG, env={"FAKEQQ_EXIT": "31"})
    assert (r.rc, r.stderr) == (
        100, b"qmail-inject: fatal: mail server permanently rejected message (#5.3.0)\n")


def test_missing_qmail_home(sendmail, tmp_path):
    r = sendmail(["a@y.org"], MSG, env={"QMAILHOME": str(tmp_path / "none")})
    assert (r.rc, r.stderr) == (111, b"sendmail: fatal: unable to switch to qmail home directory\n")


SMTPD = """#!/bin/sh
echo "cwd=$(pwd)"
for v in PROTO RELAYCLIENT DATABYTES TCPLOCALIP TCPLOCALHOST TCPREMOTEIP TCPREMOTEHOST TCPREMOTEINFO; do
  eval "echo $v=\\${$v-unset}"
done
cat
"""


def test_bs_runs_qmail_smtpd_as_a_local_relaying_session(sendmail, qmailhome):
    install(qmailhome, "qmail-smtpd", SMTPD)
    r = sendmail(["-bs"], b"QUIT\r\n")
    assert r.rc == 0, r.stderr
    lines = r.stdout.decode().split("\n")
    assert os.path.realpath(lines[0][4:]) == os.path.realpath(qmailhome)
    assert lines[1:] == ["PROTO=TCP", "RELAYCLIENT=", "DATABYTES=0", "TCPLOCALIP=127.0.0.1",
                         "TCPLOCALHOST=localhost", "TCPREMOTEIP=127.0.0.1", "TCPREMOTEHOST=localhost",
                         "TCPREMOTEINFO=sendmail-bs", "QUIT\r", ""]


def test_bs_keeps_an_existing_tcp_environment(sendmail, qmailhome):
    install(qmailhome, "qmail-smtpd", SMTPD)
    r = sendmail(["-bs"], b"", env={"PROTO": "TCP", "TCPREMOTEIP": "192.0.2.7"})
    assert "TCPREMOTEIP=192.0.2.7" in r.stdout.decode()
    assert "RELAYCLIENT=unset" in r.stdout.decode()


def test_bs_without_qmail_smtpd(sendmail, qmailhome):
    os.unlink(os.path.join(qmailhome, "bin", "qmail-smtpd"))
    r = sendmail(["-bs"], b"QUIT\r\n")
    assert (r.rc, r.stderr) == (111, b"sendmail: fatal: unable to run qmail-smtpd\n")


def test_bp_and_mailq_run_qmail_qread(sendmail, qmailhome):
    install(qmailhome, "qmail-qread", "#!/bin/sh\necho queue listing\n")
    assert sendmail(["-bp"]).stdout == b"queue listing\n"
    assert sendmail([], argv0="/usr/bin/mailq").stdout == b"queue listing\n"


def test_bp_without_qmail_qread(sendmail, qmailhome):
    os.unlink(os.path.join(qmailhome, "bin", "qmail-qread"))
    r = sendmail(["-bp"])
    assert (r.rc, r.stderr) == (111, b"sendmail: fatal: unable to run qmail-qread\n")


def test_newaliases_refuses(sendmail):
    r = sendmail([], argv0="/usr/bin/newaliases")
    assert (r.rc, r.stderr) == (100, b"sendmail: fatal: please use fastforward/newaliases instead\n")


def test_bs_runs_the_real_qmail_smtpd_on_pipes(sendmail, qmailhome):
    with open(os.path.join(qmailhome, "control", "rcpthosts"), "w") as f:
        f.write("example.test\n")
    r = sendmail(["-bs"], b"HELO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\n"
                          b"Subject: bs\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    out = r.stdout.decode()
    assert out.startswith("220 ") and "354 go ahead" in out and "250 ok " in out and "221 " in out
