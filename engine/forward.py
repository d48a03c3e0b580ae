"""qmail-forward: hands one recipient's message to its cluster mail host (qmail-forward.c).

    qmail-forward host sender recipient

qmail-lspawn runs it for a recipient whose LDAP entry has a mailHost that is
not this host (control/ldapcluster=1; spec 3.9). The message is on fd 0
(seekable, the queued file). qmail-forward

  * bounces a message whose header block already holds the line
    `Delivered-To: CLUSTERHOST <me> <recipient>` (exit 100, #5.4.6): it went
    round the cluster and came back;
  * otherwise prepends that line and runs `bin/qmail-qmqpc <host>` with
    qmail-queue's interface (message on its fd 0, envelope `F<sender>\\0
    T<recipient>\\0 \\0` on its fd 1), so the mail host's qmail-qmqpd queues
    it there;
  * turns qmail-qmqpc's exit code into qmail's queue texts (qmail.c) and
    exits 0 (`qmail-forward: ok <time> qp <pid>.`), 100 for a permanent
    (D) answer or 111 for a temporary one, the exit codes qmail-lspawn
    reports as K, D and Z with this program's output appended.

Everything it prints goes to stderr, which qmail-lspawn joins to stdout.
"""

import os
import shutil
import sys
import time

from engine import conf, control, qq
from engine.tcpto import error_str

FATAL = "qmail-forward: fatal: "
USAGE = "qmail-forward: usage: qmail-forward host sender recipient"
DTLINE_HEAD = b"Delivered-To: CLUSTERHOST "
LOOPING = FATAL + ("This message is looping: it already has my Cluster-Delivered-To line. (#5.4.6)\n")
CHUNK = 65536


class Die(Exception):
    """strerr_die: exit `code` after printing `text` and a newline."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def program_path(home, name):
    """bin/<name> in the qmail home, as qmail runs its helpers; in a development tree without
    `make setup`, the console script beside this Python or on PATH."""
    binpath = os.path.join(home, "bin", name)
    if os.path.exists(binpath):
        return binpath
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name) or binpath


def dtline(me, recipient):
    """The cluster Delivered-To line; a newline inside it becomes '_' as in qmail-local's dtline."""
    return (DTLINE_HEAD + me + b" " + recipient).replace(b"\n", b"_") + b"\n"


def header_has(fd, line):
    """bouncexf(): does the header block (up to the first empty line) hold exactly `line`?"""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise Die(111, FATAL + "Unable to rewind message. (#4.3.0)") from None
    pending = b""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError as e:
            raise Die(111, f"Unable to read message: {error_str(e)}. (#4.3.0)") from None
        if not data:
            return False  # a last line without newline is not compared, as getln's !match
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if len(raw) == 0:  # qmail stops at a line of length <= 1 with its newline: the empty line
                return False
            if raw + b"\n" == line:
                return True


class RemoteQueue:
    """qmail.c's qmail_remote(): `bin/qmail-qmqpc host` run like qmail-queue, fed like qq.Queue."""

    def __init__(self, home, host):
        program = program_path(home, "qmail-qmqpc")
        msg_r, msg_w = os.pipe()
        env_r, env_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(program, home, host, msg_r, env_r, (msg_w, env_w))
        os.close(msg_r)
        os.close(env_r)
        self.message = os.fdopen(msg_w, "wb", buffering=CHUNK)
        self.env_w = env_w
        self.flagerr = False

    @staticmethod
    def _child(program, home, host, msg_r, env_r, parent_ends):
        """fd 0 = message, fd 1 = envelope, in the qmail home; exit 120/61 as qmail.c's child.

        qmail-ldap's qmail-qmqpc prints nothing; ours explains its exit code on stderr. That goes
        to /dev/null so that qmail-lspawn's report is qmail-forward's line alone, as in qmail-ldap."""
        try:
            for fd in parent_ends:
                os.close(fd)
            os.dup2(msg_r, 0)
            os.dup2(env_r, 1)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
        except OSError:
            os._exit(qq.EXIT_NOEXEC)
        try:
            os.chdir(home)
        except OSError:
            os._exit(qq.EXIT_HOME)
        try:
            os.execv(program, [program, host])
        except BaseException:
            pass
        os._exit(qq.EXIT_NOEXEC)

    def put(self, data):
        if self.flagerr:
            return
        try:
            self.message.write(data)
        except OSError:
            self.flagerr = True

    def close(self, sender, recipient):
        """qmail_from, qmail_to, qmail_close: the result text ("" for success)."""
        try:
            self.message.close()
        except OSError:
            self.flagerr = True
        envelope = b"F" + sender + b"\0T" + recipient + b"\0\0"
        try:
            with os.fdopen(self.env_w, "wb") as f:
                f.write(envelope)
        except OSError:
            self.flagerr = True
        _, status = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(status):
            return qq.CRASHED
        return qq.result_text(os.waitstatus_to_exitcode(status), b"", self.flagerr)


def copy_message(fd, queue):
    """dtline already put; now the whole message from its start."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise Die(111, FATAL + "Unable to rewind message. (#4.3.0)") from None
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            queue.flagerr = True  # qmail_fail: the answer becomes "qq read error"
            return
        if not data:
            return
        queue.put(data)


def forward(home, host, sender, recipient, fd=0):
    """The whole program after argument checks: the line printed on success, else Die."""
    try:
        os.chdir(home)
    except OSError as e:
        raise Die(111, f"{FATAL}Unable to switch to {home}: {error_str(e)}") from None
    try:
        me = control.me(home)
    except control.ControlError as e:
        raise Die(111, f"{FATAL}Unable to read control/me: {e}") from None
    if me is None:
        raise Die(111, f"{FATAL}Unable to read control/me: file does not exist")
    line = dtline(me.encode("utf-8", "surrogateescape"), recipient)
    if header_has(fd, line):
        raise Die(100, LOOPING)
    try:
        queue = RemoteQueue(home, host)
    except OSError as e:
        raise Die(111, f"Unable to fork: {error_str(e)}. (#4.3.0)") from None
    qp = queue.pid
    queue.put(line)
    copy_message(fd, queue)
    answer = queue.close(sender, recipient)
    if answer:
        raise Die(100 if answer[0] == "D" else 111, f"Unable to cluster-forward message: {answer[1:]}.")
    return f"qmail-forward: ok {int(time.time())} qp {qp}."


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(USAGE, file=sys.stderr)
        return 100
    host, sender, recipient = argv[0], os.fsencode(argv[1]), os.fsencode(argv[2])
    try:
        text, code = forward(conf.qmailhome(), host, sender, recipient), 0
    except Die as d:
        text, code = d.text, d.code
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
