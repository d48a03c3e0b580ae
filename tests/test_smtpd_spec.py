"""Spec 5.3 details of qmail-smtpd and 5.2 of qmail-qmtpd, one program run per test.

Each test runs the real `qmail-smtpd` (or `qmail-qmtpd`) program on one end of
a socketpair, as tcpserver would hand it a connection, with the environment
the test chooses; the exact reply lines are compared with the spec's, which
were checked against qmail-ldap's qmail-smtpd.c / qmail-qmtpd.c.
"""

import os
import socket
import subprocess
import sys

import pytest

from support.dnsserver import DnsServer
from support.smtpclient import Dialogue

ME = "testhost.example.org"
BIN = os.path.dirname(sys.executable)


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


@pytest.fixture
def home(qmailhome):
    write(qmailhome, "rcpthosts", "example.test\n")
    write(qmailhome, "locals", f"{ME}\nlocal.test\n")
    return qmailhome


class Program:
    """One qmail-smtpd / qmail-qmtpd process serving the far end of a socketpair."""

    def __init__(self, home, program, env):
        ours, theirs = socket.socketpair()
        full = {"PATH": os.environ["PATH"], "QMAILHOME": home, "TCPREMOTEIP": "192.0.2.7",
                "TCPLOCALIP": "192.0.2.1", "TCPLOCALHOST": ME, **env}
        self.proc = subprocess.Popen([os.path.join(BIN, program)], stdin=theirs, stdout=theirs, env=full)
        theirs.close()
        ours.settimeout(15)
        self.sock = ours

    def dialogue(self):
        d = Dialogue.__new__(Dialogue)
        d.sock, d.buf = self.sock, b""
        return d

    def stop(self):
        self.sock.close()
        try:
            self.proc.wait(0.5)
        except subprocess.TimeoutExpired:  # e.g. still sleeping after a refused AUTH
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def run(home):
    started = []

    def start(env=None, program="qmail-smtpd"):
        p = Program(home, program, env or {})
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


@pytest.fixture
def smtpd(run):
    """A started qmail-smtpd session past its greeting."""
    def start(**env):
        d = run(env).dialogue()
        assert d.read_reply().startswith("220 ")
        return d
    return start


# ---------------------------------------------------------------------------------------------- 5.3.3 RCPT

def test_maxrcptcount_counts_refused_recipients_too(smtpd):
    """5.3.3 #6: every RCPT past the relay check counts, also one RCPTCHECK then refuses.

    Without control/ldapserver qmail-verify cannot answer, so RCPTCHECK refuses
    local recipients with a 451; example.test (rcpthosts, not locals) is not verified.
    """
    d = smtpd(MAXRCPTCOUNT="2", RCPTCHECK="")
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("RCPT TO:<x1@example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<x2@local.test>").startswith("451 ")
    assert d.cmd("RCPT TO:<x3@example.test>") == "553 sorry, too many recipients (#5.7.1)"


def test_bounce_second_recipient_counts_a_refused_first(smtpd):
    """5.3.3 #7: a bounce's second RCPT is refused although the first was refused by RCPTCHECK."""
    d = smtpd(RCPTCHECK="")
    assert d.cmd("MAIL FROM:<>") == "250 ok"
    assert d.cmd("RCPT TO:<x9@elsewhere.test>").startswith("553 sorry, relaying denied")  # not counted
    assert d.cmd("RCPT TO:<x1@local.test>").startswith("451 ")
    assert d.cmd("RCPT TO:<x2@example.test>") == ("550 sorry, I don't accept bounce messages with more than "
                                                  "one recipient. Go read RFC2821. (#5.7.1)")


def test_tarpit_counts_refused_recipients(smtpd):
    """5.3.3 #9: TARPITCOUNT compares the same count, refused recipients included."""
    import time
    d = smtpd(RCPTCHECK="", TARPITCOUNT="2", TARPITDELAY="2")
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("RCPT TO:<x1@local.test>").startswith("451 ")
    t = time.monotonic()
    assert d.cmd("RCPT TO:<x2@example.test>") == "250 ok"
    assert time.monotonic() - t >= 1.8


# ---------------------------------------------------------------------------------------------- 5.3.1 greeting

