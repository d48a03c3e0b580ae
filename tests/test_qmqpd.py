"""qmail-qmqpd (spec 5.1) as a program: one real process per test on one end of a socketpair.

A raw client sends exact request bytes; the answer netstring, the exit
code and what reached the queue are compared with qmail-qmqpd.c's
behaviour.
"""

import asyncio
import os
import re
import socket
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BIN = os.path.dirname(sys.executable)
ENV = {"TCPREMOTEIP": "192.0.2.7", "TCPREMOTEHOST": "client.example", "TCPLOCALHOST": "mx.example.test"}
T_ADDR = b"Dsorry, I can't accept addresses like that (#5.1.3)"


def ns(b):
    return b"%d:%s," % (len(b), b)


def request(message, sender, recipients):
    return ns(ns(message) + ns(sender) + b"".join(ns(r) for r in recipients))


class Qmqpd:
    """qmail-qmqpd serving the far end of a socketpair, as tcpserver hands it a connection."""

    def __init__(self, home, env):
        ours, theirs = socket.socketpair()
        full = {"PATH": os.environ["PATH"], "QMAILHOME": home, **ENV, **env}
        self.proc = subprocess.Popen([os.path.join(BIN, "qmail-qmqpd")], stdin=theirs, stdout=theirs,
                                     stderr=subprocess.PIPE, env=full)
        theirs.close()
        ours.settimeout(15)
        self.sock = ours

    def exchange(self, data, close=False):
        """Sends data; returns (answer bytes, exit code, stderr)."""
        self.sock.sendall(data)
        if close:
            self.sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        err = self.proc.stderr.read()
        return answer, self.proc.wait(15), err


@pytest.fixture
def qmqpd(qmailhome):
    started = []

    def start(**env):
        p = Qmqpd(qmailhome, env)
        started.append(p)
        return p
    yield start
    for p in started:
        p.sock.close()
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait()
        p.proc.stderr.close()


def queued(home):
    """[(message bytes, todo envelope bytes)] in the queue."""
    out = []
    mess = os.path.join(home, "queue", "mess")
    for split in os.listdir(mess):
        for name in os.listdir(os.path.join(mess, split)):
            with open(os.path.join(mess, split, name), "rb") as f:
                message = f.read()
            with open(os.path.join(home, "queue", "todo", split, name), "rb") as f:
                out.append((message, f.read()))
    return out


RECEIVED = re.compile(rb"Received: from client\.example \((?P<info>ident@)?\[192\.0\.2\.7\]\)\n"
                      rb"          by mx\.example\.test \(qmail-ldap-1\.03\) with (?P<proto>[a-zA-Z ]+); "
                      rb"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000\n")


def test_plain_request_is_queued_with_the_received_line(qmqpd, qmailhome):
    p = qmqpd(TCPREMOTEINFO="ident")
    body = b"Subject: plain\n\nhello\n"
    answer, code, err = p.exchange(request(body, b"a@remote.test", [b"joe@example.test", b"ann@example.test"]))
    m = re.fullmatch(rb"(\d+):Kok (\d+) qp (\d+),", answer)
    assert m and int(m[1]) == len(answer) - len(m[1]) - 2 and int(m[3]) == p.proc.pid
    assert code == 0 and err == answer[answer.index(b":") + 2:-1] + b"\n", "the answer without K is logged"
    [(message, envelope)] = queued(qmailhome)
    second = message.split(b"\n", 1)[1]  # after qmail-queue's own Received line
    r = RECEIVED.match(second)
    assert r and r["info"] == b"ident@" and r["proto"] == b"QMQP"
    assert second[r.end():] == body
    assert envelope.endswith(b"\0Fa@remote.test\0Tjoe@example.test\0Tann@example.test\0")


def test_without_tcpremoteinfo_and_host(qmqpd, qmailhome):
    p = qmqpd(TCPREMOTEHOST="")
    answer, code, _ = p.exchange(request(b"x\n", b"", [b"joe@example.test"]))
    assert answer.split(b":", 1)[1].startswith(b"Kok ")
    [(message, envelope)] = queued(qmailhome)
    assert b"\nReceived: from unknown ([192.0.2.7])\n          by mx.example.test (qmail-ldap-1.03) with QMQP; " \
        in message
    assert b"\0F\0Tjoe@example.test\0" in envelope


def test_compressed_request_and_ddc_percent(qmqpd, qmailhome):
    req = request(b"Subject: z\n\n" + b"a line that compresses well\n" * 400, b"a@remote.test", [b"joe@example.test"])
    packed = zlib.compress(req)
    answer, code, _ = qmqpd().exchange(packed)
    m = re.fullmatch(rb"\d+:Kok \d+ qp \d+ DDC saved (\d+) percent,", answer)
    assert m and code == 0
    assert int(m[1]) == 100 - int(100.0 * len(packed) / len(req))
    [(message, _)] = queued(qmailhome)
    r = RECEIVED.match(message.split(b"\n", 1)[1])
    assert r and r["proto"] == b"compressed QMQP" and r["info"] is None


def test_nocompress_takes_zlib_for_a_protocol_error(qmqpd, qmailhome):
    answer, code, _ = qmqpd(NOCOMPRESS="1").exchange(zlib.compress(request(b"x\n", b"a@b", [b"c@d"])))
    assert (answer, code) == (b"", 100) and queued(qmailhome) == []


