"""A real, throwaway OpenLDAP slapd for `make run`, the tests and the benchmarks.

Writes a slapd.conf (Debian's core, cosine, nis and inetorgperson schemas
plus our engine/schema/qmail.schema; one mdb database in the instance
directory; equality indexes on mail, mailAlternateAddress and uid), starts
`slapd -d 0 -h ldap://127.0.0.1:<port>/` (loopback only, never another
address), waits until it answers a bind, and loads entries with ldapadd
(online) or slapadd -q (offline bulk). It can be stopped, frozen with
SIGSTOP, thawed with SIGCONT and restarted on the same port, which the
failover and outage tests need.

Tests:      from support.slapd import slapd  # noqa: F401   (session fixture)
Command:    python -m engine.slapd start DIR [--port N] [--ldif FILE]
            python -m engine.slapd stop DIR
`start` leaves slapd running in the background and prints its URL; the
instance (config, data, pid, port) lives in DIR until `stop`.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import ldap
import ldap.modlist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QMAIL_SCHEMA = os.path.join(ROOT, "engine", "schema", "qmail.schema")
SYSTEM_SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
SYSTEM_SCHEMA_DIR = "/etc/ldap/schema"
SLAPD = "/usr/sbin/slapd"

SUFFIX = "dc=example,dc=org"
ROOTDN = "cn=admin," + SUFFIX
ROOTPW = "secret"
PEOPLE = "ou=people," + SUFFIX

START_TIMEOUT = 10.0


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slapd_conf(directory, suffix=SUFFIX, rootdn=ROOTDN, rootpw=ROOTPW, extra_schemas=()):
    """slapd.conf text for an instance whose database and pid file live in `directory`."""
    includes = [os.path.join(SYSTEM_SCHEMA_DIR, n + ".schema") for n in SYSTEM_SCHEMAS]
    includes += [QMAIL_SCHEMA, *extra_schemas]
    lines = [f"include {p}" for p in includes]
    lines += [
        f"pidfile {directory}/slapd.pid",
        f"argsfile {directory}/slapd.args",
        "modulepath /usr/lib/ldap",
        "moduleload back_mdb",
        "sizelimit unlimited",
        "database mdb",
        "maxsize 1073741824",
        f"suffix \"{suffix}\"",
        f"rootdn \"{rootdn}\"",
        f"rootpw {rootpw}",
        f"directory {directory}/data",
        "index objectClass eq",
        "index mail,mailAlternateAddress,uid eq",
    ]
    return "\n".join(lines) + "\n"


def entry_ldif(dn, attrs):
    """One LDIF record; values are str, bytes or lists of them (base64 where LDIF needs it)."""
    import base64
    out = [f"dn: {dn}"]
    for name, values in attrs.items():
        if not isinstance(values, (list, tuple)):
            values = [values]
        for v in values:
            b = v if isinstance(v, bytes) else str(v).encode()
            safe = b and b[:1] not in b" :<" and b[-1:] != b" " and all(32 <= c < 127 for c in b)
            out.append(f"{name}: {b.decode()}" if safe else f"{name}:: {base64.b64encode(b).decode()}")
    return "\n".join(out) + "\n\n"


def base_ldif(suffix=SUFFIX):
    """The suffix entry and ou=people below it."""
    dc = suffix.split(",")[0].split("=")[1]
    return (entry_ldif(suffix, {"objectClass": ["top", "dcObject", "organization"], "dc": dc, "o": dc})
            + entry_ldif("ou=people," + suffix, {"objectClass": ["top", "organizationalUnit"], "ou": "people"}))


class Slapd:
    """One slapd instance in `directory`, listening on ldap://127.0.0.1:<port>/."""

    def __init__(self, directory, port=None, suffix=SUFFIX, rootdn=ROOTDN, rootpw=ROOTPW):
        self.directory = os.path.abspath(directory)
        self.port = port or free_port()
        self.suffix, self.rootdn, self.rootpw = suffix, rootdn, rootpw
        self.proc = None
        self._conn = None

    @property
    def url(self):
        return f"ldap://127.0.0.1:{self.port}/"

    @property
    def hostport(self):
        """The form control/ldapserver takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def conf(self):
        return os.path.join(self.directory, "slapd.conf")

    # -- lifecycle -------------------------------------------------------

    def setup(self):
        """Write slapd.conf and an empty database directory (idempotent)."""
        os.makedirs(os.path.join(self.directory, "data"), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(slapd_conf(self.directory, self.suffix, self.rootdn, self.rootpw))
        with open(os.path.join(self.directory, "port"), "w") as f:
            f.write(f"{self.port}\n")

    def start(self, detach=False):
        """Start slapd in the foreground (-d 0) as our child and wait until it answers."""
        log = open(os.path.join(self.directory, "slapd.log"), "ab")
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", self.conf, "-h", self.url],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=detach)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}; see {self.directory}/slapd.log")
            try:
                conn = ldap.initialize(self.url)
                conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
                conn.simple_bind_s(self.rootdn, self.rootpw)
                conn.unbind_s()
                return
            except ldap.SERVER_DOWN:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"slapd on {self.url} did not answer within {timeout} s")
                time.sleep(0.02)

    def stop(self):
        """SIGTERM (after a SIGCONT, in case it is frozen) and wait; no-op when not running."""
        self._drop_conn()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def pause(self):
        """SIGSTOP: the port stays open but nothing answers (a hung directory).

        Returns once every slapd thread is really stopped, so no request sent after
        pause() can still be answered by a thread that had not stopped yet."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self._all_threads_stopped():
            time.sleep(0.005)

    def _all_threads_stopped(self):
        task = f"/proc/{self.proc.pid}/task"
        try:
            states = []
            for tid in os.listdir(task):
                with open(f"{task}/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return False
        return all(st in ("T", "t") for st in states)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    # -- data ------------------------------------------------------------

    def conn(self):
        """A rootdn connection for test set-up (re-opened after a restart)."""
        if self._conn is None:
            c = ldap.initialize(self.url)
            c.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
            c.simple_bind_s(self.rootdn, self.rootpw)
            self._conn = c
        return self._conn

    def _drop_conn(self):
        if self._conn is not None:
            try:
                self._conn.unbind_s()
            except ldap.LDAPError:
                pass
            self._conn = None

    def add(self, dn, attrs):
        """Add one entry online; `attrs` maps names to str/bytes or lists of them."""
        mods = {}
        for name, values in attrs.items():
            if not isinstance(values, (list, tuple)):
                values = [values]
            mods[name] = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        try:
            self.conn().add_s(dn, ldap.modlist.addModlist(mods))
        except ldap.SERVER_DOWN:
            self._drop_conn()
            self.conn().add_s(dn, ldap.modlist.addModlist(mods))
        return dn

    def delete(self, dn):
        self.conn().delete_s(dn)

    def ldapadd(self, ldif_text):
        """Load LDIF through the ldapadd client (what an administrator would run)."""
        subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", self.rootdn, "-w", self.rootpw],
                       input=ldif_text.encode(), check=True, stdout=subprocess.DEVNULL)

    def slapadd(self, ldif_path):
        """Bulk-load an LDIF file offline (slapd must be stopped)."""
        if self.proc is not None:
            raise RuntimeError("slapadd needs slapd stopped")
        subprocess.run(["slapadd", "-q", "-f", self.conf, "-l", ldif_path], check=True,
                       stdout=subprocess.DEVNULL)


