"""qmail-remote (engine.remote) against real peers on loopback: Postfix's smtp-sink, a scripted SMTP server
(tests/support/smtpserver.py) and a dnsmasq DNS server. Results are compared with qmail-remote.c's texts."""

import asyncio
import base64
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zlib

import dns.asyncresolver
import pytest

from engine import qdns, remote, tcpto
from engine.rspawn import merge_report
from support.dnsserver import DnsServer
from support.sink import SmtpSink, free_tcp_port
from support.smtpserver import QMTPServer, SMTPServer, make_cert

MESSAGE = b"From: a@example.org\nSubject: test\n\n.leading dot\nbody line\n..two dots\n"
STUFFED = b"From: a@example.org\r\nSubject: test\r\n\r\n..leading dot\r\nbody line\r\n...two dots\r\n.\r\n"
SENDER = b"sender@example.org"
PY = sys.executable


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text + "\n")


def route(home, *lines):
    write_control(home, "smtproutes", "\n".join(lines))


def run(coro):
    return asyncio.run(coro)


def deliver(home, host, recips, message=MESSAGE, resolver=None, sender=SENDER):
    return run(remote.deliver(host, sender, recips, message, home=home, resolver=resolver))


@pytest.fixture
def server():
    started = []

    def start(**kw):
        s = SMTPServer(**kw).start()
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def sink():
    """smtp-sink servers; dumps go to a directory outside pytest's private tmp, as smtp-sink writes as nobody."""
    started = []
    dumps = tempfile.mkdtemp(prefix="remote-sink-")
    os.chmod(dumps, 0o755)

    def start(*options, host="127.0.0.1", dump=False):
        s = SmtpSink(host, options, os.path.join(dumps, str(len(started))) if dump else None).start()
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()
    shutil.rmtree(dumps)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    return {"server": make_cert(str(d), "localhost"), "client": make_cert(str(d), "client")}


@pytest.fixture(scope="module")
def dnsd():
    server = DnsServer(
        mx=[("mx.test", "mxa.mx.test", 10), ("mx.test", "mxb.mx.test", 20),
            ("self.test", "me.self.test", 10),
            ("mixed.test", "other.mixed.test", 10), ("mixed.test", "me.self.test", 20),
            ("noaddr.test", "missing.noaddr.test", 10),
            ("equal.test", "e1.equal.test", 10), ("equal.test", "e2.equal.test", 10),
            ("equal.test", "e3.equal.test", 5), ("qmtp.test", "q.qmtp.test", 12801),
            ("qmtp.test", "s.qmtp.test", 12802)],
        hosts=[("mxa.mx.test", "127.0.0.2"), ("mxb.mx.test", "127.0.0.3"), ("me.self.test", "127.0.0.1"),
               ("other.mixed.test", "127.0.0.2"), ("amx.test", "127.0.0.3"), ("v6only.test", "::1"),
               ("e1.equal.test", "127.0.0.11"), ("e2.equal.test", "127.0.0.12"), ("e3.equal.test", "127.0.0.13"),
               ("q.qmtp.test", "127.0.0.2"), ("s.qmtp.test", "127.0.0.3")],
    ).start()
    yield server
    server.stop()


@pytest.fixture
def resolver(dnsd):
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers, r.port = ["127.0.0.1"], dnsd.port
    return r


# ------------------------------------------------------------------------------------------ success, rejections

