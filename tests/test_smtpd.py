"""qmail-smtpd against real clients on a running master: reply lines of spec 5.3, check order, relay control.

One master serves every test; the client's source address (127.0.0.N) picks the
tcprules environment, as tcpserver would, so each test sees its own settings.
"""

import base64
import os
import smtplib
import socket
import subprocess
import time

import pytest

from engine import compiled, passwd, todo
from support.master import Master
from support.dnsserver import DnsServer
from support.ports import free_port
from support.slapd import add_user, slapd  # noqa: F401
from support.smtpclient import Dialogue
from support.users import delivered, make_users

ME = "testhost.example.org"
RULES = """\
127.0.0.2:allow,RELAYCLIENT=""
127.0.0.3:allow,SANITYCHECK="",NOBOUNCE="",BLOCKRELAYPROBE="",MAXRCPTCOUNT="3"
127.0.0.4:allow,550GREETING=""
127.0.0.5:allow,421GREETING="Try again later (#4.3.2)"
127.0.0.6:allow,SMTPAUTH=""
127.0.0.7:allow,RCPTCHECK=""
127.0.0.8:deny
127.0.0.9:allow,SMTPAUTH="",AUTHREQUIRED=""
127.0.0.10:allow,DATABYTES="1000"
127.0.0.11:allow,SMTP550DISCONNECT=""
127.0.0.12:allow,RELAYCLIENT="-relayed"
127.0.0.13:allow,SENDERCHECK="STRICT"
127.0.0.15:allow,SMTPAUTH="TLSREQUIRED"
127.0.0.16:allow,RCPTCHECK="",LDAPSOFTOK=""
127.0.0.17:allow,QMAILQUEUE="QUEUEFILTER"
127.0.0.18:allow,GREETDELAY="3",DROPRUSHGREET=""
127.0.0.19:allow,TARPITCOUNT="2",TARPITDELAY="1"
127.0.0.20:allow,RCPTCHECK="",BADRCPTDELAY="1"
127.0.0.21:allow,REJECTEXEC=""
127.0.0.22:allow,NOLOCAL=""
127.0.0.24:allow,SMTPAUTH="",AUTHPREPEND="auth/",QMAILQUEUE="ENVRECORDER"
127.0.0.25:allow,RBL=""
127.0.0.26:allow,RBL="",RETURNMXCHECK=""
127.0.0.27:allow,SENDERCHECK="LOOSE"
127.0.0.28:allow,RETURNMXCHECK=""
"""


def write(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory, slapd):  # noqa: F811
    base = tmp_path_factory.mktemp("smtp")
    from support.qmailhome import make_qmailhome
    home = make_qmailhome(str(base / "qmail"), me=ME)
    users = make_users(home, str(base / "home"), ["alice", "bob"])
    port = free_port()
    write(home, "smtplisten", f"127.0.0.1:{port}\n")
    write(home, "smtpworkers", "1\n")
    write(home, "smtpdataz", "1\n")
    qfilter = os.path.join(str(base), "queue-filter")
    with open(qfilter, "w") as f:
        f.write("#!/bin/sh\nprintf 'Dsorry, your message looks like spam (#5.7.1)' >&4\nexit 82\n")
    os.chmod(qfilter, 0o755)
    recorder = os.path.join(str(base), "env-recorder")
    real_queue = os.path.join(os.path.dirname(__import__("sys").executable), "qmail-queue")
    with open(recorder, "w") as f:
        f.write(f"#!/bin/sh\nenv > {base}/queue-env\nexec {real_queue}\n")
    os.chmod(recorder, 0o755)
    write(home, "smtprules", RULES.replace("QUEUEFILTER", qfilter).replace("ENVRECORDER", recorder))
    write(home, "goodmailfrom", "good@spam2.test\n")
    write(home, "badmailfrom-unknown", "unk@spam3.test\n@nodns.test\n")
    write(home, "signatures", "TVqQ*AAAE\nUEsDBBQ\n")
    write(home, "rbllist", "reject.rbl.test reject any Listed by the test RBL\n"
                           "tag.rbl.test addheader 127.0.0.9 Tagged by the test list\n")
    dns = DnsServer(mx=[("mx.test", "mail.mx.test", 10)],
                    hosts=[("25.0.0.127.tag.rbl.test", "127.0.0.9"), ("26.0.0.127.reject.rbl.test", "127.0.0.2"),
                           ("mail.mx.test", "192.0.2.1"), ("a-only.test", "192.0.2.2")], local=("test",)).start()
    write(home, "rcpthosts", "example.test\n.sub.example.test\n")
    write(home, "locals", f"example.test\nlocalhost\n{ME}\n")
    write(home, "badmailfrom", "bad@spam.test\n@spam2.test\nbaduser@\n")
    write(home, "badrcptto", "nobody@example.test\n@blocked.example.test\n")
    write(home, "relaymailfrom", "relay@trusted.test\n")
    write(home, "goodmailaddr", "postmaster@example.test\n")
    cert = os.path.join(home, "control", "smtpcert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={ME}", "-keyout", cert, "-out", cert + ".crt"],
                   check=True, capture_output=True)
    with open(cert, "a") as f, open(cert + ".crt") as c:
        f.write(c.read())
    write(home, "smtpcert", cert + "\n")
    write(home, "ldapserver", f"{slapd.hostport}\n")
    write(home, "ldapbasedn", f"{slapd.suffix}\n")
    write(home, "ldaplocaldelivery", "1\n")
    add_user(slapd, "smtpuser", "smtpuser@example.test", userPassword=passwd.make("s3cret", "ssha"),
             mailMessageStore=users["bob"] + "/")
    add_user(slapd, "gone", "gone@example.test", accountStatus="deleted", mailMessageStore="/nonexistent/")
    add_user(slapd, "off", "off@example.test", accountStatus="disabled", mailMessageStore="/nonexistent/")
    add_user(slapd, "locked", "locked@example.test", accountStatus="noaccess",
             userPassword=passwd.make("s3cret", "ssha"),
             mailMessageStore=users["bob"] + "/")
    m = Master(home, env={"QMAIL_DNS_SERVER": dns.address}).start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"home": home, "port": port, "users": users, "master": m, "base": str(base)}
    m.stop()
    dns.stop()


