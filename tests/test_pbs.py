"""POP-before-SMTP: pbsdbd's cache and packets, and pbsadd -> pbsdbd -> pbscheck over real UDP on 127.0.0.1,
ending in a real qmail-smtpd session under tcpserver that may relay."""

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from engine import pbs, pbsadd, pbscheck, pbsdbd
from support.pbs import IP, program, query, start_pbsdbd, stop, udp_port
from support.master import Master
from support.ports import free_port

SECRET = b"s3cret"


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def send_raw(port, packet):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", port))


def print_env_command(*names):
    """A program that prints NAME=<value or -> lines for `names` (run by pbscheck/pbsadd)."""
    code = "import os,sys\nfor n in sys.argv[1:]: print(n + '=' + os.environ.get(n, '-'))"
    return [sys.executable, "-c", code, *names]


@pytest.fixture
def pbshome(qmailhome):
    port = udp_port()
    write_control(qmailhome, "pbsip", "127.0.0.1\n")
    write_control(qmailhome, "pbsport", f"{port}\n")
    write_control(qmailhome, "pbssecret", SECRET.decode() + "\n")
    write_control(qmailhome, "pbsservers", "127.0.0.1\n")
    write_control(qmailhome, "pbsenv", "POPUSER=SMTPUSER\nPOPHOST=SMTPHOST=pop:\nPOPKEEP\n")
    return qmailhome, port


@pytest.fixture
def daemon(pbshome):
    """A running pbsdbd; yields its port."""
    home, port = pbshome
    proc = start_pbsdbd(home, port)
    yield port
    stop(proc)


def run(args, home, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("TCPREMOTEIP", "NOPBS", "RELAYCLIENT")}
    return subprocess.run(args, env={**base, "QMAILHOME": home, **env}, capture_output=True, timeout=30)


# -- the cache and the packet handler ---------------------------------------------------------

def test_hash_table_size_follows_pbsdbd():
    assert pbsdbd.hash_table_size(1048576) == 65536
    assert pbsdbd.hash_table_size(100) == 4
    assert pbsdbd.hash_table_size(128) == 8


def test_cache_expires_after_timeout():
    cache = pbsdbd.Cache(1048576, 600)
    cache.add(IP, b"\0", now=1000)
    assert cache.lookup(IP, 1600) == b"\0"      # valid through add time + timeout
    assert cache.lookup(IP, 1601) is None
    assert cache.lookup(bytes([10, 0, 0, 1]), 1000) is None


def test_readd_replaces_entry_and_expiry():
    cache = pbsdbd.Cache(1048576, 600)
    cache.add(IP, b"\0", now=1000)
    cache.add(IP, pbs.env_block([b"A=1"]), now=1500)
    assert cache.lookup(IP, 2000) == pbs.env_block([b"A=1"])


def test_cache_bounded_by_bytes_drops_oldest_first():
    # 128 bytes: a hash table of 8, 120 left; each entry is 13 + 4 + 1 = 18 bytes -> 6 fit
    cache = pbsdbd.Cache(128, 600)
    addrs = [bytes([10, 0, 0, i]) for i in range(8)]
    for a in addrs:
        cache.add(a, b"\0", now=1)
    assert [a for a in addrs if cache.lookup(a, 1)] == addrs[2:]
    assert cache.used <= cache.capacity


def test_replaced_entry_keeps_its_bytes_until_overwritten():
    cache = pbsdbd.Cache(128, 600)
    for _ in range(6):
        cache.add(IP, b"\0", now=1)        # six entries in the ring, one live
    cache.add(bytes([10, 0, 0, 9]), b"\0", now=1)
    assert cache.lookup(IP, 1) == b"\0"    # only dead copies were overwritten
    assert cache.lookup(bytes([10, 0, 0, 9]), 1) == b"\0"


def handler():
    return pbsdbd.Daemon(SECRET, pbsdbd.Cache(1048576, 600))


def add(secret=SECRET, env=b"\0", ip=IP):
    return pbs.header(pbs.ADD, ip) + bytes([len(secret)]) + secret + env