def test_both_greetings_helo_answers_421(smtpd, run):
    """5.3.1: in the restricted mode HELO/EHLO get 421 whenever 421GREETING is set (550GREETING wins the greeting)."""
    d = run({"550GREETING": "", "421GREETING": ""}).dialogue()
    assert d.read_reply() == f"554 {ME} Sorry, your mail was administratively denied. (#5.7.1)"
    assert d.cmd("HELO x") == "421 Service temporarily not available (#4.3.2)"
    assert d.cmd("EHLO x") == "421 Service temporarily not available (#4.3.2)"
    assert d.cmd("MAIL FROM:<a@b.test>") == "503 bad sequence of commands (#5.5.1)"
    assert d.cmd("QUIT") == f"221 {ME} Goodbye."


def test_partial_command_at_end_of_input_is_not_run(run):
    """commands.c: a command line ends at LF; input that ends without one is never executed."""
    p = run({})
    d = p.dialogue()
    assert d.read_reply().startswith("220 ")
    d.send("QUIT")
    p.sock.shutdown(socket.SHUT_WR)
    assert d.raw(2.0) == b""


# ---------------------------------------------------------------------------------------------- 5.3.6 STARTTLS

@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    from support.smtpserver import make_cert
    return make_cert(str(tmp_path_factory.mktemp("cert")), ME)[2]


def test_sslcert_alone_enables_starttls(smtpd, pem):
    """2.2 smtpcert / 2.3 SSLCERT: $SSLCERT is the certificate path and turns STARTTLS on without control/smtpcert."""
    import ssl
    d = smtpd(SSLCERT=pem)
    assert "250-STARTTLS" in d.cmd("EHLO client.test").split("\n")
    assert d.cmd("STARTTLS") == "220 ready for tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    d.sock = ctx.wrap_socket(d.sock)
    assert d.cmd("EHLO client.test").split("\n")[0] == f"250-{ME} "


def test_empty_sslcert_turns_starttls_off(home, smtpd, pem):
    """qmail-smtpd.c: a set but empty $SSLCERT replaces control/smtpcert too, so there is no STARTTLS."""
    write(home, "smtpcert", pem + "\n")
    d = smtpd(SSLCERT="")
    assert "250-STARTTLS" not in d.cmd("EHLO client.test").split("\n")
    assert d.cmd("STARTTLS") == "502 unimplemented (#5.5.1)"


def test_starttls_handshake_in_the_program(home, smtpd, pem):
    """5.3.6: qmail-smtpd run by tcpserver (connection on fd 0/1) completes the TLS handshake as the server."""
    import ssl
    write(home, "smtpcert", pem + "\n")
    d = smtpd()
    d.cmd("EHLO client.test")
    assert d.cmd("STARTTLS") == "220 ready for tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    d.sock = ctx.wrap_socket(d.sock)
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("QUIT") == f"221 {ME} Goodbye."


# ---------------------------------------------------------------------------------------------- 5.3.2 RETURNMXCHECK

@pytest.fixture(scope="module")
def dns():
    server = DnsServer(mx=[("good.test", "mail.good.test", 10), ("noaddr.test", "missing.noaddr.test", 10),
                           ("softmx.test", "mx.elsewhere.invalid", 10)],
                       hosts=[("mail.good.test", "192.0.2.5"), ("aonly.test", "192.0.2.6")]).start()
    yield server
    server.stop()


@pytest.mark.parametrize("sender,reply", [
    ("a@good.test", "250 ok"),
    ("a@aonly.test", "250 ok"),
    ("a@nothing.test", "554 refused mailfrom because return MX does not exist"),
    ("a@noaddr.test", "554 refused mailfrom because return MX does not exist"),
    ("a@softmx.test", "421 DNS temporary failure at return MX check, try again later (#4.3.0)"),
])
def test_returnmxcheck_needs_an_address_for_the_mx(smtpd, dns, sender, reply):
    """5.3.2 #12 (badmxcheck): the MX hosts must have addresses; MX hosts that all fail temporarily are a 421."""
    d = smtpd(RETURNMXCHECK="", QMAIL_DNS_SERVER=dns.address)
    assert d.cmd(f"MAIL FROM:<{sender}>") == reply


# ---------------------------------------------------------------------------------------------- 5.9 RBL

@pytest.fixture(scope="module")
def rbldns():
    server = DnsServer(hosts=[("7.2.0.192.reject.rbl.test", "127.0.0.2"), ("7.2.0.192.v6.rbl.test", "::2")]).start()
    yield server
    server.stop()


def test_rbllist_message_keeps_its_tabs(home, smtpd, rbldns):
    """2.2 rbllist / rbl.c: fields split on spaces or tabs, the message is the rest of the line verbatim."""
    write(home, "rbllist", "reject.rbl.test\treject\tany\tListed\there, see  http://rbl.test/\n")
    d = smtpd(RBL="", QMAIL_DNS_SERVER=rbldns.address)
    assert d.cmd("MAIL FROM:<a@remote.test>") == ("553 sorry, your mailserver [192.0.2.7] is rejected by "
                                                  "Listed\there, see  http://rbl.test/")