def dial(server, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server["port"]))
    d = Dialogue.__new__(Dialogue)
    d.sock, d.buf = s, b""
    s.settimeout(10)
    return d


def test_greeting_helo_ehlo_and_simple_verbs(server):
    d = dial(server)
    assert d.read_reply() == f"220 {ME} ESMTP "
    assert d.cmd("HELO client.example") == f"250 {ME} "
    ehlo = d.cmd("EHLO client.example").split("\n")
    assert ehlo == [f"250-{ME} ", "250-PIPELINING", "250-DATAZ", "250-STARTTLS", "250 8BITMIME"]
    assert d.cmd("NOOP") == "250 ok"
    assert d.cmd("VRFY joe") == "252 send some mail, i'll try my best"
    assert d.cmd("HELP") == ("214-qmail home page: http://pobox.com/~djb/qmail.html\n"
                             "214 qmail-ldap patch home page: http://www.nrg4u.com")
    assert d.cmd("RSET") == "250 flushed"
    assert d.cmd("FOO bar") == "502 unimplemented (#5.5.1)"
    assert d.cmd("RCPT TO:<alice@example.test>") == "503 MAIL first (#5.5.1)"
    assert d.cmd("DATA") == "503 MAIL first (#5.5.1)"
    assert d.cmd("MAIL FROM:<a@b.test>") == "250 ok"
    assert d.cmd("DATA") == "503 RCPT first (#5.5.1)"
    assert d.cmd("MAIL FROM:") == "555 syntax error (#5.5.4)"
    assert d.cmd("AUTH LOGIN") == "502 unimplemented (#5.5.1)"
    assert d.cmd("QUIT") == f"221 {ME} Goodbye."
    assert d.closed()


def test_mail_is_queued_and_delivered_with_received_line(server):
    with smtplib.SMTP("127.0.0.1", server["port"]) as c:
        code, text = c.ehlo("client.example")
        c.sendmail("sender@remote.test", ["alice@example.test"], "Subject: hi\r\n\r\nhello\r\n.dot\r\n")
    m = server["master"]
    m.wait_for(lambda: delivered(server["users"]["alice"]), 30, "delivery to alice")
    with open(delivered(server["users"]["alice"])[-1], "rb") as f:
        msg = f.read().decode()
    assert "Received: from localhost (HELO client.example) ([127.0.0.1])\n" in msg
    assert "          (envelope-sender <sender@remote.test>)\n" in msg
    assert f"          by {ME} (qmail-ldap-1.03) with SMTP\n          for <alice@example.test>; " in msg
    assert msg.endswith("Subject: hi\n\nhello\n.dot\n")


