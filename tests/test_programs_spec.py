"""The programs against the spec, row by row (qmail-ldap-inventory.md §1.1-1.4, 2.2, 2.3, 5.5-5.8).

Each test names the spec line it checks. Programs run as subprocesses where they are programs
(qmail-getpw, qmail-rspawn's pool process, pbscheck, qmail-popup ...); real peers are
Postfix's smtp-sink and the scripted SMTP server of tests/support.
"""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from engine import conf, control, spawn
from engine.rspawn import merge_report
from support.sink import SmtpSink
from support.slapd import slapd  # noqa: F401

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def program_env(home, **extra):
    env = dict(os.environ, QMAILHOME=home, PYTHONPATH=ROOT)
    env.update(extra)
    return env


# --- §1.4 the spawn protocol and §1.3 qmail-rspawn, against the remote pool process -------------

RSPAWN = """
import socket, sys
from engine import rspawn
listener = socket.socket(fileno=int(sys.argv[2]))
rspawn.run_rspawn(sys.argv[1], listener)
"""


class RemotePool:
    """qmail-rspawn's pool as its own process on a Unix socket, with qmail-send's side of the protocol."""

    def __init__(self, home):
        self.path = os.path.join(home, "queue", "lock", "rspawn-test")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(4)
        self.proc = subprocess.Popen([PY, "-c", RSPAWN, home, str(listener.fileno())],
                                     pass_fds=[listener.fileno()], env=program_env(home),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        listener.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
        self.sock.settimeout(20)
        self.replies = spawn.ReplyReader()
        self.limit = struct.unpack("<H", self.read_exactly(2))[0]
        self.pending = []

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "pool closed the connection"
            data += chunk
        return data

    def send(self, slot, messid, sender, recipient):
        self.sock.sendall(spawn.encode_request(slot, messid, sender, recipient))

    def reply(self):
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "pool closed the connection"
            self.pending += self.replies.feed(data)
        return self.pending.pop(0)

    def quiet(self, seconds=0.5):
        """Nothing arrives within `seconds` (a HUP request gets no reply)."""
        self.sock.settimeout(seconds)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(20)

    def close(self):
        """The pool is a service of the master (it outlives one qmail-send connection): SIGTERM ends it."""
        self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def put_message(home, msgid, body=b"Subject: t\n\nhi\n"):
    split = msgid % conf.SPLIT
    path = os.path.join(home, "queue", "mess", str(split), str(msgid))
    with open(path, "wb") as f:
        f.write(body)
    return f"{split}/{msgid}".encode()


@pytest.fixture
def pool(qmailhome):
    p = RemotePool(qmailhome)
    yield p
    p.close()


def test_spawn_limit_is_conf_spawn_little_endian(pool):
    """§1.4: at startup the spawner writes 2 bytes, its conf-spawn limit, little endian."""
    assert pool.limit == conf.SPAWN == 500


@pytest.mark.parametrize("slot, messid, recipient, expected", [
    (500, b"1/2", b"a@b", b"ZInternal error: delnum too big. (#4.3.5)"),
    (3, b"1/x2", b"a@b", b"DInternal error: messid has nonnumerics. (#5.3.5)"),
    (3, b"/12", b"a@b", b"DInternal error: messid has nonnumerics. (#5.3.5)"),
    (3, b"1/" + b"2" * 98, b"a@b", b"DInternal error: messid too long. (#5.3.5)"),
    (3, b"", b"a@b", b"DInternal error: messid too short. (#5.3.5)"),
    (3, b"1/2", b"nohost", b"DSorry, address must include host name. (#5.1.3)"),
    (3, b"1/99999999", b"a@b", b"Zqmail-spawn unable to open message. (#4.3.0)"),
])
def test_spawner_validation_errors(pool, slot, messid, recipient, expected):
    """§1.4: the spawner's validation errors, answered at once on the request's slot."""
    pool.send(slot, messid, b"s@x", recipient)
    got_slot, letter, text = pool.reply()
    assert (got_slot, letter + text) == (slot, expected)


def test_message_that_is_not_a_regular_file(pool, qmailhome):
    """spawn.c: a mess/ entry that is not a regular file is refused (wrong type)."""
    os.mkdir(os.path.join(qmailhome, "queue", "mess", "1", "24"))
    pool.send(7, b"1/24", b"s@x", b"r@example.org")
    assert pool.reply() == (7, b"Z", b"Sorry, message has wrong type. (#4.3.5)")


def test_hup_request_gets_no_reply_and_next_request_works(pool):
    """§1.4: slot 0xBEEF with empty messid/sender/recip is the HUP message: no reply."""
    pool.send(spawn.HUP_SLOT, b"", b"", b"")
    assert pool.quiet()
    pool.send(2, b"", b"s@x", b"a@b")
    assert pool.reply() == (2, b"D", b"Internal error: messid too short. (#5.3.5)")


def test_slot_in_use_is_refused(pool, qmailhome):
    """§1.4 "delnum in use": a second request on a slot whose delivery is still running."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never greets: the first delivery hangs
    port = listener.getsockname()[1]
    with open(os.path.join(qmailhome, "control", "smtproutes"), "w") as f:
        f.write(f"slow.example:127.0.0.1:{port}\n")
    subprocess.run([PY, "-c", "import os,signal,sys; os.kill(int(sys.argv[1]), signal.SIGHUP)",
                    str(pool.proc.pid)], check=True)
    time.sleep(0.3)
    messid = put_message(qmailhome, 46)
    pool.send(4, messid, b"s@x", b"r@slow.example")
    time.sleep(0.3)
    pool.send(4, messid, b"s@x", b"r@slow.example")
    assert pool.reply() == (4, b"Z", b"Internal error: delnum in use. (#4.3.5)")
    listener.close()


def test_remote_delivery_report_through_the_pool(pool, qmailhome):
    """§1.3 rspawn: an accepted recipient and the final K become one K report."""
    sink = SmtpSink().start()
    try:
        with open(os.path.join(qmailhome, "control", "smtproutes"), "w") as f:
            f.write(f"sink.example:127.0.0.1:{sink.port}\n")
        os.kill(pool.proc.pid, 1)
        time.sleep(0.3)
        pool.send(9, put_message(qmailhome, 47), b"s@x", b"r@sink.example")
        slot, letter, text = pool.reply()
        assert (slot, letter) == (9, b"K")
        assert text.startswith(b"127.0.0.1 accepted message.\n")
    finally:
        sink.stop()


@pytest.mark.parametrize("output, expected", [
    (b"", (b"Z", b"qmail-remote produced no output.")),
    (b"r\0Kok.\n\0", (b"K", b"ok.\n")),
    (b"s1.2.3.4 does not like recipient.\n\0Kok.\n\0", (b"Z", b"1.2.3.4 does not like recipient.\n")),
    (b"h1.2.3.4 does not like recipient.\n\0Kok.\n\0", (b"D", b"1.2.3.4 does not like recipient.\n")),
    (b"h1.2.3.4 does not like recipient.\n\0DGiving up on 1.2.3.4.\n\0",
     (b"D", b"1.2.3.4 does not like recipient.\nGiving up on 1.2.3.4.\n")),
    (b"ZConnected to 1.2.3.4 but greeting failed.\n\0", (b"Z", b"Connected to 1.2.3.4 but greeting failed.\n")),
    (b"DSorry, I couldn't find any host by that name. (#4.1.2)\n\0",
     (b"D", b"Sorry, I couldn't find any host by that name. (#4.1.2)\n")),
])
def test_rspawn_merges_remote_records(output, expected):
    """§1.3 rspawn: recipient `s` forces Z, `h` forces D, else the final letter; empty output is Z."""
    assert merge_report(output) == expected


# --- §1.1 qmail-getpw ------------------------------------------------------------------------------

@pytest.fixture
def passwd_user(tmp_path):
    """A real passwd user whose home directory it owns (qmail-getpw's test for a mailbox owner)."""
    name = f"qgpw{os.getpid() % 100000}"
    home = tmp_path / name
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", name], check=True)
    import pwd
    pw = pwd.getpwnam(name)
    home.mkdir()
    os.chown(home, pw.pw_uid, pw.pw_gid)
    yield pw
    subprocess.run(["userdel", name], check=False)


def getpw(*args):
    return subprocess.run([PY, "-m", "engine.getpw", *args], capture_output=True, env=program_env("/nonexistent"))


def test_getpw_output_for_a_user_and_its_extensions(passwd_user):
    """§1.1 qmail-getpw: user NUL uid NUL gid NUL home NUL dash NUL ext NUL; the name is lower-cased."""
    pw = passwd_user
    head = [pw.pw_name.encode(), b"%d" % pw.pw_uid, b"%d" % pw.pw_gid, pw.pw_dir.encode()]
    for local, dash_ext in ((pw.pw_name, [b"", b""]), (pw.pw_name.upper() + "-Foo-bar", [b"-", b"Foo-bar"])):
        p = getpw(local)
        assert (p.returncode, p.stdout) == (0, b"\0".join(head + dash_ext) + b"\0")


def test_getpw_home_not_owned_goes_to_alias(passwd_user):
    os.chown(passwd_user.pw_dir, 0, 0)
    p = getpw(passwd_user.pw_name + "-x")
    assert p.returncode in (0, 116)
    if p.returncode == 0:
        assert p.stdout.split(b"\0")[0] == b"alias"
        assert p.stdout.split(b"\0")[4:6] == [b"-", passwd_user.pw_name.encode() + b"-x"]


def test_getpw_arguments():
    """qmail-getpw.c: no argument exits 100; an empty local part is the alias user's, extension ''."""
    assert getpw().returncode == 100
    p = getpw("")
    assert p.returncode in (0, 116)
    if p.returncode == 0:
        assert p.stdout.split(b"\0")[0] == b"alias" and p.stdout.split(b"\0")[4:6] == [b"-", b""]


# --- §2.2 qmail-ldap control files: type, default and readers ------------------------------------

LDAP_USERS = {"qmail-lspawn", "qmail-verify", "auth_pop", "auth_imap", "auth_dovecot", "auth_smtp", "qmail-group",
              "qmail-ldaplookup"}
AUTH = {"auth_pop", "auth_imap", "auth_dovecot", "auth_smtp"}


@pytest.mark.parametrize("name, kind, default, readers", [
    ("ldapserver", "list", None, LDAP_USERS),
    ("ldapbasedn", "line", "", LDAP_USERS),
    ("ldapobjectclass", "line", "", LDAP_USERS),
    ("ldaplogin", "line", "", LDAP_USERS),
    ("ldappassword", "line", "", LDAP_USERS),
    ("ldaptimeout", "int", 30, LDAP_USERS),
    ("ldaprebind", "int", 0, AUTH | {"qmail-ldaplookup"}),
    ("ldapuid", "int", 0, LDAP_USERS),
    ("ldapgid", "int", 0, LDAP_USERS),
    ("ldapmessagestore", "line", "", LDAP_USERS),
    ("ldapdefaultdotmode", "line", "ldaponly", {"qmail-lspawn"}),
    ("defaultquotasize", "ulong", 0, {"qmail-lspawn"} | AUTH),
    ("defaultquotacount", "ulong", 0, {"qmail-lspawn"} | AUTH),
    ("ldaplocaldelivery", "int", 1, {"qmail-lspawn", "qmail-verify", "auth_pop", "auth_imap", "auth_dovecot"}),
    ("ldapcluster", "int", 0, {"qmail-lspawn"} | AUTH),
    ("ldapclusterhosts", "list", [], {"qmail-lspawn"} | AUTH),
    ("aliasdomains", "list", [], {"qmail-lspawn", "qmail-verify", "qmail-group", "qmail-ldaplookup"}),
    ("locals.cdb", "cdb", None, {"qmail-send", "qmail-todo", "qmail-smtpd", "qmail-qmtpd"}),
    ("rcpthosts.cdb", "cdb", None, {"qmail-smtpd", "qmail-qmtpd"}),
    ("dirmaker", "line", None, {"qmail-lspawn"} | AUTH),
    ("quotawarning", "raw", None, {"qmail-quotawarn"}),
    ("custombouncetext", "raw", None, {"qmail-send"}),
    ("bouncemaxbytes", "int", 0, {"qmail-send"}),
    ("relaymailfrom", "list", [], {"qmail-smtpd"}),
    ("rbllist", "list", [], {"qmail-smtpd"}),
    ("goodmailaddr", "list", [], {"qmail-smtpd"}),
    ("goodmailfrom", "list", [], {"qmail-smtpd"}),
    ("badrcptto", "list", [], {"qmail-smtpd"}),
    ("badmailfrom-unknown", "list", [], {"qmail-smtpd"}),
    ("smtpclustercookie", "line", None, {"qmail-smtpd", "qmail-remote"}),
    ("outgoingip", "line", "0.0.0.0", {"qmail-remote"}),
    ("qmqpcip", "line", "0.0.0.0", {"qmail-qmqpc"}),
    ("bigbrother", "list", [], {"qmail-queue"}),
    ("signatures", "list", [], {"qmail-smtpd"}),
    ("smtpcert", "line", None, {"qmail-smtpd"}),
    ("remotecert", "line", None, {"qmail-remote"}),
    ("tlsciphers", "line", "compat", {"qmail-smtpd"}),
    ("tlsremoteciphers", "line", "compat", {"qmail-remote"}),
    ("tlsdheparams", "line", "none", {"qmail-smtpd", "qmail-remote"}),
    ("pbsservers", "list", None, {"pbsadd", "pbscheck"}),
    ("pbsport", "int", 2821, {"pbsadd", "pbscheck", "pbsdbd"}),
    ("pbssecret", "line", None, {"pbsadd", "pbsdbd"}),
    ("pbsip", "line", "0.0.0.0", {"pbsdbd"}),
    ("pbscachesize", "ulong", 1048576, {"pbsdbd"}),
    ("pbstimeout", "int", 600, {"pbsdbd"}),
    ("pbsenv", "list", [], {"pbsadd", "pbscheck"}),
])
def test_qmail_ldap_control_registry(name, kind, default, readers):
    """§2.2 row by row: the registry qmail-showctl prints from (engine.control.REGISTRY)."""
    entry = control.REGISTRY[name]
    assert (entry.type, entry.default, set(entry.readers)) == (kind, default, readers)


def test_ldapgroup_credentials_default_to_ldaplogin(qmailhome):
    """§2.2 ldapgrouplogin/ldapgrouppassword: ldaplogin/ldappassword if ldapgrouplogin is absent;
    password "" when only the group login is given."""
    ctl = os.path.join(qmailhome, "control")
    for name, text in (("ldaplogin", "cn=reader"), ("ldappassword", "pw1")):
        with open(os.path.join(ctl, name), "w") as f:
            f.write(text + "\n")
    assert (control.value("ldapgrouplogin", qmailhome), control.value("ldapgrouppassword", qmailhome)) == \
        ("cn=reader", "pw1")
    with open(os.path.join(ctl, "ldapgrouplogin"), "w") as f:
        f.write("cn=groups\n")
    assert (control.value("ldapgrouplogin", qmailhome), control.value("ldapgrouppassword", qmailhome)) == \
        ("cn=groups", "")


def test_obsolete_controls_are_known():
    """§2.2 last row: obsolete files nothing reads (qmail-showctl asks to remove them)."""
    assert set(control.OBSOLETE) == {"tarpitcount", "tarpitdelay", "maxrcptcount", "rblonlyheader",
                                     "ldapdefaultquota", "ldapusername", "ldappasswdappend"}


# --- §1.1 qmail-start / qmail-send: lock/sendmutex and the default delivery --------------------------

def test_second_master_on_a_queue_exits_111(qmailhome):
    """§1.1 qmail-send: holds lock/sendmutex (exclusive, non-blocking); a second instance exits 111."""
    import fcntl
    fd = os.open(os.path.join(qmailhome, "queue", "lock", "sendmutex"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = subprocess.run([PY, "-m", "engine.start", "./Maildir/"], capture_output=True, timeout=60,
                           env=program_env(qmailhome), cwd=qmailhome)
    finally:
        os.close(fd)
    assert p.returncode == 111
    assert b"alert: cannot start" in p.stdout + p.stderr


def test_qmail_start_default_delivery_is_mailbox(qmailhome):
    """§1.1 qmail-start: arg1 is the default delivery, `./Mailbox` when it is not given."""
    from support.master import Master
    m = Master(qmailhome)
    m.logfile = open(m.logpath, "ab")
    m.log_start = m.logfile.tell()
    m.proc = subprocess.Popen([PY, "-m", "engine.start"], env=m.env, stdout=m.logfile,
                              stderr=subprocess.STDOUT, cwd=qmailhome)
    try:
        m.wait_for(lambda: "status: qmail-start" in m.log(), 30, "master did not start")
        assert "default delivery ./Mailbox" in m.log()
    finally:
        m.stop()


@pytest.mark.parametrize("size, kept", [(3000, 3000), (3001, 2966), (10000, 2966)])
def test_local_report_over_3000_bytes_is_cut(size, kept):
    """§1.3 (spawn.c truncreport=3000): longer output keeps 3000 - 31 - 3 bytes plus the notice."""
    text = bytes(range(1, 101)) * 100
    text = text[:size]
    reply = spawn.encode_reply(5, b"D", text)
    assert reply[:3] == b"\x05\x00D" and reply.endswith(b"\0")
    body = reply[3:-1]
    if kept == size:
        assert body == text
    else:
        assert body == text[:kept] + b"\nError report too long, sorry.\n"
        assert len(body) == 2997


def test_remote_reports_are_never_cut():
    """qmail-rspawn.c: truncreport = 0, so qmail-remote's report goes whole."""
    text = b"x" * 5000
    assert spawn.encode_reply(1, b"K", text, truncreport=0) == b"\x01\x00K" + text + b"\0"


# --- §2.2 ldapserver required, ldaplogin unreadable: who fails and who binds anonymously ----------

def auth_pop_exit(home, data=b"user\0pw\0<1.2@host>\0"):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    p = subprocess.run([PY, "-m", "engine.authpop", "true"], preexec_fn=lambda: os.dup2(r, 3), close_fds=False,
                       capture_output=True, env=program_env(home), timeout=60)
    os.close(r)
    return p.returncode


def test_auth_pop_without_ldapserver_is_a_configuration_error(qmailhome):
    """§2.2 ldapserver: required; §5.7 exit 1 = config error (qmail-popup: error in server configuration)."""
    assert not os.path.exists(os.path.join(qmailhome, "control", "ldapserver"))
    assert auth_pop_exit(qmailhome) == 1


def test_unreadable_ldaplogin(qmailhome):
    """§2.2 ldaplogin: missing = anonymous; unreadable = fatal for qmail-lspawn and auth_pop/imap/dovecot,
    an anonymous bind for qmail-verify, auth_smtp, qmail-group and qmail-ldaplookup."""
    from engine import qldap
    ctl = os.path.join(qmailhome, "control")
    with open(os.path.join(ctl, "ldapserver"), "w") as f:
        f.write("127.0.0.1:1\n")
    with open(os.path.join(ctl, "ldappassword"), "w") as f:
        f.write("pw\n")
    cfg = qldap.Config.load(qmailhome)
    assert (cfg.login, cfg.password) == ("", "pw")
    os.mkdir(os.path.join(ctl, "ldaplogin"))  # unreadable even for root: reading a directory fails
    with pytest.raises(control.ControlError):
        qldap.Config.load(qmailhome)
    assert qldap.Config.load(qmailhome, login_fallback=True).login == ""
    assert auth_pop_exit(qmailhome) == 1


# --- §1.1 auth_smtp: the program's stdin/stdout protocol, against the test slapd ----------------------

def b64(text):
    import base64
    return base64.b64encode(text).decode().encode()


def auth_smtp(home, data, *args):
    return subprocess.run([PY, "-m", "engine.authsmtp", *args], input=data, capture_output=True, timeout=60,
                          env=program_env(home))


def test_auth_smtp_protocol(qmailhome, slapd):  # noqa: F811
    """§1.1 auth_smtp: `login\\0<b64 user>\\0<b64 pass>\\0` or `plain\\0<b64 blob>\\0`; K<user>\\0, D, Z;
    exit 111 without output for inactive accounts and another mechanism."""
    from support.ldapenv import fresh_domain, point_at
    from support.slapd import add_user
    d = fresh_domain("asmtp")
    point_at(qmailhome, slapd)
    add_user(slapd, f"ok{d}", f"ok@{d}", userPassword="{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")  # "secret"
    add_user(slapd, f"off{d}", f"off@{d}", userPassword="secret", accountStatus="disabled")
    ok, off = f"ok{d}".encode(), f"off{d}".encode()
    cases = [
        (b"login\0" + b64(ok) + b"\0" + b64(b"secret") + b"\0", 0, b"K" + ok + b"\0"),
        (b"plain\0" + b64(b"\0" + ok + b"\0secret") + b"\0", 0, b"K" + ok + b"\0"),
        (b"plain\0" + b64(b"authz\0" + ok + b"\0secret") + b"\0", 0, b"K" + ok + b"\0"),
        (b"login\0" + b64(ok) + b"\0" + b64(b"wrong") + b"\0", 0, b"D"),
        (b"login\0" + b64(ok) + b"\0" + b64(b"") + b"\0", 0, b"D"),
        (b"login\0" + b64(b"nobody" + ok) + b"\0" + b64(b"secret") + b"\0", 0, b"D"),
        (b"login\0" + b64(ok) + b"\0", 0, b"Z"),
        (b"login\0!!notbase64\0" + b64(b"secret") + b"\0", 0, b"Z"),
        (b"plain\0" + b64(ok + b"\0secret") + b"\0", 0, b"Z"),
        (b"", 0, b"Z"),
        (b"login\0" + b64(off) + b"\0" + b64(b"secret") + b"\0", 111, b""),
        (b"cram-md5\0x\0", 111, b""),
    ]
    for data, code, out in cases:
        p = auth_smtp(qmailhome, data)
        assert (p.returncode, p.stdout) == (code, out), data
    assert auth_smtp(qmailhome, b"login\0" + b64(ok) + b"\0" + b64(b"secret") + b"\0", "extra").returncode == 111


# --- Appendix: the decisions on code-vs-doc discrepancies that concern these programs ------------------

def test_appendix_defaults_follow_the_code():
    """Appendix: tlsciphers default `compat` (code, not QLDAPINSTALL's `default`); timeoutremote and
    timeoutsmtpd 120 s (code, not the man pages' 1200 s); REPLY_TIMEOUT 14 days (not "1 Week")."""
    from engine import reply
    assert control.REGISTRY["tlsciphers"].default == "compat"
    assert control.REGISTRY["tlsremoteciphers"].default == "compat"
    assert (control.REGISTRY["timeoutremote"].default, control.REGISTRY["timeoutsmtpd"].default) == (120, 120)
    assert reply.REPLY_TIMEOUT == 14 * 24 * 3600


def test_showctl_prints_the_code_defaults(qmailhome):
    """qmail-showctl shows the defaults the programs use (Appendix: 120 s, compat)."""
    p = subprocess.run([PY, "-m", "engine.showctl"], capture_output=True, env=program_env(qmailhome), timeout=60)
    assert p.returncode == 0
    lines = set(p.stdout.decode().splitlines())
    assert {"timeoutremote: (Default.) SMTP client data timeout is 120 seconds.",
            "timeoutsmtpd: (Default.) SMTP server data timeout is 120 seconds.",
            "tlsciphers: (Default.) SMTP server TLS ciphers are compat.",
            "tlsremoteciphers: (Default.) SMTP client TLS ciphers are compat."} <= lines


# --- §1.2 qmail-reply's invocation: `[-f file] [-j junkfile] [maildir]`, DTLINE SENDER RECIPIENT HOST ----

REPLY_ENV = {"QMAILREPLYTEXT": "away", "DTLINE": "Delivered-To: a@b.test\n", "SENDER": "s@x.test",
             "RECIPIENT": "a@b.test", "HOST": "b.test"}


@pytest.mark.parametrize("args, drop, code, text", [
    (["-x"], None, 100, "qmail-reply: usage: qmail-reply [-f mailfile] [-j junkfile] [maildir]"),
    ([], "QMAILREPLYTEXT", 100, "qmail-reply: fatal: QMAILREPLYTEXT not present."),
    ([], "DTLINE", 100, "qmail-reply: fatal: Environment DTLINE not present."),
    ([], "SENDER", 100, "qmail-reply: fatal: Environment SENDER not present."),
    ([], "RECIPIENT", 100, "qmail-reply: fatal: Environment RECIPIENT not present."),
    ([], "HOST", 100, "qmail-reply: fatal: Environment HOST not present."),
])
def test_qmail_reply_arguments_and_environment(qmailhome, args, drop, code, text):
    env = {k: v for k, v in program_env(qmailhome, **REPLY_ENV).items() if k != drop}
    p = subprocess.run([PY, "-m", "engine.reply", *args], input=b"Subject: x\n\nhi\n", capture_output=True,
                       env=env, timeout=60)
    assert (p.returncode, p.stderr.decode().strip()) == (code, text)


def test_rspawn_cleans_tcpto_at_start(qmailhome):
    """§1.1 qmail-rspawn: cleans lock/tcpto at start."""
    path = os.path.join(qmailhome, "queue", "lock", "tcpto")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"\x7f" * size)
    p = RemotePool(qmailhome)
    try:
        with open(path, "rb") as f:
            assert f.read() == bytes(size)
    finally:
        p.close()


# --- §1.1 qmail-clean ------------------------------------------------------------------------------------

def test_clean_todo_request_removes_intd_and_todo(qmailhome):
    """§1.1 qmail-clean: `todo/<id>` removes intd+todo (qmail's queue links both), `foop/<id>` intd+mess;
    answers `+`, and `x` for a bad request."""
    import threading
    from engine import clean, hier
    q = os.path.join(qmailhome, "queue")
    msgid = 4711
    paths = {kind: hier.queue_file(q, kind, msgid) for kind in ("intd", "todo", "mess")}
    for p in paths.values():
        with open(p, "wb") as f:
            f.write(b"x")
    a, b = socket.socketpair()
    t = threading.Thread(target=clean.serve, args=(b, q), daemon=True)
    t.start()
    try:
        a.sendall(f"todo/{msgid}\0".encode())
        assert a.recv(1) == b"+"
        assert [k for k, p in paths.items() if os.path.exists(p)] == ["mess"]
        with open(paths["intd"], "wb") as f:
            f.write(b"x")
        a.sendall(f"foop/{msgid}\0".encode() + b"foop/\0" + b"mess/1\0")
        got = b""
        while len(got) < 3:
            got += a.recv(3)
        assert got == b"+xx"
        assert not any(os.path.exists(p) for p in paths.values())
    finally:
        a.close()
        t.join(5)
