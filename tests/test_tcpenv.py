"""tcp-env (engine/tcpenv.py) and its RFC 1413 client (engine/ident.py): the real program on real
loopback connections, a real identd (Debian's oidentd) and a real DNS server (dnsmasq).

Addresses: the server side of each connection is 127.0.0.2, the client 127.0.0.3, both with a
PTR record only for 127.0.0.2 (Mail.Example.Test); 127.0.1.x has no reverse zone at all, so its
lookups fail temporarily. oidentd listens on 127.0.0.3 at a free port ($QMAIL_IDENT_PORT).
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from support.dnsserver import DnsServer
from support.ports import free_port

from engine import ident, qdns, tcpenv

TCPENV = os.path.join(os.path.dirname(sys.executable), "tcp-env")
SERVER_IP, CLIENT_IP = "127.0.0.2", "127.0.0.3"
NOBODY = 65534
# what the program run by tcp-env reports: its ignored-signal mask, then its environment
DUMP = ["/bin/sh", "-c", "grep SigIgn /proc/$$/status; env"]


@pytest.fixture(scope="module")
def dnsd():
    server = DnsServer(hosts=[("Mail.Example.Test", SERVER_IP)], local=("test", "0.0.127.in-addr.arpa")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def identd(tmp_path_factory):
    """oidentd in the foreground on CLIENT_IP at a free port, stopped after the module."""
    port = free_port(CLIENT_IP)
    conf = tmp_path_factory.mktemp("oidentd") / "oidentd.conf"
    conf.write_text("")
    proc = subprocess.Popen([shutil.which("oidentd") or "/usr/sbin/oidentd", "-i", "-S", "-q", "-C", str(conf),
                             "-a", CLIENT_IP, "-p", str(port), "-u", "root", "-g", "root"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((CLIENT_IP, port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("oidentd did not start: " + proc.stderr.read().decode())
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()


@pytest.fixture
def env(dnsd, identd):
    clean = {k: v for k, v in os.environ.items() if k != "PROTO" and not k.startswith("TCP")}
    return {**clean, "QMAIL_DNS_SERVER": dnsd.address, "QMAIL_IDENT_PORT": str(identd)}


class Client:
    """A TCP client owned by user nobody (so the identd has someone to name), in its own process."""

    def __init__(self, server_addr, client_ip):
        code = ("import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); "
                "s.connect((sys.argv[2], int(sys.argv[3]))); print(s.getsockname()[1], flush=True); "
                "sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, client_ip, *map(str, server_addr)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, user=NOBODY, group=NOBODY)
        self.port = int(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


def run_tcpenv(args, env, server_ip=SERVER_IP, client_ip=CLIENT_IP, program=DUMP):
    """tcp-env with a fresh accepted connection on fd 0; (completed process, client port, server port)."""
    with socket.create_server((server_ip, 0)) as listener:
        client = Client(listener.getsockname(), client_ip)
        conn, _ = listener.accept()
        try:
            p = subprocess.run([TCPENV, *args, *program], stdin=conn, capture_output=True, env=env, timeout=30)
        finally:
            conn.close()
            client.close()
        return p, client.port, listener.getsockname()[1]


def parse(stdout):
    """(SigIgn mask, environment) from DUMP's output."""
    lines = stdout.decode().splitlines()
    sigign = int(lines[0].split()[1], 16)
    return sigign, dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def test_sets_addresses_ports_names_and_remoteinfo(env):
    p, client_port, server_port = run_tcpenv(["-t5"], env)
    assert p.returncode == 0, p.stderr
    sigign, got = parse(p.stdout)
    assert got["PROTO"] == "TCP"
    assert (got["TCPLOCALIP"], got["TCPLOCALPORT"]) == (SERVER_IP, str(server_port))
    assert (got["TCPREMOTEIP"], got["TCPREMOTEPORT"]) == (CLIENT_IP, str(client_port))
    assert got["TCPLOCALHOST"] == "mail.example.test"  # the PTR record, lower-cased
    assert "TCPREMOTEHOST" not in got  # no PTR record: unset
    assert got["TCPREMOTEINFO"] == "nobody"  # the identd's USERID answer for the client's socket
    assert not sigign & (1 << (13 - 1))  # SIGPIPE back to default for the program


def test_R_skips_remoteinfo_and_unsets_a_stale_value(env):
    p, _, _ = run_tcpenv(["-R"], {**env, "TCPREMOTEINFO": "stale", "TCPREMOTEHOST": "stale.test"})
    _, got = parse(p.stdout)
    assert "TCPREMOTEINFO" not in got and "TCPREMOTEHOST" not in got
    assert got["TCPREMOTEIP"] == CLIENT_IP


def test_r_after_R_turns_remoteinfo_back_on(env):
    _, got = parse(run_tcpenv(["-R", "-r", "-t", "5"], env)[0].stdout)
    assert got["TCPREMOTEINFO"] == "nobody"


def test_temporary_dns_failure_is_softdnserror(env):
    p, _, _ = run_tcpenv(["-R"], env, server_ip="127.0.1.2", client_ip="127.0.1.3")
    _, got = parse(p.stdout)
    assert got["TCPLOCALHOST"] == got["TCPREMOTEHOST"] == "softdnserror"
    assert got["TCPLOCALIP"] == "127.0.1.2"


def test_no_identd_leaves_remoteinfo_unset(env):
    p, _, _ = run_tcpenv(["-t5"], env, client_ip="127.0.0.4")  # nothing listens there: refused
    _, got = parse(p.stdout)
    assert p.returncode == 0 and "TCPREMOTEINFO" not in got and got["TCPREMOTEIP"] == "127.0.0.4"