def test_accept_reply_names_time_qp_and_me(server):
    d = dial(server)
    d.read_reply()
    d.cmd("HELO x")
    d.cmd("MAIL FROM:<s@remote.test>")
    assert d.cmd("RCPT TO:<alice@example.test>") == "250 ok"
    assert d.cmd("DATA") == "354 go ahead punk, make my day"
    reply = d.cmd("Subject: x\r\n\r\nbody\r\n.")
    assert reply.startswith("250 ok ") and " qp " in reply and reply.endswith(f" by {ME}")


RELAY_CASES = [
    "victim@elsewhere.test", "victim%elsewhere.test@example.test", "victim@elsewhere.test@example.test",
    "\"victim@elsewhere.test\"@example.test", "victim@[192.0.2.1]", "@example.test:victim@elsewhere.test",
    "victim@elsewhere.test.", "VICTIM@ELSEWHERE.TEST", "elsewhere.test!victim", "victim@example.test.evil.test",
    "victim@sub.example.test.evil.test", "victim@notexample.test", "victim@[127.0.0.1]x",
    "victim@example.testx", "<victim@elsewhere.test>", "victim@elsewhere.test\" \"",
    "victim@elsewhere.test>", "victim @elsewhere.test", "victim@.elsewhere.test",
    "victim@elsewhere..test", "\\\"victim\\\"@elsewhere.test", "victim@ELSEWHERE.test",
    "victim@x.sub.example.test.elsewhere.test", "victim%example.test@elsewhere.test",
    "example.test!victim@elsewhere.test",
]


@pytest.mark.parametrize("rcpt", RELAY_CASES)
def test_no_open_relay(server, rcpt):
    """Without RELAYCLIENT, AUTH or relaymailfrom nothing is accepted that would leave this host:
    an accepted address must be one qmail-todo delivers locally (no percenthack here)."""
    rewriter = todo.Rewriter(server["home"])
    parse = compiled.load("smtpparse").parse_addr
    for sender in ("<a@elsewhere.test>", "<>", "<postmaster@example.test>"):
        d = dial(server)
        d.read_reply()
        d.cmd("HELO x")
        assert d.cmd(f"MAIL FROM:{sender}") == "250 ok"
        reply = d.cmd(f"RCPT TO:<{rcpt}>")
        if reply == "250 ok":
            channel, addr = rewriter.rewrite(parse(f"<{rcpt}>".encode()))
            assert channel == b"L", f"{rcpt!r} accepted from {sender} for remote delivery to {addr!r}"
        else:
            assert reply.startswith("553 sorry, relaying denied from your location [127.0.0.1]") or \
                reply == "555 syntax error (#5.5.4)" or reply.startswith("553 sorry, mail to that recipient")
        d.close()


def test_local_and_rcpthosts_suffix_are_accepted(server):
    d = dial(server)
    d.read_reply()
    d.cmd("MAIL FROM:<a@elsewhere.test>")
    assert d.cmd("RCPT TO:<bob@example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<x@deep.sub.example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<postmaster>") == "250 ok"


def test_relayclient_and_its_suffix(server):
    d = dial(server, "127.0.0.2")
    d.read_reply()
    d.cmd("MAIL FROM:<a@elsewhere.test>")
    assert d.cmd("RCPT TO:<victim@elsewhere.test>") == "250 ok"
    d = dial(server, "127.0.0.12")
    d.read_reply()
    d.cmd("MAIL FROM:<a@elsewhere.test>")
    assert d.cmd("RCPT TO:<x@elsewhere.test>") == "250 ok"


def test_relaymailfrom_allows_relaying_until_rset(server):
    d = dial(server)
    d.read_reply()
    d.cmd("MAIL FROM:<relay@trusted.test>")
    assert d.cmd("RCPT TO:<x@elsewhere.test>") == "250 ok"
    assert d.cmd("RSET") == "250 flushed"
    d.cmd("MAIL FROM:<other@trusted.test>")
    assert d.cmd("RCPT TO:<x@elsewhere.test>").startswith("553 sorry, relaying denied")


def test_badmailfrom_forms_and_badrcptto(server):
    d = dial(server)
    d.read_reply()
    for sender in ("bad@spam.test", "BAD@SPAM.TEST", "x@spam2.test", "baduser@anywhere.test"):
        assert d.cmd(f"MAIL FROM:<{sender}>") == "553 sorry, your mail was administratively denied. (#5.7.1)"
    d.cmd("MAIL FROM:<ok@elsewhere.test>")
    assert d.cmd("RCPT TO:<nobody@example.test>") == "553 sorry, mail to that recipient is not accepted (#5.7.1)"
    assert d.cmd("RCPT TO:<a@blocked.example.test>") == \
        "553 sorry, mail to that recipient is not accepted (#5.7.1)"