def add_user(server, uid, mail, ou=None, **attrs):
    """Add a qmailUser (inetOrgPerson) entry `uid=<uid>,ou=people,...`; extra attrs by LDAP name."""
    dn = f"uid={ldap.dn.escape_dn_chars(uid)},{ou or 'ou=people,' + server.suffix}"
    classes = attrs.pop("objectClass", ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser"])
    entry = {"objectClass": classes, "uid": uid, "cn": uid, "sn": uid, "mail": mail}
    entry.update({k: v for k, v in attrs.items() if v is not None})
    return server.add(dn, entry)


def make_instance(directory, port=None, ldif_text=None):
    """A configured instance with the base entries (and `ldif_text`) loaded offline."""
    server = Slapd(directory, port)
    server.setup()
    if os.path.exists(os.path.join(server.directory, "data", "data.mdb")):
        return server  # an existing instance keeps its data
    path = os.path.join(server.directory, "base.ldif")
    with open(path, "w") as f:
        f.write(base_ldif(server.suffix) + (ldif_text or ""))
    server.slapadd(path)
    return server



# -- command line (make run, benchmarks) -----------------------------------

def _cli_start(args):
    ldif_text = open(args.ldif).read() if args.ldif else None
    server = make_instance(args.dir, args.port, ldif_text)
    server.start(detach=True)
    with open(os.path.join(server.directory, "slapd.pid.cli"), "w") as f:
        f.write(f"{server.proc.pid}\n")
    print(server.url)
    return 0


def _cli_stop(args):
    try:
        with open(os.path.join(args.dir, "slapd.pid.cli")) as f:
            pid = int(f.read())
    except FileNotFoundError:
        print(f"no slapd started in {args.dir}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.unlink(os.path.join(args.dir, "slapd.pid.cli"))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m engine.slapd", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="create DIR, load base entries (+ --ldif), start slapd, print URL")
    s.add_argument("dir")
    s.add_argument("--port", type=int)
    s.add_argument("--ldif", help="extra LDIF loaded with slapadd before the start")
    t = sub.add_parser("stop", help="stop the slapd started in DIR")
    t.add_argument("dir")
    args = p.parse_args(argv)
    return _cli_start(args) if args.cmd == "start" else _cli_stop(args)


if __name__ == "__main__":
    sys.exit(main())