def test_malformed_rbllist_is_a_control_error_with_rbl(home, run, rbldns):
    """rbl.c rblinit(): a line without all four fields is a parse error; qmail-smtpd cannot read its controls."""
    write(home, "rbllist", "reject.rbl.test reject any\n")
    d = run({"RBL": "", "QMAIL_DNS_SERVER": rbldns.address}).dialogue()
    assert d.read_reply() == "421 unable to read controls (#4.3.0)"
    d = run({}).dialogue()  # without $RBL the file is not read
    assert d.read_reply().startswith("220 ")


# ---------------------------------------------------------------------------------------------- 5.2 QMTP

def netstring(b):
    return b"%d:%s," % (len(b), b)


def qmtp_replies(program, message, sender, rcpts):
    s = program.sock
    s.sendall(netstring(message) + netstring(sender) + netstring(b"".join(netstring(r) for r in rcpts)))
    replies, data = [], b""
    while len(replies) < len(rcpts):
        chunk = s.recv(4096)
        assert chunk, f"connection closed after {replies}"
        data += chunk
        while b":" in data:
            n, rest = data.split(b":", 1)
            if len(rest) < int(n) + 1:
                break
            replies.append(rest[:int(n)])
            data = rest[int(n) + 1:]
    return replies


SIZE_TEXT = b"Dsorry, that message size exceeds my databytes limit (#5.3.4)"


@pytest.mark.parametrize("value,limited", [("20", True), ("20k", True), ("", False), ("none", False)])
def test_qmtp_databytes_environment_read_like_scan_ulong(home, run, value, limited):
    """qmail-qmtpd.c: $DATABYTES is read with scan_ulong: leading digits, none = 0 = no limit."""
    write(home, "databytes", "10\n")
    [reply] = qmtp_replies(run({"DATABYTES": value}, "qmail-qmtpd"), b"\n" + b"x" * 30 + b"\n",
                           b"a@remote.test", [b"u@example.test"])
    assert (reply == SIZE_TEXT) is limited and (limited or reply.startswith(b"Kok "))


def test_qmtp_size_text_wins_over_bad_sender(home, run):
    """qmail-qmtpd.c: the databytes text replaces the unacceptable-sender text."""
    [reply] = qmtp_replies(run({"DATABYTES": "5"}, "qmail-qmtpd"), b"\nlong enough body\n",
                           b"x" * 1000, [b"u@example.test"])
    assert reply == SIZE_TEXT


def test_qmtp_recipient_with_nul_outside_rcpthosts(home, run):
    """qmail-qmtpd.c: a NUL marks the recipient, but the rcpthosts check still runs and its refusal wins."""
    replies = qmtp_replies(run({}, "qmail-qmtpd"), b"\nbody\n", b"a@remote.test",
                           [b"u@exam\0ple.test", b"u\0x@example.test", b"u@example.test"])
    assert replies[0] == b"Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    assert replies[1] == b"Dsorry, I can't handle that recipient (#5.1.3)"
    assert replies[2].startswith(b"Kok ")


def test_qmtp_connection_ends_after_the_alarm(home, monkeypatch):
    """qmail-qmtpd.c alarm(3600): a connection ends after SESSION_LIMIT seconds in all (1 s here)."""
    import asyncio
    import time
    from engine import qmtpd, smtppolicy
    from engine.smtpservices import Services
    monkeypatch.setattr(qmtpd, "SESSION_LIMIT", 1)
    client, server = socket.socketpair()

    async def serve():
        reader, writer = await asyncio.open_unix_connection(sock=server)
        await qmtpd.Session(reader, writer, {}, smtppolicy.Controls(home), Services(home)).run()
    t = time.monotonic()
    client.sendall(b"12")  # a length that never ends
    asyncio.run(asyncio.wait_for(serve(), 10))
    client.settimeout(5)
    assert client.recv(10) == b"" and 0.9 < time.monotonic() - t < 5
    client.close()


# ---------------------------------------------------------------------------------------------- 5.3.5 AUTH

def b64(text):
    import base64
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("command", ["AUTH PLAIN *", "AUTH LOGIN *"])
def test_auth_star_as_initial_response_aborts(smtpd, command):
    """smtpcall.c: a `*` line, the initial response included, aborts the exchange."""
    d = smtpd(SMTPAUTH="")
    assert d.cmd(command) == "501 authentication exchange aborted. (#4.3.0)"