def test_query_unknown_answers_n():
    assert handler().handle(pbs.header(pbs.QUERY, IP) + b"\0", now=5) == b"R\x04\x7f\x00\x00\x01N"


def test_add_then_query_answers_r_with_environment():
    d = handler()
    env = pbs.env_block([b"POPUSER=joe"])
    assert d.handle(add(env=env), now=5) is None
    assert d.handle(pbs.header(pbs.QUERY, IP) + b"\0", now=6) == b"R\x04\x7f\x00\x00\x01R" + env


@pytest.mark.parametrize("packet,warning", [
    (add(secret=b"wrong"), "no authorized add packet"),
    (add(secret=b""), "no authorized add packet"),
    (add(env=b""), "environment would exceed package size, dropped"),                 # no count byte
    (add(env=b"\x01\x09A=1"), "environment would exceed package size, dropped"),      # entry past the end
    (add(env=b"\x00x"), "trailing garbadge at end of packet, dropped"),
    (pbs.header(pbs.QUERY, IP), "bad packet"),                                         # no status byte
    (b"Q", "bad packet"),
    (b"X\x04\x7f\x00\x00\x01\0", "bad packet"),
    (b"R\x04\x7f\x00\x00\x01R", "response recived"),
])
def test_bad_packets_are_dropped_with_pbsdbd_warnings(packet, warning, capsys):
    d = handler()
    assert d.handle(packet, now=5) is None
    assert f"pbsdbd: warning: {warning}" in capsys.readouterr().err
    assert d.handle(pbs.header(pbs.QUERY, IP) + b"\0", now=5).endswith(b"N")


def test_env_block_round_trip():
    block = pbs.env_block([b"A=1", b"B=", b"C=x=y"])
    assert pbs.parse_env_block(block) == [(b"A", b"1"), (b"B", b""), (b"C", b"x=y")]
    assert pbs.parse_env_block(b"\x05\x03A=1") == [(b"A", b"1")]   # stops where the data ends


# -- pbscheck's environment rules ---------------------------------------------------------------

LINES = [b"POPUSER=SMTPUSER", b"POPHOST=SMTPHOST=pop:", b"POPKEEP"]


def reply(status, entries=()):
    return pbs.header(pbs.REPLY, IP) + status + (pbs.env_block(list(entries)) if status == b"R" else b"")


def test_reply_r_sets_relayclient_renames_and_prefixes():
    env = {}
    pbscheck.apply_reply(reply(b"R", [b"POPUSER=joe", b"POPHOST=h1", b"POPKEEP=k", b"PATH=/evil"]), IP, LINES, env)
    assert env == {b"RELAYCLIENT": b"", b"SMTPUSER": b"joe", b"SMTPHOST": b"pop:h1", b"POPKEEP": b"k"}


@pytest.mark.parametrize("packet", [
    reply(b"N"),
    pbs.header(pbs.REPLY, bytes([127, 0, 0, 2])) + b"R\0",   # another address
    pbs.header(pbs.QUERY, IP) + b"R\0",                       # not a reply
    pbs.header(pbs.REPLY, IP),                                # no status
])
def test_other_replies_change_nothing(packet):
    env = {}
    pbscheck.apply_reply(packet, IP, LINES, env)
    assert env == {}


def test_pbsadd_packet_carries_pbsenv_names():
    packet = pbsadd.add_packet(IP, SECRET, ["POPUSER=SMTPUSER", "UNSET"], {b"POPUSER": b"joe"})
    assert packet == add(env=pbs.env_block([b"POPUSER=joe", b"UNSET="]))


def test_pbsadd_oversized_variable_registers_without_environment(capsys):
    packet = pbsadd.add_packet(IP, SECRET, ["BIG"], {b"BIG": b"x" * 300})
    assert packet == add(env=b"\0")
    assert "pbsadd environment BIG is to big" in capsys.readouterr().err


# -- the programs over UDP ------------------------------------------------------------------------

