"""qmail-lspawn: the local delivery pool (qmail-lspawn.c, spawn.c).

Each preforked worker accepts one connection from qmail-send on the pool's
socket, announces its capacity (one delivery at a time) and then serves
spawn-protocol requests (engine.spawn) until qmail-send goes away. For each
recipient it opens the message, finds the user — the LDAP directory when
control/ldapserver exists, else (ldaplocaldelivery) users/cdb, then the
passwd lookup of qmail-getpw, else the alias user — and runs the
qmail-local logic (engine.local) under the user's uid, reporting the
result with qmail-lspawn's letters and texts. A directory entry whose
mailHost is another cluster member (control/ldapcluster) is handed to
bin/qmail-forward (engine.forward) instead.

Privileges: the pool runs as root when the master does, because a delivery
must become the recipient. Nothing is delivered as root. A delivery for
another uid runs in a child that has dropped to that uid; children stay
alive per uid (a few, least recently used first out), so the common
virtual-user setup — every mailbox under one vmail uid — pays one fork
per worker, not one per message. In a single-user instance everything is
delivered in-process.
"""

import errno
import grp
import os
import pickle
import pwd
import signal
import socket
import struct
import subprocess
import sys
from collections import OrderedDict

from engine import arbiter, cdb, conf, control, forward, getpw, hier, local, maildir, qldap, spawn, users

QLX_USAGE, QLX_ROOT, QLX_NFS, QLX_NOALIAS, QLX_CDB, QLX_SYS, QLX_NOMEM = 112, 113, 115, 116, 117, 118, 119
QLX_EXECSOFT, QLX_EXECHARD, QLX_EXECPW = 120, 126, 121
QLX_CLUSTERSOFT, QLX_CLUSTERHARD = 162, 163
QLX_DIRMAKESOFT, QLX_DIRMAKEHARD, QLX_DIRMAKECRASH = 167, 168, 169

QLX_TEXT = {
    QLX_USAGE: b"ZInternal qmail-lspawn bug.",
    QLX_ROOT: b"ZNot allowed to perform deliveries as root.",
    QLX_NFS: b"ZNFS failure in qmail-local.",
    QLX_NOALIAS: b"ZUnable to find alias user!",
    QLX_CDB: b"ZTrouble reading users/cdb in qmail-lspawn.",
    QLX_SYS: b"ZTemporary failure in qmail-lspawn.",
    QLX_NOMEM: b"ZOut of memory in qmail-lspawn.",
    QLX_EXECSOFT: b"ZUnable to run qmail-local.",
    QLX_EXECHARD: b"DUnable to run qmail-local.",
    QLX_EXECPW: b"ZUnable to run qmail-getpw.",
    150: b"DThe message exeeded the maximum size the user accepts. (#5.2.3)",
    152: b"ZTemporary failure in LDAP lookup. (#4.4.3).",
    153: b"ZUnable to login into LDAP server, bad credentials. (#4.4.3)",
    154: b"ZTimeout while performing search on LDAP server. (#4.4.3)",
    155: b"ZUnable to contact LDAP server. (#4.4.3)",
    156: b"DToo many results returned but needs to be unique. (#5.3.5)",
    157: b"DLDAP attribute is not given but mandatory. (#5.3.5)",
    158: b"DIllegal value in LDAP attribute. (#5.3.5)",
    159: b"DMailaddress is administratively disabled. (#5.2.1)",
    160: b"DSorry, no mailbox here by that name. (#5.1.1)",
    162: b"ZTemporary error while executing qmail-forward. (#4.4.4)",
    163: b"DPermanent error while executing qmail-forward. (#5.4.4)",
    167: b"ZTemporary error in automatic homedir creation. (#4.3.0)",
    168: b"DPermanent error in automatic homedir creation. (#5.3.0)",
    169: b"ZAutomatic homedir creator crashed (#4.3.0)",
}
UID_HELPERS = 4  # persistent per-uid children kept by one root worker
DUPEALIAS_USER = "dupealias"  # DUPEALIAS: the passwd user that gets addresses on several entries