def test_auth_plain_password_ends_at_its_nul(smtpd):
    """auth_smtp.c: PLAIN's password runs to the next NUL or the end; more parts are no format error."""
    d = smtpd(SMTPAUTH="")
    assert d.cmd("AUTH PLAIN " + b64("\0user\0\0extra")) == "535 authentication failure"  # empty password


# ---------------------------------------------------------------------------------------------- 5.3.1 addresses

def test_address_length_is_checked_after_the_localiphost_rewrite(home, smtpd):
    """addrparse(): `@[my ip]` becomes `@localiphost` first, then more than 900 bytes is a syntax error."""
    write(home, "localiphost", "local.test\n")
    d = smtpd()
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("RCPT TO:<" + "x" * 888 + "@[127.0.0.1]>") == "250 ok"  # 900 bytes, 899 after the rewrite
    assert d.cmd("RCPT TO:<" + "x" * 889 + "@[127.0.0.1]>") == "555 syntax error (#5.5.4)"


@pytest.mark.parametrize("command", ["AUTH PLAIN !!", "AUTH LOGIN *"])
def test_auth_501_comes_after_the_failure_delay(smtpd, command):
    """qmail-smtpd.c smtp_auth: every 4xx/5xx of auth_close(), 501s included, is sent after sleep(1)."""
    import time
    d = smtpd(SMTPAUTH="")
    t = time.monotonic()
    assert d.cmd(command).startswith("501 authentication exchange ")
    assert time.monotonic() - t >= 0.9


def test_rbl_listing_is_an_a_record(home, smtpd, rbldns):
    """rbl.c rbl_lookup(): only A records of d.c.b.a.<base> count; an AAAA answer is no listing."""
    write(home, "rbllist", "v6.rbl.test reject any Listed by AAAA\n")
    d = smtpd(RBL="", QMAIL_DNS_SERVER=rbldns.address)
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"


# ---------------------------------------------------------------------------------------------- 2.2 reload

def test_listener_sees_a_control_edit_at_the_next_connection(home):
    """2.2 reload semantics: qmail-smtpd reads its controls per connection, so an edit counts at once."""
    from engine import smtppolicy
    cache = smtppolicy.ControlCache(home)
    assert cache.get().badmailfrom is None
    write(home, "badmailfrom", "bad@spam.test\n")
    assert "bad@spam.test" in cache.get().badmailfrom
    write(home, "badmailfrom", "other@spam.test\n")  # same size, maybe the same second
    assert "other@spam.test" in cache.get().badmailfrom


# ---------------------------------------------------------------------------------------------- 5.3.4 DATA

def queue_program(home, exit_code):
    path = os.path.join(home, f"qq-exit-{exit_code}")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\ncat >/dev/null\nexit {exit_code}\n")
    os.chmod(path, 0o755)
    return path


def send_message(d):
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    assert d.cmd("RCPT TO:<x1@example.test>") == "250 ok"
    assert d.cmd("DATA").startswith("354 ")
    return d.cmd("Subject: t\r\n\r\nbody\r\n.")


@pytest.mark.parametrize("code,reply", [(31, "554 "), (71, "451 ")])
def test_queue_refusal_keeps_the_session_under_smtp550disconnect(home, smtpd, code, reply):
    """qmail-smtpd.c answers the queue's D/Z text and returns; only the protocol refusals disconnect."""
    d = smtpd(SMTP550DISCONNECT="", QMAILQUEUE=queue_program(home, code))
    assert send_message(d).startswith(reply)
    assert d.cmd("NOOP") == "250 ok"


def test_empty_tcplocalhost_is_not_replaced_by_the_ip(home, run):
    """TCPLOCALHOST set but empty is used as it is (env_get), so the Received line says `by  (qmail-ldap`."""
    saved = os.path.join(home, "saved")
    qq = os.path.join(home, "qq-save")
    with open(qq, "w") as f:
        f.write(f"#!/bin/sh\ncat >{saved}\nexit 0\n")
    os.chmod(qq, 0o755)
    d = run({"TCPLOCALHOST": "", "QMAILQUEUE": qq}).dialogue()
    assert d.read_reply().startswith("220 ")
    assert send_message(d).startswith("250 ok")
    with open(saved, "rb") as f:
        header = f.read().split(b"\n\n")[0]
    assert b"\n          by  (qmail-ldap-1.03) with SMTP\n" in header