def test_pbsadd_registers_and_pbscheck_sets_environment(daemon, pbshome):
    home, _ = pbshome
    out = run([program("pbscheck")] + print_env_command("RELAYCLIENT", "SMTPUSER"), home, TCPREMOTEIP="127.0.0.1")
    assert out.returncode == 0 and out.stdout.decode().split() == ["RELAYCLIENT=-", "SMTPUSER=-"]
    added = run([program("pbsadd")] + print_env_command("POPUSER"), home, TCPREMOTEIP="127.0.0.1",
                POPUSER="joe", POPHOST="pop1.example")
    assert added.returncode == 0 and added.stdout == b"POPUSER=joe\n"   # exec'd its arguments
    time.sleep(0.2)  # the add packet is not acknowledged
    out = run([program("pbscheck")] + print_env_command("RELAYCLIENT", "SMTPUSER", "SMTPHOST", "POPKEEP"),
              home, TCPREMOTEIP="127.0.0.1")
    assert out.stdout.decode().split() == ["RELAYCLIENT=", "SMTPUSER=joe", "SMTPHOST=pop:pop1.example", "POPKEEP="]


def test_wrong_secret_is_ignored(daemon, pbshome):
    send_raw(daemon, add(secret=b"guess", env=b"\0"))
    send_raw(daemon, add(secret=SECRET, env=b"\0", ip=bytes([10, 1, 1, 1])))
    time.sleep(0.2)
    assert query(daemon) == reply(b"N")
    assert query(daemon, bytes([10, 1, 1, 1])) == pbs.header(pbs.REPLY, bytes([10, 1, 1, 1])) + b"R\0"


def test_entries_expire_after_pbstimeout(pbshome):
    home, port = pbshome
    write_control(home, "pbstimeout", "1\n")
    write_control(home, "pbsenv", "")
    proc = start_pbsdbd(home, port)
    try:
        assert run([program("pbsadd")], home, TCPREMOTEIP="127.0.0.1").returncode == 0
        time.sleep(0.2)
        assert query(port) == reply(b"R")
        time.sleep(2.2)
        assert query(port) == reply(b"N")
    finally:
        stop(proc)


def test_nopbs_sends_nothing(daemon, pbshome):
    home, _ = pbshome
    assert run([program("pbsadd")], home, TCPREMOTEIP="127.0.0.1", NOPBS="1").returncode == 0
    time.sleep(0.2)
    assert query(daemon) == reply(b"N")


def test_silent_servers_mean_no_relay_after_a_second_each(pbshome):
    home, _ = pbshome
    write_control(home, "pbsport", f"{udp_port()}\n")   # nobody listens there
    start = time.monotonic()
    out = run([program("pbscheck")] + print_env_command("RELAYCLIENT"), home, TCPREMOTEIP="127.0.0.1")
    assert out.returncode == 0 and out.stdout == b"RELAYCLIENT=-\n"
    assert 1.9 < time.monotonic() - start      # the random pick, then the one server, one second each
    assert b"pbscheck: no response from server" in out.stderr


# -- misconfiguration -------------------------------------------------------------------------------

def test_pbscheck_texts(pbshome):
    home, _ = pbshome
    cases = []
    cases.append(run([program("pbscheck")], home, TCPREMOTEIP="127.0.0.1"))
    cases.append(run([program("pbscheck"), "true"], home))
    cases.append(run([program("pbscheck"), "true"], home, TCPREMOTEIP="not-an-ip"))
    cases.append(run([program("pbscheck"), "/nonexistent/qmail-smtpd"], home, NOPBS="1"))
    write_control(home, "pbsenv", "".join(f"V{i}\n" for i in range(256)))
    cases.append(run([program("pbscheck"), "true"], home, TCPREMOTEIP="127.0.0.1"))
    os.unlink(os.path.join(home, "control", "pbsservers"))
    cases.append(run([program("pbscheck"), "true"], home, TCPREMOTEIP="127.0.0.1"))
    assert [(c.returncode, c.stdout) for c in cases] == [
        (1, b"554 pop before smtp subprogram uncorrectly installed (#5.3.5)\r\n"),
        (1, b"554 unable to read $TCPREMOTEIP (#5.3.5)\r\n"),
        (1, b"554 unable to read $TCPREMOTEIP (#5.3.5)\r\n"),
        (1, b"554 unable to start smtp daemon (#5.3.5)\r\n"),
        (1, b"554 to many additional environments defined (#5.3.5)\r\n"),
        (1, b"554 unable to read controls (#5.3.5)\r\n"),
    ]