class Refusal(Exception):
    """The recipient cannot be delivered; `code` is a QLX exit code of the table above."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def report(code, output):
    """qmail-lspawn's report(): status letter and text for a qmail-local exit code; the output
    is passed on up to its first NUL, as report() copies it."""
    if code in QLX_TEXT:
        return QLX_TEXT[code][:1], QLX_TEXT[code][1:]
    output = output.split(b"\0", 1)[0]
    if code == 0:
        return b"K", output
    if code in (111, 71, 74, 75):
        return b"Z", output
    return b"D", output


# --- who is the recipient --------------------------------------------------------------

class Target:
    """Who qmail-local runs as and with what; env values of None are unset for qmail-local."""

    __slots__ = ("user", "uid", "gid", "home", "dash", "ext", "env", "aliasempty")

    def __init__(self, user, uid, gid, home, dash, ext, env=None, aliasempty=None):
        self.user, self.uid, self.gid, self.home = user, int(uid), int(gid), home
        self.dash, self.ext, self.env, self.aliasempty = dash, ext, env or {}, aliasempty


class ClusterForward:
    """The recipient lives on another cluster member: qmail-forward hands the message to `mailhost`."""

    __slots__ = ("mailhost",)

    def __init__(self, mailhost):
        self.mailhost = mailhost


class UsersCdb:
    """users/cdb kept open between deliveries; reopened when qmail-newu has replaced the file.

    qmail-lspawn opened it once per delivery; a stat per delivery sees a new file (qmail-newu
    renames a new cdb into place) just as soon, without a map and unmap each time."""

    def __init__(self):
        self.key = None
        self.db = None

    def get(self, qmailhome):
        """The open users/cdb, or None when it does not exist; OSError when it cannot be read."""
        p = users.path(qmailhome)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            self.close()
            return None
        key = (p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self.key:
            self.close()
            self.db = cdb.Cdb(p)
            self.key = key
        return self.db

    def close(self):
        if self.db is not None:
            self.db.close()
        self.db = self.key = None


_users_cdb = UsersCdb()


def users_cdb_lookup(qmailhome, local_part):
    """users/cdb (qmail-users(5)) for `local_part`, or None; Refusal(QLX_CDB) when unreadable."""
    try:
        db = _users_cdb.get(qmailhome)
        if db is None:
            return None
        record = users.find_record(db, local_part.encode("utf-8", "surrogateescape"))
        found = None if record is None else users.parse_record(db.path, record)
    except OSError:
        _users_cdb.close()
        raise Refusal(QLX_CDB) from None
    return Target(*found) if found else None


def alias_account(qmailhome):
    """(user, uid, gid, home) of ~alias: qmail's alias user, or in a single-user instance its
    owner with the home's alias/ directory."""
    if hier.is_single_user(qmailhome):
        return conf.USER_ALIAS, os.getuid(), os.getgid(), os.path.join(qmailhome, "alias")
    try:
        pw = pwd.getpwnam(conf.USER_ALIAS)
    except KeyError:
        raise Refusal(QLX_NOALIAS) from None
    return pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir


def dupealias_target(qmailhome, local_part):
    """DUPEALIAS: the passwd user dupealias (in a single-user instance its owner with the home's
    dupealias/ directory), dash '-', the whole local part as extension, no LDAP environment."""
    if hier.is_single_user(qmailhome):
        account = (DUPEALIAS_USER, os.getuid(), os.getgid(), os.path.join(qmailhome, DUPEALIAS_USER))
    else:
        try:
            pw = pwd.getpwnam(DUPEALIAS_USER)
        except KeyError:
            raise Refusal(QLX_NOALIAS) from None
        account = (pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
    return Target(*account, conf.BREAK, local_part)


def alias_target(qmailhome, local_part, env=None, aliasempty=None):
    """The alias user with the whole local part as extension (no user found, forward-only entries)."""
    return Target(*alias_account(qmailhome), conf.BREAK, local_part, env, aliasempty)


def passwd_lookup(qmailhome, local_part):
    """qmail-getpw's passwd rules, ending at the alias user."""
    try:
        found = getpw.getpw(local_part, alias=False)
    except getpw.NfsFailure:
        raise Refusal(QLX_NFS) from None
    return Target(*found) if found else alias_target(qmailhome, local_part)


def local_lookup(qmailhome, local_part):
    """users/cdb first, then qmail-getpw's passwd rules (ending at the alias user)."""
    return users_cdb_lookup(qmailhome, local_part) or passwd_lookup(qmailhome, local_part)


def ldap_target(qmailhome, delivery, local_part):
    """A resolved directory entry as qmail-local's arguments and environment."""
    env = delivery.local_env()
    if delivery.kind == "forwardonly":
        return alias_target(qmailhome, local_part, env, delivery.aliasempty)
    return Target(delivery.user, delivery.uid, delivery.gid, delivery.home, delivery.dash, delivery.ext,
                  env, delivery.aliasempty)


# --- running one delivery ---------------------------------------------------------------

def make_home(dirmaker, home, aliasempty):
    """AUTOHOMEDIRMAKE: run control/dirmaker (as the user) for a missing home; a QLX code or 0."""
    if not dirmaker or os.path.isdir(home):
        return 0
    try:
        proc = subprocess.run([dirmaker, home, aliasempty], stdin=subprocess.DEVNULL)
    except OSError as e:  # dirmaker.c: a failed exec is temporary only for error_temp() errnos
        return QLX_DIRMAKESOFT if e.errno in TEMP_ERRNOS else QLX_DIRMAKEHARD
    if proc.returncode < 0:
        return QLX_DIRMAKECRASH
    if proc.returncode == 100:
        return QLX_DIRMAKEHARD
    return 0 if proc.returncode == 0 else QLX_DIRMAKESOFT


def run_local(target, local_part, domain, sender, aliasempty, fd, base_env, dirmaker=None):
    """qmail-local in this process: (exit code, output bytes)."""
    aliasempty = target.aliasempty or aliasempty
    made = make_home(dirmaker, target.home, aliasempty)
    if made:
        return made, b""
    r = local.Recipient(user=target.user, home=target.home, local=local_part, dash=target.dash,
                        ext=target.ext, host=domain, sender=sender, aliasempty=aliasempty)
    env = dict(base_env)
    for name, value in target.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    cwd = os.getcwd()
    try:
        code, text = local.deliver(r, fd, env=env)
    except Exception as e:  # a bug must defer the message, never lose it
        code, text = 111, f"qmail-local crashed: {type(e).__name__}: {e}\n"
    finally:
        os.chdir(cwd)
    return code, text.encode("utf-8", "surrogateescape")


class Stopping(Exception):
    """SIGTERM, at a moment no delivery is under way."""


class UidHelper:
    """A child that dropped to one uid/gid and runs deliveries sent over a socketpair (fd via SCM_RIGHTS)."""

    def __init__(self, uid, gid, base_env, dirmaker):
        self.uid, self.gid = uid, gid
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            code = 0
            try:
                arbiter.set_process_name("qmail-local")
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(uid)
                self._serve(child, base_env, dirmaker)
            except BaseException:
                code = 111
            finally:
                os._exit(code)
        child.close()
        self.pid, self.sock = pid, parent

    @staticmethod
    def _serve(sock, base_env, dirmaker):
        # requests come from our root parent (trusted, so pickle is fine); replies go back as
        # a fixed struct + text, so the parent never unpickles anything from the user's side
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
            if not msg:
                return
            target, local_part, domain, sender, aliasempty = pickle.loads(msg)
            code, text = run_local(target, local_part, domain, sender, aliasempty, fds[0], base_env, dirmaker)
            os.close(fds[0])
            sock.send(struct.pack("<i", code) + text)

    def deliver(self, target, local_part, domain, sender, aliasempty, fd):
        request = pickle.dumps((target, local_part, domain, sender, aliasempty))
        socket.send_fds(self.sock, [request], [fd])
        reply = self.sock.recv(1 << 20)
        if len(reply) < 4:
            raise ChildProcessError("uid helper died")
        (code,) = struct.unpack_from("<i", reply)
        return code, reply[4:]

    def close(self):
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class Worker:
    """One pool process: serves qmail-send's requests one at a time."""

    def __init__(self, qmailhome, aliasempty, listener, base_env=None):
        self.home = qmailhome
        self.aliasempty = aliasempty
        self.listener = listener
        self.base_env = base_env if base_env is not None else default_env(qmailhome)
        self.helpers = OrderedDict()
        self.directory = None
        self.single_user = hier.is_single_user(qmailhome)
        self.queue_uid = None if self.single_user else pwd.getpwnam(conf.USER_QUEUE).pw_uid
        self.reload()

    def reload(self):
        """Control files this pool reads (qmail's 0xBEEF message): LDAP settings and dirmaker."""
        if self.directory is not None:
            self.directory.close()
        self.directory = None
        self.dirmaker = control.read_line("dirmaker", None, self.home)
        if control.read_list("ldapserver", None, self.home) is not None:
            self.directory = qldap.Directory(qldap.Config.load(self.home))

    def resolve(self, local_part, domain, size):
        """qmail-lspawn's lookup: the directory, then (ldaplocaldelivery) users/cdb and passwd."""
        if self.directory is None:
            return local_lookup(self.home, local_part)
        address = f"{local_part}@{domain}"
        try:
            hit = self.directory.lookup(address)
        except qldap.TooMany:
            if self.directory.cfg.dupealias:
                return dupealias_target(self.home, local_part)
            raise Refusal(qldap.TooMany.qlx) from None
        except qldap.QldapError as e:
            raise Refusal(e.qlx) from None
        try:
            if hit is not None:
                delivery = qldap.resolve(hit[0], self.directory.cfg, address, hit[1], size)
                if delivery.kind == "cluster":
                    return ClusterForward(delivery.mailhost)
                return ldap_target(self.home, delivery, local_part)
        except qldap.QldapError as e:
            raise Refusal(e.qlx) from None
        if self.directory.cfg.localdelivery:
            return local_lookup(self.home, local_part)
        return alias_target(self.home, local_part)

    def serve_forever(self):
        """Serve qmail-send connections until SIGTERM; a delivery under way when it comes is
        finished and reported first (qmail-send waits for it before it exits itself)."""
        os.chdir(self.home)
        self.busy = self.stopping = False
        signal.signal(signal.SIGTERM, self._on_term)
        try:
            while True:
                conn, _ = self.listener.accept()
                with conn:
                    self.serve(conn)
        except Stopping:
            pass

    def _on_term(self, signum, frame):
        self.stopping = True
        if not self.busy:
            raise Stopping

    def serve(self, conn):
        conn.sendall(spawn.encode_limit(1))
        reader = spawn.RequestReader()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for slot, messid, sender, recipient in reader.feed(data):
                if slot == spawn.HUP_SLOT and not (messid or sender or recipient):
                    self.reload()
                    continue
                self.busy = True
                letter, text = self.deliver(messid, sender, recipient)
                conn.sendall(spawn.encode_reply(slot, letter, text))
                self.busy = False
                if self.stopping:
                    raise Stopping

    def deliver(self, messid, sender, recipient):
        refused = spawn.request_error(messid, recipient)
        if refused:
            return refused
        at = recipient.rfind(b"@")
        if at == 0:
            return b"K", b""
        try:
            fd = os.open(os.path.join(self.home, "queue", "mess", messid.decode()), os.O_RDONLY)
        except OSError:
            return b"Z", b"qmail-spawn unable to open message. (#4.3.0)"
        try:
            if self.queue_uid is not None and os.fstat(fd).st_uid != self.queue_uid:
                return b"Z", b"Sorry, message has wrong owner. (#4.3.5)"
            dec = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
            return self.deliver_fd(fd, dec(recipient[:at]), dec(recipient[at + 1:]), dec(sender))
        finally:
            os.close(fd)

    def deliver_fd(self, fd, local_part, domain, sender):
        try:
            target = self.resolve(local_part, domain, os.fstat(fd).st_size)
        except Refusal as r:
            return report(r.code, b"")
        if isinstance(target, ClusterForward):
            return self.cluster_forward(target.mailhost, sender, f"{local_part}@{domain}", fd)
        if self.single_user:
            code, text = run_local(target, local_part, domain, sender, self.aliasempty, fd, self.base_env,
                                   self.dirmaker)
        elif target.uid == 0:
            code, text = QLX_ROOT, b""
        else:
            code, text = self.deliver_as(target, local_part, domain, sender, fd)
        return report(code, text)

    def cluster_forward(self, mailhost, sender, recipient, fd):
        """forward_mail(): `qmail-forward mailhost sender recipient` with the message on fd 0 and
        its output (stdout and stderr) in the report.

        qmail-lspawn.c calls prot_gid(auto_uida) then prot_uid(auto_gidn): the alias user's uid as
        the group and nofiles' gid as the user, which looks like swapped arguments. We run it as
        the evident intent says: uid of alias, gid of nofiles (a single-user instance: its owner).
        """
        ids = {} if self.single_user else forward_ids()
        if ids is None:
            return report(QLX_NOALIAS, b"")
        if ids.get("user") == 0:
            return report(QLX_ROOT, b"")
        prog = forward.program_path(self.home, "qmail-forward")
        try:
            proc = subprocess.run([prog, mailhost, sender, recipient], stdin=fd, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=self.base_env, cwd=self.home, **ids)
        except OSError as e:  # could not exec: error_temp decides between 162 and 163
            return report(QLX_CLUSTERSOFT if e.errno in TEMP_ERRNOS else QLX_CLUSTERHARD, b"")
        except subprocess.SubprocessError:  # dropping privileges failed in the child
            return report(QLX_USAGE, b"")
        if proc.returncode < 0:
            return b"Z", b"qmail-local crashed."
        return report(proc.returncode, proc.stdout)

    def deliver_as(self, target, local_part, domain, sender, fd):
        key = (target.uid, target.gid)
        helper = self.helpers.pop(key, None)
        if helper is None:
            if len(self.helpers) >= UID_HELPERS:
                self.helpers.popitem(last=False)[1].close()
            helper = UidHelper(target.uid, target.gid, self.base_env, self.dirmaker)
        try:
            result = helper.deliver(target, local_part, domain, sender, self.aliasempty, fd)
        except (OSError, ChildProcessError):
            helper.close()
            return 111, b"qmail-local crashed.\n"
        self.helpers[key] = helper
        return result


# qmail's error_temp(): errnos that make a failed exec a temporary problem
TEMP_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EINTR", "ENOMEM", "ETXTBSY", "EIO", "ETIMEDOUT", "EWOULDBLOCK", "EAGAIN", "EBUSY", "ECONNABORTED",
    "ECONNREFUSED", "ECONNRESET", "EDEADLK", "EDQUOT", "EFBIG", "EHOSTDOWN", "EHOSTUNREACH", "EMFILE",
    "ENETDOWN", "ENETRESET", "ENETUNREACH", "ENFILE", "ENOBUFS", "ENOLCK", "ENOSPC", "ESTALE",
    "ETOOMANYREFS", "EUSERS"))