def test_corrupt_zlib_stream_is_a_temporary_answer(qmqpd, qmailhome):
    answer, code, _ = qmqpd().exchange(b"x\x9c" + b"\xff" * 40)
    payload = answer.split(b":", 1)[1]
    assert payload.startswith(b"ZReceiving compressed data failed: ") and payload.endswith(b" #(4.3.0),")
    assert code == 111 and queued(qmailhome) == []


@pytest.mark.parametrize("data, code", [
    (b"300000000:", 111),                                   # outer length above 200,000,000
    (b"20:300000000:", 111),                                # inner length above it
    (b"20:1a:", 100),                                       # a non-digit in a length
    (b"0:,", 100),                                          # no room for the message
    (b"6:2:x\n,,", 100),                                    # message only, no sender
    (b"10:2:x\n,1:a,,", 100),                               # inner netstrings run past the outer one
    (b"14:2:x\n,1:a,1:b,,", 100),                           # the outer one is longer than the inner ones
    (b"9:2:x\n,1:a,;", 100),                                # no final comma
    (b"9:2:x\n;1:a,,", 100),                                # no comma after the message
    (b"0" * 101 + b":", 100),                               # qmail-qmqpd reads at most 100 length bytes
])
def test_protocol_errors_end_without_an_answer(qmqpd, qmailhome, data, code):
    answer, got, _ = qmqpd().exchange(data)
    assert (answer, got) == (b"", code) and queued(qmailhome) == []


def test_non_digit_in_the_first_length(qmqpd, qmailhome):
    """Before the first ':' a non-digit means zlib, so a plain syntax error there is a bad zlib stream;
    with NOCOMPRESS it is the protocol error."""
    answer, code, _ = qmqpd().exchange(b"12a:")
    assert answer.split(b":", 1)[1].startswith(b"ZReceiving compressed data failed: ") and code == 111
    assert qmqpd(NOCOMPRESS="").exchange(b"12a:")[:2] == (b"", 100)


def test_client_closing_early_exits_0(qmqpd, qmailhome):
    answer, code, _ = qmqpd().exchange(b"100:5:hello,", close=True)
    assert (answer, code) == (b"", 0) and queued(qmailhome) == []


@pytest.mark.parametrize("sender, recipients", [
    (b"a" * 1000, [b"joe@example.test"]),
    (b"a@remote.test", [b"joe@example.test", b"x" * 990 + b"@long.test"]),
    (b"a\0b@remote.test", [b"joe@example.test"]),
    (b"a@remote.test", [b"jo\0e@example.test"]),
])
def test_long_or_nul_addresses_fail_the_message(qmqpd, qmailhome, sender, recipients):
    answer, code, err = qmqpd().exchange(request(b"x\n", sender, recipients))
    assert answer == ns(T_ADDR) and code == 0 and err == T_ADDR[1:] + b"\n"
    assert queued(qmailhome) == []


def test_address_of_999_bytes_is_accepted(qmqpd, qmailhome):
    answer, _, _ = qmqpd().exchange(request(b"x\n", b"a@remote.test", [b"j" * 986 + b"@example.test"]))
    assert answer.split(b":", 1)[1].startswith(b"Kok ")
    assert len(queued(qmailhome)) == 1


@pytest.mark.parametrize("exit_code, text", [
    (31, b"Dmail server permanently rejected message (#5.3.0)"),
    (53, b"Zqq write error or disk full (#4.3.0)"),
])
def test_queue_failure_text_is_the_answer(qmqpd, qmailhome, tmp_path, exit_code, text):
    script = tmp_path / "queue"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\nexit {exit_code}\n")
    script.chmod(0o755)
    answer, code, _ = qmqpd(QMAILQUEUE=str(script)).exchange(request(b"x\n", b"a@b", [b"c@d"]))
    assert answer == ns(text) and code == 0 and queued(qmailhome) == []


def test_the_alarm_ends_a_stalled_request(qmailhome, monkeypatch):
    """alarm(3600): SESSION_LIMIT seconds for the whole connection (1 s here), then exit 111."""
    from engine import qmqpd
    from engine.smtpservices import Services
    monkeypatch.setattr(qmqpd, "SESSION_LIMIT", 1)

    async def stalled():
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=theirs)
        ours.sendall(b"100:5:hel")
        try:
            return await qmqpd.Session(reader, writer, {}, None, Services(qmailhome)).run()
        finally:
            ours.close()
    assert asyncio.run(asyncio.wait_for(stalled(), 10)) == 111


@settings(max_examples=200, deadline=None)
@given(message=st.binary(max_size=300), sender=st.binary(max_size=30), recipients=st.lists(st.binary(max_size=30)),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6), compress=st.booleans())
def test_request_parses_however_it_is_split(message, sender, recipients, cuts, compress):
    """The payloads come out whole whatever chunks the bytes arrive in, plain or compressed."""
    from engine import compiled, qmqpd
    data = request(message, sender, recipients)
    wire = zlib.compress(data) if compress else data
    inflater, parsed = compiled.load("zdata").QmqpInflater(), qmqpd.Request()
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    for a, b in zip(bounds, bounds[1:]):
        plain = inflater.feed(wire[a:b])
        if plain and not parsed.complete:
            parsed.feed(plain)
    assert parsed.complete and parsed.payloads == [message, sender, *recipients]
    assert inflater.compressed is compress