def test_sanity_nobounce_relayprobe_maxrcpt(server):
    d = dial(server, "127.0.0.3")
    d.read_reply()
    assert d.cmd("MAIL FROM:<>") == "554 RFC2821 bounces are administratively denied"
    assert d.cmd("MAIL FROM:<nodomain>") == "554 mailfrom without @ is administratively denied"
    assert d.cmd("MAIL FROM:<a@>") == "554 mailfrom without user or domain part is administratively denied"
    assert d.cmd("MAIL FROM:<a@localhost>") == "554 mailfrom without . in domain part is administratively denied"
    assert d.cmd("MAIL FROM:<a@sane.test>") == "250 ok"
    assert d.cmd("RCPT TO:<a%b@example.test>") == "553 sorry, we don't relay for [127.0.0.3] (#5.7.1)"
    for i in range(3):
        assert d.cmd(f"RCPT TO:<u{i}@example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<u4@example.test>") == "553 sorry, too many recipients (#5.7.1)"


def test_bounce_with_two_recipients(server):
    d = dial(server)
    d.read_reply()
    d.cmd("MAIL FROM:<>")
    assert d.cmd("RCPT TO:<alice@example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<bob@example.test>") == \
        "550 sorry, I don't accept bounce messages with more than one recipient. Go read RFC2821. (#5.7.1)"


def test_550_and_421_greetings(server):
    d = dial(server, "127.0.0.4")
    assert d.read_reply() == f"554 {ME} Sorry, your mail was administratively denied. (#5.7.1)"
    assert d.cmd("HELO x") == "503 bad sequence of commands (#5.5.1)"
    assert d.cmd("MAIL FROM:<a@b.test>") == "503 bad sequence of commands (#5.5.1)"
    assert d.cmd("QUIT") == f"221 {ME} Goodbye."
    d = dial(server, "127.0.0.5")
    assert d.read_reply() == f"421 {ME} Try again later (#4.3.2)"
    assert d.cmd("EHLO x") == "421 Service temporarily not available (#4.3.2)"


def test_denied_client_is_dropped(server):
    d = dial(server, "127.0.0.8")
    assert d.closed()


def test_databytes_size_and_data(server):
    d = dial(server, "127.0.0.10")
    d.read_reply()
    assert "250-SIZE 1000" in d.cmd("EHLO x")
    assert d.cmd("MAIL FROM:<a@b.test> SIZE=1001") == \
        "552 sorry, that message size exceeds my databytes limit (#5.3.4)"
    assert d.cmd("MAIL FROM:<a@b.test> SIZE=999") == "250 ok"
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    assert d.cmd("Subject: big\r\n\r\n" + "x" * 1200 + "\r\n.") == \
        "552 sorry, that message size exceeds my databytes limit (#5.3.4)"