def forward_ids():
    """subprocess keywords for qmail-forward's ids (alias uid, nofiles gid); None without alias."""
    try:
        uid = pwd.getpwnam(conf.USER_ALIAS).pw_uid
        gid = grp.getgrnam(conf.GROUP_NOFILES).gr_gid
    except KeyError:
        return None
    return {"user": uid, "group": gid, "extra_groups": [gid]}


def default_env(qmailhome):
    """What qmail's run script gives qmail-start: a clean environment with ~/bin first on PATH.

    AUTOMAILDIRMAKE (qmail-ldap's build option, on here) lets qmail-local create a missing Maildir.
    """
    return {"PATH": f"{qmailhome}/bin:/usr/local/bin:/usr/bin:/bin", "QMAILHOME": qmailhome,
            "AUTOMAILDIRMAKE": "1"}


def run_pool_worker(qmailhome, aliasempty, listener):
    """Arbiter target for one local pool worker.

    qmail-send syncs the queue's file system before it marks a delivery done, so Maildirs on
    that file system skip their own new/ fsync (engine.maildir.defer_new_sync)."""
    maildir.defer_new_sync(os.stat(os.path.join(qmailhome, "queue")).st_dev)
    Worker(qmailhome, aliasempty, listener).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit("qmail-lspawn runs inside qmail-start; see engine/start.py")