def test_pbsadd_texts(pbshome):
    home, _ = pbshome
    assert run([program("pbsadd")], home).stderr == b"pbsadd unable to read $TCPREMOTEIP\n"
    assert run([program("pbsadd"), "/nonexistent/pop3d"], home, NOPBS="1").stderr == \
        b"pbsadd unable to start pop3 daemon\n"
    write_control(home, "pbssecret", "x" * 256 + "\n")
    assert run([program("pbsadd")], home, TCPREMOTEIP="127.0.0.1").stderr == b"pbsadd control/pbssecret is to long\n"
    os.unlink(os.path.join(home, "control", "pbssecret"))
    out = run([program("pbsadd"), "true"], home, TCPREMOTEIP="127.0.0.1")
    assert (out.returncode, out.stderr) == (1, b"pbsadd unable to read controls\n")


def test_pbsdbd_refuses_to_start_without_secret(pbshome):
    home, _ = pbshome
    os.unlink(os.path.join(home, "control", "pbssecret"))
    out = run([program("pbsdbd")], home)
    assert out.returncode == 111 and out.stderr.startswith(b"pbsdbd: fatal: unable to read controls")
    write_control(home, "pbssecret", "x\n")
    write_control(home, "pbsport", "65001\n")
    assert run([program("pbsdbd")], home).returncode == 111


# -- the whole way: a POP login registers, qmail-smtpd under tcpserver then relays ------------------

@pytest.fixture
def smtp_with_pbscheck(pbshome):
    home, _ = pbshome
    write_control(home, "rcpthosts", "example.test\n")
    port = free_port()
    proc = subprocess.Popen([shutil.which("tcpserver"), "-q", "-H", "-R", "-l", "mx.example.test", "127.0.0.1",
                             str(port), program("pbscheck"), program("qmail-smtpd")],
                            env={**os.environ, "QMAILHOME": home})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def relays(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        try:
            c.sendmail("joe@example.test", ["friend@elsewhere.test"], "Subject: pbs\r\n\r\nhi\r\n")
            return True
        except smtplib.SMTPRecipientsRefused:
            return False


def test_pop_before_smtp_lets_qmail_smtpd_relay(daemon, pbshome, smtp_with_pbscheck):
    home, _ = pbshome
    assert not relays(smtp_with_pbscheck)
    assert run([program("pbsadd")], home, TCPREMOTEIP="127.0.0.1").returncode == 0
    time.sleep(0.2)
    assert relays(smtp_with_pbscheck)


def test_the_masters_smtp_listener_asks_pbsdbd_too(daemon, pbshome):
    """With control/pbsservers set, the built-in listener does pbscheck's query for each connection."""
    home, _ = pbshome
    write_control(home, "rcpthosts", "example.test\n")
    port = free_port()
    write_control(home, "smtplisten", f"127.0.0.1:{port}\n")
    m = Master(home).start()
    try:
        m.wait_for(lambda: _listening(port), 20, "the SMTP listener")
        assert not relays(port)
        assert run([program("pbsadd")], home, TCPREMOTEIP="127.0.0.1").returncode == 0
        time.sleep(0.2)
        assert relays(port)
    finally:
        m.stop()


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


# -- property: whatever pbsadd sends, pbsdbd stores and pbscheck sets the same variables -------------

names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12)
values = st.binary(max_size=60).filter(lambda v: b"\0" not in v)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, values, max_size=8), st.binary(min_size=4, max_size=4))
def test_add_query_reply_round_trip(variables, ip):
    environ = {k.encode(): v for k, v in variables.items()}
    d = handler()
    assert d.handle(pbsadd.add_packet(ip, SECRET, list(variables), environ), now=10) is None
    answer = d.handle(pbs.header(pbs.QUERY, ip) + b"\0", now=11)
    env = {}
    pbscheck.apply_reply(answer, ip, [k.encode() for k in variables], env)
    assert env == {b"RELAYCLIENT": b"", **environ}