def test_hop_count_and_bare_lf(server):
    d = dial(server)
    d.read_reply()
    d.cmd("MAIL FROM:<a@b.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    assert d.cmd("Received: x\r\n" * 100 + "\r\nbody\r\n.") == "554 too many hops, this message is looping (#5.4.6)"
    d.cmd("MAIL FROM:<a@b.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    d.send(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n")
    assert d.read_reply() == "451 See http://pobox.com/~djb/docs/smtplf.html."
    assert d.closed()


def test_smtp550disconnect(server):
    d = dial(server, "127.0.0.11")
    d.read_reply()
    assert d.cmd("MAIL FROM:<bad@spam.test>") == "553 sorry, your mail was administratively denied. (#5.7.1)"
    assert d.closed()


def test_rcptcheck_against_the_directory(server):
    d = dial(server, "127.0.0.7")
    d.read_reply()
    d.cmd("MAIL FROM:<a@elsewhere.test>")
    assert d.cmd("RCPT TO:<smtpuser@example.test>") == "250 ok"
    assert d.cmd("RCPT TO:<alice@example.test>") == "250 ok", "users/assign via ldaplocaldelivery"
    assert d.cmd("RCPT TO:<nosuchuser@example.test>") == "554 Sorry, no mailbox here by that name. (#5.1.1)"
    assert d.cmd("RCPT TO:<gone@example.test>") == "554 Sorry, no mailbox here by that name. (#5.1.1)"
    assert d.cmd("RCPT TO:<off@example.test>") == "554 Mailaddress is administratively disabled. (#5.2.1)"
    assert d.cmd("RCPT TO:<postmaster@example.test>") == "250 ok", "goodmailaddr"
    assert d.cmd("RCPT TO:<x@deep.sub.example.test>") == "250 ok", "not local: not verified"


def test_sendercheck_strict(server):
    d = dial(server, "127.0.0.13")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@elsewhere.test>") == \
        "554 refused mailfrom because valid local sender address required"
    assert d.cmd("MAIL FROM:<nosuch@example.test>") == "554 Sorry, no mailbox here by that name. (#5.1.1)"
    assert d.cmd("MAIL FROM:<smtpuser@example.test>") == "250 ok"


def b64(s):
    return base64.b64encode(s.encode()).decode()


def test_auth_plain_login_and_relaying(server):
    d = dial(server, "127.0.0.6")
    d.read_reply()
    assert "250-AUTH LOGIN PLAIN" in d.cmd("EHLO x")
    assert d.cmd("AUTH CRAM-MD5") == "504 authentication type not supported"
    assert d.cmd("AUTH PLAIN " + b64("\0smtpuser\0wrong")) == "535 authentication failure"
    assert d.cmd("AUTH PLAIN " + b64("\0locked\0s3cret")) == "454 temporary authentication failure (#4.3.0)"
    assert d.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert d.cmd("*") == "501 authentication exchange aborted. (#4.3.0)"
    assert d.cmd("AUTH LOGIN " + b64("smtpuser")) == "334 UGFzc3dvcmQ6"
    assert d.cmd(b64("s3cret")) == "235 nice to meet you"
    assert d.cmd("AUTH PLAIN " + b64("\0smtpuser\0s3cret")) == "503 you are already authenticated"
    d.cmd("MAIL FROM:<smtpuser@example.test>")
    assert d.cmd("RCPT TO:<far@elsewhere.test>") == "250 ok"


def test_authrequired(server):
    d = dial(server, "127.0.0.9")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@b.test>") == "530 authentication needed"
    assert d.cmd("AUTH PLAIN " + b64("\0smtpuser\0s3cret")) == "235 nice to meet you"
    assert d.cmd("MAIL FROM:<a@b.test>") == "250 ok"


def test_starttls_hides_auth_until_tls_and_drops_injected_plaintext(server):
    import ssl
    d = dial(server, "127.0.0.15")
    d.read_reply()
    ehlo = d.cmd("EHLO x")
    assert "250-STARTTLS" in ehlo and "AUTH" not in ehlo
    d.send("AUTH PLAIN " + b64("\0smtpuser\0s3cret") + "\r\n")
    assert d.raw() == b"538 Encryption required for requested authentication mechanism", "sent without CRLF"
    assert d.cmd("STARTTLS now") == "501 Syntax error (no parameters allowed) (#5.5.4)"
    d2 = dial(server, "127.0.0.15")
    d2.read_reply()
    d2.send("STARTTLS\r\nRSET\r\n")
    assert d2.read_reply() == "220 ready for tls"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(d2.sock)
    d2.sock, d2.buf = tls, b""
    ehlo = d2.cmd("EHLO x")
    assert "250-AUTH LOGIN PLAIN" in ehlo and "STARTTLS" not in ehlo
    assert d2.cmd("NOOP") == "250 ok", "the pipelined RSET was discarded, not answered"
    assert d2.cmd("AUTH PLAIN " + b64("\0smtpuser\0s3cret")) == "235 nice to meet you"


def test_smtplib_starttls_and_login(server):
    with smtplib.SMTP("127.0.0.1", server["port"], source_address=("127.0.0.15", 0)) as c:
        c.starttls()
        c.login("smtpuser", "s3cret")
        c.sendmail("smtpuser@example.test", ["far@elsewhere.test"], "Subject: tls\r\n\r\nx\r\n")


def test_qmailqueue_custom_error_becomes_the_reply(server):
    d = dial(server, "127.0.0.17")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    assert d.cmd("Subject: spam\r\n\r\nbuy\r\n.") == "554 sorry, your message looks like spam (#5.7.1)"


def test_swaks(server):
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{server['port']}", "--to", "bob@example.test",
                        "--from", "swaks@remote.test", "--helo", "swaks.test"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
    assert "<-  250 ok " in p.stdout and f"<-  221 {ME} Goodbye." in p.stdout


def test_smtp_source_load(server):
    """Postfix's smtp-source as a load client: 200 messages over 20 sessions, all accepted."""
    before = sum(1 for _ in delivered(server["users"]["bob"]))
    p = subprocess.run(["smtp-source", "-c", "-s", "20", "-m", "200", "-l", "1024", "-f", "src@remote.test",
                        "-t", "bob@example.test", f"127.0.0.1:{server['port']}"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    server["master"].wait_for(lambda: len(delivered(server["users"]["bob"])) >= before + 200, 120, "200 delivered")


def test_garbage_never_kills_a_worker(server):
    import random
    rng = random.Random(99)
    workers = sorted(c.pid for c in server["master"].children())
    for _ in range(30):
        d = dial(server)
        d.read_reply()
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        d.send(junk + b"\r\n" + b"MAIL FROM:<" + b"x" * 5000 + b">\r\nRCPT TO:\r\n\0\0\0\r\n")
        d.raw(0.2)
        d.close()
    d = dial(server)
    assert d.read_reply().startswith("220 ")
    assert d.cmd("NOOP") == "250 ok"
    assert sorted(c.pid for c in server["master"].children()) == workers


def timed(d, line):
    t0 = time.monotonic()
    reply = d.cmd(line)
    return reply, time.monotonic() - t0


def test_greetdelay_drops_rushing_clients(server):
    d = dial(server, "127.0.0.18")
    d.send("EHLO rush.test\r\n")
    out = d.raw(3.0)
    assert out.startswith(b"2") and b"554 SMTP protocol violation\r\n" in out
    assert d.closed()
    d = dial(server, "127.0.0.18")
    t0 = time.monotonic()
    assert d.read_reply() == f"220 {ME} ESMTP "
    assert time.monotonic() - t0 >= 2.5, "three bytes stuttered one per second"


def test_tarpit_and_badrcptdelay(server):
    d = dial(server, "127.0.0.19")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    assert timed(d, "RCPT TO:<u1@example.test>")[1] < 0.8
    reply, took = timed(d, "RCPT TO:<u2@example.test>")
    assert reply == "250 ok" and took >= 0.9
    d = dial(server, "127.0.0.20")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    reply, took = timed(d, "RCPT TO:<nosuchuser@example.test>")
    assert reply == "554 Sorry, no mailbox here by that name. (#5.1.1)" and took >= 0.9


def test_goodmailfrom_and_badmailfrom_unknown(server):
    d = dial(server)
    d.read_reply()
    assert d.cmd("MAIL FROM:<good@spam2.test>") == "250 ok", "goodmailfrom skips badmailfrom"
    assert d.cmd("MAIL FROM:<unk@spam3.test>") == "250 ok", "127.0.0.1 has a name (localhost)"
    d = dial(server, "127.0.0.27")
    d.read_reply()
    assert d.cmd("MAIL FROM:<x@nodns.test>") == ("553 sorry, your mail from a host [127.0.0.27] without valid "
                                                 "reverse DNS was administratively denied (#5.7.1)")


def test_nolocal(server):
    d = dial(server, "127.0.0.22")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    assert d.cmd(f"RCPT TO:<x@{ME}>").startswith("553 sorry, relaying denied from your location [127.0.0.22]")
    assert d.cmd("RCPT TO:<x@example.test>") == "250 ok", "example.test is in rcpthosts too"


def test_rejectexec_through_the_server(server):
    d = dial(server, "127.0.0.21")
    d.read_reply()
    d.cmd("MAIL FROM:<a@remote.test>")
    d.cmd("RCPT TO:<alice@example.test>")
    d.cmd("DATA")
    body = ("Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            "--B\r\nContent-Type: application/octet-stream\r\n\r\nTVqQzAAAEyy\r\n--B--\r\n.")
    assert d.cmd(body) == "552 we don't accept email with this MIME content (#5.3.4)"


def test_authprepend_smtpauthuser_and_received(server):
    d = dial(server, "127.0.0.24")
    d.read_reply()
    d.cmd("EHLO x")
    assert d.cmd("AUTH PLAIN " + b64("\0smtpuser\0s3cret")) == "235 nice to meet you"
    d.cmd("MAIL FROM:<smtpuser@example.test>")
    assert d.cmd("RCPT TO:<far@elsewhere.test>") == "250 ok"
    d.cmd("DATA")
    assert d.cmd("Subject: auth\r\n\r\nx\r\n.").startswith("250 ok ")
    with open(os.path.join(server["base"], "queue-env")) as f:
        env = f.read()
    assert "SMTPAUTHUSER=auth/smtpuser\n" in env and "RELAYCLIENT=\n" in env


def test_rbl_reject_and_tag(server):
    d = dial(server, "127.0.0.26")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@mx.test>") == \
        "553 sorry, your mailserver [127.0.0.26] is rejected by Listed by the test RBL"
    d = dial(server, "127.0.0.25")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@remote.test>") == "250 ok"
    d.cmd("RCPT TO:<bob@example.test>")
    d.cmd("DATA")
    assert d.cmd("Subject: tagged\r\n\r\nx\r\n.").startswith("250 ok ")
    m = server["master"]
    m.wait_for(lambda: any(b"Subject: tagged" in open(p, "rb").read() for p in delivered(server["users"]["bob"])), 30)
    [text] = [open(p, "rb").read() for p in delivered(server["users"]["bob"]) if b"Subject: tagged" in open(p, "rb").read()]
    assert b"X-RBL: (tag.rbl.test) matches with 127.0.0.9 and tells us Tagged by the test list\nReceived: from " in text


def test_returnmxcheck(server):
    d = dial(server, "127.0.0.28")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@nothing.test>") == "554 refused mailfrom because return MX does not exist"
    assert d.cmd("MAIL FROM:<a@mx.test>") == "250 ok"
    assert d.cmd("MAIL FROM:<a@a-only.test>") == "250 ok", "an A record is enough"
    assert d.cmd("MAIL FROM:<>") == "250 ok", "bounces are not checked"
    assert d.cmd("MAIL FROM:<a@refused.invalid>") == \
        "421 DNS temporary failure at return MX check, try again later (#4.3.0)"
    d = dial(server, "127.0.0.19")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@nothing.test>") == "250 ok", "no RETURNMXCHECK here"


def test_sendercheck_loose(server):
    d = dial(server, "127.0.0.27")
    d.read_reply()
    assert d.cmd("MAIL FROM:<a@elsewhere.test>") == \
        "554 refused mailfrom because valid local sender address required"
    assert d.cmd("MAIL FROM:<a@deep.sub.example.test>") == "250 ok", "rcpthosts domain, not local: allowed"
    assert d.cmd("MAIL FROM:<smtpuser@example.test>") == "250 ok"


def test_pipelining(server):
    d = dial(server)
    d.read_reply()
    d.cmd("EHLO x")
    d.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
    assert [d.read_reply() for _ in range(4)] == [
        "250 ok", "250 ok", "553 sorry, relaying denied from your location [127.0.0.1] (#5.7.1)",
        "354 go ahead punk, make my day"]
    d.send("Subject: p\r\n\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert d.read_reply().startswith("250 ok ")
    assert d.read_reply() == "250 ok"
    assert d.read_reply() == f"221 {ME} Goodbye."


def test_goodmailaddr_missing_is_no_exception():
    from engine import smtppolicy
    assert smtppolicy.in_goodmailaddr(None, "a@b.test") is False


# Spec 5.3's reply lines as one table: (client address, commands sent first, command, exact reply).
# Lines that need a timer, TLS or a broken queue are in the tests above and in test_smtp_listener.py.
MAIL = "MAIL FROM:<a@remote.test>"
RCPT = "RCPT TO:<alice@example.test>"
REPLY_TABLE = [
    ("127.0.0.1", [], "HELO x", f"250 {ME} "),
    ("127.0.0.1", [], "NOOP", "250 ok"),
    ("127.0.0.1", [], "RSET", "250 flushed"),
    ("127.0.0.1", [], "VRFY x", "252 send some mail, i'll try my best"),
    ("127.0.0.1", [], "BOGUS", "502 unimplemented (#5.5.1)"),
    ("127.0.0.1", [], RCPT, "503 MAIL first (#5.5.1)"),
    ("127.0.0.1", [], "DATA", "503 MAIL first (#5.5.1)"),
    ("127.0.0.1", [MAIL], "DATA", "503 RCPT first (#5.5.1)"),
    ("127.0.0.1", [], "MAIL FROM:", "555 syntax error (#5.5.4)"),
    ("127.0.0.1", [MAIL], "RCPT TO:", "555 syntax error (#5.5.4)"),
    ("127.0.0.1", [], "MAIL FROM:<bad@spam.test>", "553 sorry, your mail was administratively denied. (#5.7.1)"),
    ("127.0.0.1", [MAIL], "RCPT TO:<nobody@example.test>",
     "553 sorry, mail to that recipient is not accepted (#5.7.1)"),
    ("127.0.0.1", [MAIL], "RCPT TO:<x@elsewhere.test>",
     "553 sorry, relaying denied from your location [127.0.0.1] (#5.7.1)"),
    ("127.0.0.1", ["MAIL FROM:<>", RCPT], "RCPT TO:<bob@example.test>",
     "550 sorry, I don't accept bounce messages with more than one recipient. Go read RFC2821. (#5.7.1)"),
    ("127.0.0.1", [MAIL, RCPT], "DATA", "354 go ahead punk, make my day"),
    ("127.0.0.1", [], "AUTH PLAIN", "502 unimplemented (#5.5.1)"),
    ("127.0.0.3", [], "MAIL FROM:<>", "554 RFC2821 bounces are administratively denied"),
    ("127.0.0.3", [], "MAIL FROM:<nodomain>", "554 mailfrom without @ is administratively denied"),
    ("127.0.0.3", [], "MAIL FROM:<a@>", "554 mailfrom without user or domain part is administratively denied"),
    ("127.0.0.3", [], "MAIL FROM:<a@localhost>", "554 mailfrom without . in domain part is administratively denied"),
    ("127.0.0.3", [MAIL], "RCPT TO:<a!b@example.test>", "553 sorry, we don't relay for [127.0.0.3] (#5.7.1)"),
    ("127.0.0.3", [MAIL, "RCPT TO:<u1@example.test>", "RCPT TO:<u2@example.test>", "RCPT TO:<u3@example.test>"],
     "RCPT TO:<u4@example.test>", "553 sorry, too many recipients (#5.7.1)"),
    ("127.0.0.4", [], "EHLO x", "503 bad sequence of commands (#5.5.1)"),
    ("127.0.0.5", [], "HELO x", "421 Service temporarily not available (#4.3.2)"),
    ("127.0.0.6", ["AUTH PLAIN " + b64("\0smtpuser\0s3cret")], "AUTH LOGIN", "503 you are already authenticated"),
    ("127.0.0.6", [], "AUTH DIGEST-MD5", "504 authentication type not supported"),
    ("127.0.0.6", [], "AUTH PLAIN !!", "501 authentication exchange failed"),
    ("127.0.0.6", [], "AUTH PLAIN " + b64("\0smtpuser\0bad"), "535 authentication failure"),
    ("127.0.0.7", [MAIL], "RCPT TO:<nosuch@example.test>", "554 Sorry, no mailbox here by that name. (#5.1.1)"),
    ("127.0.0.7", [MAIL], "RCPT TO:<off@example.test>", "554 Mailaddress is administratively disabled. (#5.2.1)"),
    ("127.0.0.9", [], MAIL, "530 authentication needed"),
    ("127.0.0.10", [], "MAIL FROM:<a@remote.test> SIZE=5000",
     "552 sorry, that message size exceeds my databytes limit (#5.3.4)"),
    ("127.0.0.13", [], MAIL, "554 refused mailfrom because valid local sender address required"),
    ("127.0.0.15", ["EHLO x"], "STARTTLS x", "501 Syntax error (no parameters allowed) (#5.5.4)"),
    ("127.0.0.15", ["EHLO x"], "STARTTLS", "220 ready for tls"),
    ("127.0.0.26", [], MAIL, "553 sorry, your mailserver [127.0.0.26] is rejected by Listed by the test RBL"),
    ("127.0.0.27", [], "MAIL FROM:<x@nodns.test>",
     "553 sorry, your mail from a host [127.0.0.27] without valid reverse DNS was administratively denied (#5.7.1)"),
    ("127.0.0.28", [], "MAIL FROM:<a@nothing.test>", "554 refused mailfrom because return MX does not exist"),
    ("127.0.0.1", [], "QUIT", f"221 {ME} Goodbye."),
]


@pytest.mark.parametrize("source,before,command,reply", REPLY_TABLE,
                         ids=[f"{i:02d}-{row[3][:3]}" for i, row in enumerate(REPLY_TABLE)])
def test_reply_table(server, source, before, command, reply):
    d = dial(server, source)
    d.read_reply()
    for line in before:
        d.cmd(line)
    assert d.cmd(command) == reply