def test_several_recipients_accepted_and_message_stuffed(qmailhome, sink):
    s = sink(dump=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    recips = [b"one@ex.test", b"two@ex.test", b"three@ex.test"]
    result = deliver(qmailhome, "ex.test", recips)
    assert result.records == [b"r", b"r", b"r"]
    assert result.final.startswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 2.0.0 Ok")
    assert result.final.endswith(b"\n")
    assert result.output() == b"r\0r\0r\0" + result.final + b"\0"
    time.sleep(0.2)
    (dump,) = s.dumps()
    assert b"\nX-Mail-Args: <sender@example.org>\n" in dump  # smtp-sink does not offer SIZE
    assert [line for line in dump.split(b"\n") if line.startswith(b"X-Rcpt-Args")] == \
        [b"X-Rcpt-Args: <%s>" % r for r in recips]
    assert dump.endswith(b"Subject: test\n\n.leading dot\nbody line\n..two dots\n\n")


def test_one_recipient_rejected_others_accepted(qmailhome, server):
    s = server(rcpt={b"bad@ex.test": b"550 no such user (#5.1.1)"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test", b"bad@ex.test", b"c@ex.test"])
    assert result.records == [
        b"r", b"h127.0.0.1 does not like recipient.\nRemote host said: 550 no such user (#5.1.1)\n", b"r"]
    assert result.final == b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n"
    assert s.sessions[0].messages == [STUFFED]


def test_temporary_rcpt_failure_is_s(qmailhome, server):
    s = server(rcpt={b"later@ex.test": b"451 try later"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"later@ex.test", b"ok@ex.test"])
    assert result.records == [b"s127.0.0.1 does not like recipient.\nRemote host said: 451 try later\n", b"r"]
    assert result.final[:1] == b"K"
    assert merge_report(b"s127.0.0.1 does not like recipient.\n\0" + result.final + b"\0")[0] == b"Z"


def test_all_recipients_rejected_gives_up(qmailhome, sink):
    s = sink("-f", "RCPT")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test", b"b@ex.test"])
    assert [r[:1] for r in result.records] == [b"h", b"h"]
    assert result.final == b"DGiving up on 127.0.0.1.\nRemote host said: 500 5.3.0 Error: command failed\n"
    letter, text = merge_report(result.output())
    assert letter == b"D" and text.startswith(b"127.0.0.1 does not like recipient.\n")


@pytest.mark.parametrize("option,letter,code", [("-f", b"D", b"500 5.3.0"), ("-r", b"Z", b"450 4.3.0")])
def test_sender_rejected(qmailhome, sink, option, letter, code):
    s = sink(option, "MAIL")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.records == []
    assert result.final == letter + b"Connected to 127.0.0.1 but sender was rejected.\nRemote host said: " + code + \
        b" Error: command failed\n"


def test_data_rejected(qmailhome, sink):
    s = sink("-f", "DATA")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.records == [b"r"]
    assert result.final == b"D127.0.0.1 failed on DATA command.\nRemote host said: 500 5.3.0 Error: command failed\n"
    assert merge_report(result.output()) == (
        b"D", b"127.0.0.1 failed on DATA command.\nRemote host said: 500 5.3.0 Error: command failed\n")


def test_message_rejected_after_dot(qmailhome, server):
    s = server(replies={".": b"554-content rejected\r\n554 really"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == (b"D127.0.0.1 failed after I sent the message.\n"
                            b"Remote host said: 554-content rejected\n554 really\n")


def test_greeting_failure(qmailhome, server):
    s = server(greeting=b"554 go away")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"DConnected to 127.0.0.1 but greeting failed.\nRemote host said: 554 go away\n"


def test_helo_fallback_when_ehlo_refused(qmailhome, server):
    s = server(replies={"EHLO": b"502 unimplemented"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    write_control(qmailhome, "helohost", "helo.example.org")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final[:1] == b"K"
    cmds = s.sessions[0].commands
    assert cmds[:3] == [b"EHLO helo.example.org", b"HELO helo.example.org", b"MAIL FROM:<sender@example.org>"]


def test_helo_rejected(qmailhome, server):
    s = server(replies={"EHLO": b"502 no", "HELO": b"501 bad name"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"DConnected to 127.0.0.1 but my name was rejected.\nRemote host said: 501 bad name\n"


def test_size_parameter_and_quoting(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"john doe@ex.test", b"@ex.test"], sender=b"")
    assert result.records == [b"r", b"r"]
    size = len(MESSAGE)
    assert s.sessions[0].commands[1:4] == [
        b"MAIL FROM:<> SIZE=%d" % (size + (size >> 5) + 1), b'RCPT TO:<"john doe"@ex.test>', b'RCPT TO:<""@ex.test>']


def test_eight_bit_and_long_lines_sent_unchanged(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    body = b"Subject: \xe4\n\n" + b"x" * 5000 + b"\nmixed\r\nend\n"
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"], message=body)
    assert result.final[:1] == b"K"
    assert s.sessions[0].messages == [b"Subject: \xe4\r\n\r\n" + b"x" * 5000 + b"\r\nmixed\r\r\nend\r\n.\r\n"]
    assert b"BODY=" not in s.sessions[0].commands[1]


def test_partial_final_line_refused(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"], message=b"Subject: x\n\nno newline")
    assert result.records == [b"r"]
    assert result.final == b"DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
    time.sleep(0.1)
    assert s.sessions[0].messages == []


def test_large_message_from_mmap(qmailhome, sink, tmp_path):
    import mmap
    s = sink(dump=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    body = b"Subject: big\n\n" + b"".join(b".line %d\n" % i for i in range(40000))
    path = tmp_path / "mess"
    path.write_bytes(body)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        result = deliver(qmailhome, "ex.test", [b"a@ex.test"], message=m)
    assert result.final[:1] == b"K"
    time.sleep(0.2)
    assert s.dumps()[0].endswith(body + b"\n")


# ------------------------------------------------------------------------------------------ connection problems

def test_connection_refused_defers_without_tcpto_entry(qmailhome):
    port = free_tcp_port()
    route(qmailhome, f"ex.test:127.0.0.1:{port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.records == []
    assert result.final == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
    assert tcpto.entries(qmailhome) == []  # qmail counts only connect timeouts (tcpto_err(ip, errno == timeout))


@pytest.fixture
def full_listener():
    """A listener whose accept queue is full: further connects get no answer and time out."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    held = socket.create_connection(lsock.getsockname())
    yield lsock.getsockname()[1]
    held.close()
    lsock.close()


def test_connect_timeout_is_recorded_in_tcpto(qmailhome, full_listener):
    route(qmailhome, f"ex.test:127.0.0.1:{full_listener}")
    write_control(qmailhome, "timeoutconnect", "1")
    started = time.monotonic()
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert 0.9 < time.monotonic() - started < 5
    assert result.final == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
    [(ip, ago, count)] = tcpto.entries(qmailhome)
    assert (ip, count) == ("127.0.0.1", 1) and 0 <= ago <= 2
    out = subprocess.run([PY, "-m", "engine.tcpto"], capture_output=True, check=True).stdout
    assert out.decode().startswith("127.0.0.1 timed out ") and out.endswith(b"seconds ago; # recent timeouts: 1\n")


def test_dead_host_skipped_until_qmail_tcpok(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    record = bytes([127, 0, 0, 1, 2, 0, 0, 0]) + int(time.time()).to_bytes(4, "little") + bytes(4)
    with open(os.path.join(qmailhome, "queue", "lock", "tcpto"), "r+b") as f:
        f.write(record)
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
    assert s.sessions == []
    subprocess.run([PY, "-m", "engine.tcpok"], check=True)
    assert open(os.path.join(qmailhome, "queue", "lock", "tcpto"), "rb").read() == bytes(1024)
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K"


def test_successful_connection_resets_the_count(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    record = bytes([127, 0, 0, 1, 1, 0, 0, 0]) + int(time.time()).to_bytes(4, "little") + bytes(4)
    with open(os.path.join(qmailhome, "queue", "lock", "tcpto"), "r+b") as f:
        f.write(record)
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K"
    assert open(os.path.join(qmailhome, "queue", "lock", "tcpto"), "rb").read(5) == bytes([127, 0, 0, 1, 0])


def test_silent_server_times_out(qmailhome, server):
    s = server(silent=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    write_control(qmailhome, "timeoutremote", "1")
    started = time.monotonic()
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert 0.9 < time.monotonic() - started < 5
    assert result.final == b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n"


def test_connection_lost_after_message_is_possible_duplicate(qmailhome, server):
    s = server(drop={"."})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.records == [b"r"]
    assert result.final == b"ZConnected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n"
    assert s.sessions[0].messages == [STUFFED]


def test_connection_lost_at_rcpt(qmailhome, sink):
    s = sink("-q", "RCPT")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n"


def test_outgoingip(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    write_control(qmailhome, "outgoingip", "127.0.0.5")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K"
    assert s.sessions[0].peer[0] == "127.0.0.5"
    write_control(qmailhome, "outgoingip", "not-an-ip")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final == b"Zinvalid ipaddr in control/outgoingip (#4.3.0)\n"


# ------------------------------------------------------------------------------------------ smtproutes, AUTH, cookie

def test_smtproutes_suffix_default_and_port(qmailhome, server):
    exact, suffix, default = server(), server(), server()
    route(qmailhome, f"a.sub.test:127.0.0.1:{exact.port}", f".sub.test:[127.0.0.1]:{suffix.port}",
          f":127.0.0.1:{default.port}")
    for host in ("a.sub.test", "b.sub.test", "x.b.sub.test", "sub.test", "elsewhere.example"):
        assert deliver(qmailhome, host, [b"u@" + host.encode()]).final[:1] == b"K", host
    assert [len(exact.sessions), len(suffix.sessions), len(default.sessions)] == [1, 2, 2]


def test_smtproutes_empty_relay_means_mx(qmailhome, resolver, sink):
    s = sink()
    route(qmailhome, ".test:", f":127.0.0.1:{s.port}")
    result = deliver(qmailhome, "nonexistent.test", [b"u@nonexistent.test"], resolver=resolver)
    assert result.final == b"DSorry, I couldn't find any host named nonexistent.test. (#5.1.2)\n"


def test_auth_login_from_smtproutes(qmailhome, server):
    s = server(auth=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port} joe-user eat@joe's pass")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"], sender=b"s+x=y@example.org")
    assert result.final[:1] == b"K"
    sess = s.sessions[0]
    assert sess.auth == (b"joe-user", b"eat@joe's pass")
    assert sess.commands[1] == b"AUTH LOGIN"  # the server reads the base64 lines itself
    assert sess.commands[2].startswith(b"MAIL FROM:<s+x=y@example.org> SIZE=")
    assert sess.commands[2].endswith(b" AUTH=<s+2bx+3dy@example.org>")


def test_auth_needed_but_not_offered(qmailhome, server):
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port} joe secret")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final.startswith(b"ZConnected to 127.0.0.1 but no SMTP AUTH support detected but needed.")


def test_auth_rejected(qmailhome, server):
    s = server(auth=True, replies={"AUTHDONE": b"535 bad credentials"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port} joe secret")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == (b"DConnected to 127.0.0.1 but authentication was rejected (password).\n"
                            b"Remote host said: 535 bad credentials\n")


def test_cluster_cookie_loop(qmailhome, server):
    s = server(greeting=b"220 mx.example.org ESMTP abcdefgh12345678")
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    write_control(qmailhome, "smtpclustercookie", "abcdefgh12345678")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"DSorry. Message is looping within cluster, giving up. (#5.4.6)\n"
    write_control(qmailhome, "smtpclustercookie", "another-cookie")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K"


# ------------------------------------------------------------------------------------------ STARTTLS, DATAZ

def test_starttls_used_when_offered(qmailhome, server, certs):
    cert, key, _ = certs["server"]
    s = server(certfile=cert, keyfile=key)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    sess = s.sessions[0]
    assert sess.tls and sess.messages == [STUFFED]
    assert sess.commands[:3] == [b"EHLO testhost.example.org", b"STARTTLS", b"EHLO testhost.example.org"]
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    lines = result.final.split(b"\n")
    assert lines[0] == b"K127.0.0.1 accepted message."
    assert lines[1].startswith(b"STARTTLS proto=TLSv1.")
    assert lines[1].endswith(b"; fingerprint=SHA256:" + hashlib.sha256(der).hexdigest().encode() + b";")
    assert lines[2] == b"Remote host said: 250 ok queued"
    assert sess.client_cert is None


def test_starttls_refused_continues_in_plain_text(qmailhome, server, certs):
    cert, key, _ = certs["server"]
    s = server(certfile=cert, keyfile=key, replies={"STARTTLS": b"454 TLS not available now"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final == b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n"
    assert not s.sessions[0].tls and s.sessions[0].commands[1:3] == [b"STARTTLS", b"MAIL FROM:<sender@example.org> SIZE=72"]


def test_starttls_with_remotecert(qmailhome, server, certs):
    cert, key, _ = certs["server"]
    ccert, _, cpem = certs["client"]
    s = server(certfile=cert, keyfile=key, cafile=ccert)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    write_control(qmailhome, "remotecert", cpem)
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K"
    assert s.sessions[0].client_cert == ssl.PEM_cert_to_DER_cert(open(ccert).read())
    write_control(qmailhome, "remotecert", "control/missing.pem")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final.startswith(
        b"ZTLS not available: error initializing ssl: ")


def test_tls_cipher_settings(qmailhome, server, certs):
    cert, key, _ = certs["server"]
    s = server(certfile=cert, keyfile=key)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    for keyword in ("secure", "legacy", "all", "HIGH:!aNULL"):
        write_control(qmailhome, "tlsremoteciphers", keyword)
        assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final[:1] == b"K", keyword
    write_control(qmailhome, "tlsremoteciphers", "no-such-cipher")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final.startswith(
        b"ZTLS not available: error initializing ssl: ")
    write_control(qmailhome, "tlsremoteciphers", "compat")
    write_control(qmailhome, "tlsdheparams", "bogus")
    assert deliver(qmailhome, "ex.test", [b"a@ex.test"]).final == \
        b"ZTLS not available: error initializing ssl: invalid dhe param 'bogus'\n"


def test_failed_tls_handshake_defers(qmailhome, server, certs):
    cert, key, _ = certs["server"]
    s = server(certfile=cert, keyfile=key, bad_tls=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"])
    assert result.final.startswith(b"ZTLS not available: connect failed: ")


def test_dataz_compresses_the_message(qmailhome, server):
    s = server(dataz=True)
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    body = b"Subject: z\n\n" + b"compressible line\n" * 2000
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"], message=body)
    stuffed = body.replace(b"\n", b"\r\n") + b".\r\n"
    total_out = len(zlib.compress(stuffed))
    saved = 100 - int(100.0 * total_out / len(stuffed))
    assert b"DATAZ" in s.sessions[0].commands and b"DATA" not in s.sessions[0].commands
    assert s.sessions[0].messages == [stuffed]
    assert result.final == (b"K127.0.0.1 accepted message.\nDDC saved  %d percent.\n"
                            b"Remote host said: 250 ok queued\n" % saved)


def test_dataz_saving_reported_only_for_accepted_message(qmailhome, server):
    """qmail-remote.c quit(): `DDC saved` is printed only after success (wantcomp becomes 2 with K)."""
    s = server(dataz=True, replies={".": b"554 5.7.1 refused"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    result = deliver(qmailhome, "ex.test", [b"a@ex.test"], message=b"Subject: z\n\n" + b"line\n" * 100)
    assert result.final == b"D127.0.0.1 failed after I sent the message.\nRemote host said: 554 5.7.1 refused\n"


# ------------------------------------------------------------------------------------------ DNS

def test_mx_preference_order(qmailhome, resolver, server, monkeypatch):
    """mx.test: MX 10 -> 127.0.0.2 (nothing listening: refused), MX 20 -> 127.0.0.3 (server)."""
    s = server(host="127.0.0.3")
    monkeypatch.setenv("QMAIL_PORT_SMTP", str(s.port))
    result = deliver(qmailhome, "mx.test", [b"a@mx.test"], resolver=resolver)
    assert result.final.startswith(b"K127.0.0.3 accepted message.")


def test_mx_4xx_greeting_tries_next(qmailhome, resolver, server, monkeypatch):
    port = free_tcp_port("127.0.0.2")
    first = server(host="127.0.0.2", port=port, greeting=b"421 busy")
    server(host="127.0.0.3", port=port)
    monkeypatch.setenv("QMAIL_PORT_SMTP", str(port))
    result = deliver(qmailhome, "mx.test", [b"a@mx.test"], resolver=resolver)
    assert len(first.sessions) == 1
    assert result.final.startswith(b"K127.0.0.3 accepted message.")


def test_no_mx_falls_back_to_address(qmailhome, resolver, server, monkeypatch):
    s = server(host="127.0.0.3")
    monkeypatch.setenv("QMAIL_PORT_SMTP", str(s.port))
    assert deliver(qmailhome, "amx.test", [b"a@amx.test"], resolver=resolver).final[:1] == b"K"


def test_no_such_host(qmailhome, resolver):
    result = deliver(qmailhome, "nope.test", [b"a@nope.test"], resolver=resolver)
    assert result.final == b"DSorry, I couldn't find any host named nope.test. (#5.1.2)\n"


def test_dns_temporary_failure(qmailhome, resolver):
    result = deliver(qmailhome, "outside.example", [b"a@outside.example"], resolver=resolver)
    assert result.final == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"


def test_mx_without_address(qmailhome, resolver):
    result = deliver(qmailhome, "noaddr.test", [b"a@noaddr.test"], resolver=resolver)
    assert result.final == b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"


def test_best_mx_is_me(qmailhome, resolver):
    result = deliver(qmailhome, "self.test", [b"a@self.test"], resolver=resolver)
    assert result.final == (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
                            b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")
    assert deliver(qmailhome, "[127.0.0.1]", [b"a@[127.0.0.1]"], resolver=resolver).final == result.final


def test_mx_at_or_above_my_preference_skipped(qmailhome, resolver, server, monkeypatch):
    """mixed.test: MX 10 -> 127.0.0.2, MX 20 -> this host: only 127.0.0.2 is tried."""
    s = server(host="127.0.0.2")
    me = server(host="127.0.0.1", port=s.port)
    monkeypatch.setenv("QMAIL_PORT_SMTP", str(s.port))
    assert deliver(qmailhome, "mixed.test", [b"a@mixed.test"], resolver=resolver).final[:1] == b"K"
    assert me.sessions == []


def test_mx_equal_preferences_random_order(resolver):
    firsts = set()
    for _ in range(40):
        status, ips = run(qdns.dns_mxip(resolver, "equal.test"))
        assert status == 0 and ips[0] == ("127.0.0.13", 5)
        assert sorted(ips[1:]) == [("127.0.0.11", 10), ("127.0.0.12", 10)]
        firsts.add(ips[1][0])
    assert firsts == {"127.0.0.11", "127.0.0.12"}


def test_qmtp_preference_uses_qmtp(qmailhome, resolver, monkeypatch):
    """qmtp.test: MX 12801 (QMTP preference) -> 127.0.0.2 running QMTP."""
    q = QMTPServer(host="127.0.0.2", responses={b"no@qmtp.test": b"Dno mailbox", b"later@qmtp.test": b"Zlater"}).start()
    try:
        monkeypatch.setenv("QMAIL_PORT_QMTP", str(q.port))
        result = deliver(qmailhome, "qmtp.test", [b"a@qmtp.test", b"no@qmtp.test", b"later@qmtp.test"],
                         resolver=resolver)
    finally:
        q.stop()
    assert q.sessions[0].messages == [b"\n" + MESSAGE]
    assert q.sessions[0].commands == [(SENDER, [b"a@qmtp.test", b"no@qmtp.test", b"later@qmtp.test"])]
    assert result.records == [b"r", b"h127.0.0.2  does not like recipient.\nRemote host said: qmtp: no mailbox\n",
                              b"s127.0.0.2  does not like recipient.\nRemote host said: qmtp: later\n"]
    assert result.final == b"K127.0.0.2 accepted message.\nRemote host said: qmtp: later\n"


def test_qmtp_refused_falls_back_to_smtp(qmailhome, resolver, server, monkeypatch):
    port = free_tcp_port("127.0.0.2")
    s = server(host="127.0.0.2", port=port)
    monkeypatch.setenv("QMAIL_PORT_SMTP", str(port))
    monkeypatch.setenv("QMAIL_PORT_QMTP", str(free_tcp_port("127.0.0.2")))
    result = deliver(qmailhome, "qmtp.test", [b"a@qmtp.test"], resolver=resolver)
    assert result.final.startswith(b"K127.0.0.2 accepted message.")
    assert len(s.sessions) == 1


def test_ipv6_only_host_uses_aaaa(resolver):
    assert run(qdns.dns_ip(resolver, "v6only.test")) == (0, [("::1", 0)])


# ------------------------------------------------------------------------------------------ the program

def test_program_reports_on_stdout(qmailhome, server, tmp_path):
    s = server(rcpt={b"no@ex.test": b"553 sorry"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    mess = tmp_path / "mess"
    mess.write_bytes(MESSAGE)
    with open(mess, "rb") as stdin:
        p = subprocess.run([PY, "-m", "engine.remote", "ex.test", SENDER, "no@ex.test", "yes@ex.test"],
                           stdin=stdin, capture_output=True)
    assert p.returncode == 0
    assert p.stdout == (b"h127.0.0.1 does not like recipient.\nRemote host said: 553 sorry\n\0r\0"
                        b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    assert s.sessions[0].messages == [STUFFED]


def test_program_usage_and_pipe_input(qmailhome, server):
    p = subprocess.run([PY, "-m", "engine.remote", "ex.test", "sender"], input=b"", capture_output=True)
    assert (p.returncode, p.stdout) == (0, b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0")
    s = server()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    p = subprocess.run([PY, "-m", "engine.remote", "ex.test", "", "a@ex.test"], input=MESSAGE, capture_output=True)
    assert p.returncode == 0 and p.stdout.startswith(b"r\0K127.0.0.1 accepted message.\n")


def test_program_uses_qmail_dns_server(qmailhome, dnsd, server, tmp_path):
    s = server(host="127.0.0.3")
    env = dict(os.environ, QMAIL_DNS_SERVER=dnsd.address, QMAIL_PORT_SMTP=str(s.port))
    p = subprocess.run([PY, "-m", "engine.remote", "nope.test", "s", "a@nope.test"], input=MESSAGE,
                       capture_output=True, env=env)
    assert p.stdout == b"DSorry, I couldn't find any host named nope.test. (#5.1.2)\n\0"
    p = subprocess.run([PY, "-m", "engine.remote", "amx.test", "s", "a@amx.test"], input=MESSAGE,
                       capture_output=True, env=env)
    assert p.stdout.startswith(b"r\0K127.0.0.3 accepted message.\n")


def test_program_without_controls(tmp_path, monkeypatch):
    monkeypatch.setenv("QMAILHOME", str(tmp_path / "missing"))
    p = subprocess.run([PY, "-m", "engine.remote", "ex.test", "s", "a@ex.test"], input=b"x\n", capture_output=True)
    assert p.stdout == b"ZUnable to switch to home directory. (#4.3.0)\n\0"
    os.makedirs(tmp_path / "missing" / "control")
    p = subprocess.run([PY, "-m", "engine.remote", "ex.test", "s", "a@ex.test"], input=b"x\n", capture_output=True)
    assert p.stdout == b"ZUnable to read control files. (#4.3.0)\n\0"


def test_many_concurrent_deliveries_in_one_process(qmailhome, sink):
    s = sink()
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    controls = remote.load_controls(qmailhome)

    async def many():
        return await asyncio.gather(*(remote.deliver("ex.test", SENDER, [b"u%d@ex.test" % i], MESSAGE,
                                                     home=qmailhome, controls=controls) for i in range(30)))
    results = run(many())
    assert all(r.records == [b"r"] and r.final.startswith(b"K127.0.0.1 accepted message.") for r in results)


# ------------------------------------------------------------------------------------------ pure helpers

@pytest.mark.parametrize("addr,wire", [
    (b"user@ex.test", b"user@ex.test"), (b"a.b@ex.test", b"a.b@ex.test"), (b".a@ex.test", b'".a"@ex.test'),
    (b"a..b@ex.test", b'"a..b"@ex.test'), (b'q"t@ex.test', b'"q\\"t"@ex.test'), (b"\xe4@ex.test", b'"\xe4"@ex.test'),
    (b"x@y@ex.test", b'"x@y"@ex.test'), (b"nohost", b"nohost"), (b"", b"")])
def test_addrmangle(addr, wire):
    assert remote.addrmangle(addr) == wire


def test_xtext_and_extensions():
    assert remote.xtext(b"a+b=c d\xff") == b"a+2bb+3dc+20d+ff"
    ext = remote.parse_extensions(b"250-host\n250-size 100\n250-AUTH PLAIN\n250-STARTTLS\n250 DATAZ\n")
    assert ext == {"SIZE", "STARTTLS", "DATAZ"}
    assert "AUTH LOGIN" in remote.parse_extensions(b"250-host\n250-AUTH CRAM-MD5 LOGIN\n250 8BITMIME\n")


def test_deliver_output_is_what_rspawn_reads(qmailhome, server):
    s = server(rcpt={b"no@ex.test": b"550 unknown"})
    route(qmailhome, f"ex.test:127.0.0.1:{s.port}")
    out = run(remote.deliver_output("ex.test", SENDER, [b"no@ex.test"], MESSAGE, home=qmailhome))
    assert out == (b"h127.0.0.1 does not like recipient.\nRemote host said: 550 unknown\n\0"
                   b"DGiving up on 127.0.0.1.\nRemote host said: 550 unknown\n\0")
    assert merge_report(out) == (b"D", b"127.0.0.1 does not like recipient.\nRemote host said: 550 unknown\n"
                                       b"Giving up on 127.0.0.1.\nRemote host said: 550 unknown\n")


def test_smtproutes_parsing():
    from engine.control import ConstMap
    c = remote.Controls(b"h", b"", 120, 60, ConstMap(["a.test:relay.test:2525 user pass word", "b.test:",
                                                    "c.test:[10.0.0.1]", ".d.test:relay2:26"], values=True),
                        "0.0.0.0", "", "compat", "none")
    r = remote.find_route("a.test", c)
    assert (r.host, r.port, r.relay, r.auth_login, r.auth_passwd) == (
        "relay.test", 2525, True, base64.b64encode(b"user"), base64.b64encode(b"pass word"))
    assert (remote.find_route("b.test", c).relay, remote.find_route("b.test", c).host) == (False, "b.test")
    assert (remote.find_route("c.test", c).host, remote.find_route("c.test", c).port) == ("[10.0.0.1]", 25)
    assert remote.find_route("x.d.test", c).host == "relay2" and remote.find_route("d.test", c).relay is False