class SilentIdentd:
    """Accepts on the ident port and then answers `reply` (None: never answers)."""

    def __init__(self, ip, reply):
        self.sock = socket.create_server((ip, 0))
        self.port = self.sock.getsockname()[1]
        self.reply, self.queries, self.conns = reply, [], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.queries.append(conn.recv(100))
            if self.reply is not None:
                conn.sendall(self.reply)
                conn.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_timeout_bounds_a_silent_identd(env):
    fake = SilentIdentd("127.0.0.5", None)
    try:
        start = time.monotonic()
        p, client_port, server_port = run_tcpenv(["-t1"], {**env, "QMAIL_IDENT_PORT": str(fake.port)},
                                                 client_ip="127.0.0.5")
        elapsed = time.monotonic() - start
    finally:
        fake.close()
    _, got = parse(p.stdout)
    assert "TCPREMOTEINFO" not in got
    assert 1 <= elapsed < 10
    assert fake.queries == [b"%d , %d\r\n" % (client_port, server_port)]  # remoteinfo.c's query


def test_answer_keeps_what_follows_the_third_colon_without_blanks():
    fake = SilentIdentd("127.0.0.6", b"1 , 2 : USERID : UNIX : jo e\t:x\r\n")
    try:
        os.environ["QMAIL_IDENT_PORT"] = str(fake.port)
        assert ident.remoteinfo("127.0.0.6", 1, "127.0.0.6", 2, 5) == "joe:x"
    finally:
        del os.environ["QMAIL_IDENT_PORT"]
        fake.close()


def test_answer_without_newline_is_no_answer(monkeypatch):
    fake = SilentIdentd("127.0.0.6", b"1 , 2 : USERID : UNIX : joe")
    monkeypatch.setenv("QMAIL_IDENT_PORT", str(fake.port))
    try:
        assert ident.remoteinfo("127.0.0.6", 1, "127.0.0.6", 2, 5) is None
    finally:
        fake.close()


def test_identd_error_answer_gives_empty_info(identd, monkeypatch):
    """oidentd answers "ERROR : NO-USER" for a connection that does not exist: two colons, so ""."""
    monkeypatch.setenv("QMAIL_IDENT_PORT", str(identd))
    assert ident.remoteinfo(CLIENT_IP, 1, CLIENT_IP, 2, 5) == ""


def test_proto_tcp_means_the_environment_is_already_set(env, tmp_path):
    preset = {**env, "PROTO": "TCP", "TCPREMOTEIP": "192.0.2.7", "TCPREMOTEINFO": "kept"}
    with open(tmp_path / "notasocket", "w+") as f:  # not even a socket: nothing is looked at
        p = subprocess.run([TCPENV, *DUMP], stdin=f, capture_output=True, env=preset, timeout=30)
    _, got = parse(p.stdout)
    assert p.returncode == 0
    assert (got["TCPREMOTEIP"], got["TCPREMOTEINFO"]) == ("192.0.2.7", "kept")
    assert "TCPLOCALIP" not in got


@pytest.mark.parametrize("args", [[], ["-R"], ["-t", "3"]])
def test_no_program_exits_111_silently(env, args):
    p = subprocess.run([TCPENV, *args], stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30)
    assert (p.returncode, p.stdout, p.stderr) == (111, b"", b"")


def test_stdin_not_a_socket_exits_111(env, tmp_path):
    with open(tmp_path / "file", "w+") as f:
        p = subprocess.run([TCPENV, *DUMP], stdin=f, capture_output=True, env=env, timeout=30)
    assert (p.returncode, p.stdout, p.stderr) == (111, b"", b"")


def test_program_that_cannot_run_exits_111(env):
    p, _, _ = run_tcpenv(["-R"], env, program=["/nonexistent/program"])
    assert (p.returncode, p.stdout) == (111, b"")


def test_unknown_options_are_ignored_and_program_found_in_path(env):
    p, _, _ = run_tcpenv(["-x", "-R"], env, program=["env"])
    assert p.returncode == 0 and b"TCPREMOTEIP=127.0.0.3\n" in p.stdout


def run_accepted(listener, client, args, env):
    """tcp-env on the connection `client` made to `listener`."""
    conn, _ = listener.accept()
    try:
        return subprocess.run([TCPENV, *args, *DUMP], stdin=conn, capture_output=True, env=env, timeout=30)
    finally:
        conn.close()
        client.close()


def test_ipv4_mapped_addresses_of_a_dual_stack_listener_are_ipv4(env):
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as listener:
        client = socket.socket()
        client.bind((CLIENT_IP, 0))
        client.connect((SERVER_IP, listener.getsockname()[1]))
        p = run_accepted(listener, client, ["-R"], env)
    _, got = parse(p.stdout)
    assert (got["TCPLOCALIP"], got["TCPREMOTEIP"]) == (SERVER_IP, CLIENT_IP)
    assert got["TCPLOCALHOST"] == "mail.example.test"


def test_ipv6_connection_gives_ipv6_addresses(env):
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        client = socket.create_connection(("::1", listener.getsockname()[1]))
        client_port = client.getsockname()[1]
        p = run_accepted(listener, client, ["-R"], env)
    _, got = parse(p.stdout)
    assert (got["TCPLOCALIP"], got["TCPREMOTEIP"]) == ("::1", "::1")
    assert got["TCPREMOTEPORT"] == str(client_port)
    assert got["TCPLOCALHOST"] == "softdnserror"  # the test DNS server knows no ip6.arpa zone


def test_host_values_as_dns_ptr_results_become_variables():
    """dnsmasq lower-cases its answers itself, so the lower-casing is checked here directly."""
    assert tcpenv._host_value(0, "MAIL.Example.TEST") == "mail.example.test"
    assert tcpenv._host_value(qdns.DNS_SOFT, None) == "softdnserror"
    assert tcpenv._host_value(qdns.DNS_HARD, None) is None
