"""The caller's side of qmail-queue (qmail's qmail.c: qmail_open/put/from/to/close).

Every injector (qmail-inject, qmail-smtpd, qmail-qmtpd, qmail-qmqpd,
qmail-local forwards, bounces) hands a message to the queue program the
same way: the program runs in the qmail home with the message on its fd 0,
the envelope on its fd 1 (``F<sender>\\0``, ``T<recipient>\\0`` ..., ``\\0``)
and a pipe on fd 4 where a filter may write its own error text. Its exit
status becomes qmail's result text: "" for success, else a text starting
with D (permanent) or Z (temporary), which injectors print after
``554 ``/``451 `` or ``qmail-inject: fatal: ``.

The queue program is ``$QMAILQUEUE`` when set (ALTQUEUE, as in qmail-ldap;
a relative name is relative to the qmail home), else ``bin/qmail-queue`` in
the qmail home, else the ``qmail-queue`` installed beside this Python or on
PATH (a development tree without ``make setup``).
"""

import fcntl
import os
import shutil
import sys

from engine import conf

ERRTEXT_MAX = 255  # qmail.c reads at most this much custom error text from fd 4
CUSTOM_ERROR = 82  # simscan-style: the text on fd 4 is the answer
EXIT_NOEXEC = 120
EXIT_HOME = 61

OK = ""
READ_ERROR = "Zqq read error (#4.3.0)"
CRASHED = "Zqq crashed (#4.3.0)"
WAITPID_SURPRISE = "Zqq waitpid surprise (#4.3.0)"
PERMANENT = "Dqq permanent problem (#5.3.0)"
TEMPORARY = "Zqq temporary problem (#4.3.0)"

# qmail.c qmail_close(): exit code -> result text
EXIT_TEXT = {
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",  # compatibility
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: READ_ERROR,
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
}

# Lowest descriptor our pipe ends may use, so dup2 onto 0, 1 and 4 in the
# child never overwrites a source (qmail.c's fd_move has the same concern).
_FD_FLOOR = 5


def result_text(exitcode, errtext=b"", flagerr=False):
    """qmail_close()'s answer for a queue program that exited with `exitcode`."""
    if exitcode == 0:
        return READ_ERROR if flagerr else OK
    if exitcode == CUSTOM_ERROR:
        custom = errtext[:ERRTEXT_MAX].split(b"\0", 1)[0]
        if len(custom) > 2:
            return custom.decode("utf-8", "surrogateescape")
    if exitcode in EXIT_TEXT:
        return EXIT_TEXT[exitcode]
    return PERMANENT if 11 <= exitcode <= 40 else TEMPORARY


def queue_program(env=None, home=None):
    """The queue program to run and the directory to run it in."""
    env = os.environ if env is None else env
    home = home or env.get("QMAILHOME") or conf.qmailhome()
    override = env.get("QMAILQUEUE")
    if override:
        return override, home
    binqq = os.path.join(home, "bin", "qmail-queue")
    if os.path.exists(binqq):
        return binqq, home
    beside = os.path.join(os.path.dirname(sys.executable), "qmail-queue")
    if os.access(beside, os.X_OK):
        return beside, home
    return shutil.which("qmail-queue", path=env.get("PATH")) or binqq, home


def _high_pipe():
    """A pipe whose two ends are close-on-exec descriptors >= _FD_FLOOR."""
    r, w = os.pipe()
    try:
        return tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FD_FLOOR) for fd in (r, w))
    finally:
        os.close(r)
        os.close(w)


class Queue:
    """One message on its way into the queue: qmail_open() at construction.

    Call put() for the message bytes, then sender() once, to() per recipient,
    and close() for the result text. fail() marks the message bad (size
    limit, client gone): close() then queues nothing and answers
    "Zqq read error (#4.3.0)" unless the program reported something else.
    Raises OSError when the pipes or the fork fail (qmail_open's -1).
    The child runs Python between fork and exec (dup2, chdir, execve), as
    qmail.c does in C: fine for single-threaded callers such as every qmail
    program, not meant for a process with other threads.
    """

    def __init__(self, env=None, home=None):
        self.env = dict(os.environ if env is None else env)
        program, cwd = queue_program(self.env, home)
        self.flagerr = False
        self._closed = False
        fds = []
        try:
            for _ in range(3):
                fds.extend(_high_pipe())
            self.pid = os.fork()
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        msg_r, msg_w, env_r, env_w, err_r, err_w = fds
        if self.pid == 0:
            self._child(program, cwd, msg_r, env_r, err_w)
        for fd in (msg_r, env_r, err_w):
            os.close(fd)
        self._message = os.fdopen(msg_w, "wb", buffering=65536)
        self._envelope = None
        self._env_w = env_w
        self._err_r = err_r

    def _child(self, program, cwd, msg_r, env_r, err_w):
        """Between fork and exec: descriptors, qmail home, then the queue program (never returns)."""
        try:
            os.dup2(msg_r, 0)
            os.dup2(env_r, 1)
            os.dup2(err_w, 4)
        except OSError:
            os._exit(EXIT_NOEXEC)
        try:
            os.chdir(cwd)
        except OSError:
            os._exit(EXIT_HOME)
        try:
            os.execve(program, [program], self.env)
        except BaseException:
            pass
        os._exit(EXIT_NOEXEC)

    @property
    def closed(self):
        return self._closed

    @property
    def qp(self):
        """qmail_qp(): the queue program's pid, shown as "qp N" in replies."""
        return self.pid

    def fail(self):
        self.flagerr = True

    def put(self, data):
        if self.flagerr:
            return
        try:
            self._message.write(data)
        except OSError:
            self.flagerr = True

    def sender(self, address):
        """qmail_from(): ends the message and starts the envelope."""
        self._end_message()
        self._envelope = os.fdopen(self._env_w, "wb", buffering=4096)
        self._record(b"F", address)

    def to(self, address):
        self._record(b"T", address)

    def _record(self, kind, address):
        if b"\0" in address:
            raise ValueError("envelope address contains NUL")
        self._put_envelope(kind + address + b"\0")

    def _put_envelope(self, data):
        if self.flagerr:
            return
        try:
            self._envelope.write(data)
        except OSError:
            self.flagerr = True

    def _end_message(self):
        if self._message is None:
            return
        try:
            if not self.flagerr:
                self._message.flush()
        except OSError:
            self.flagerr = True
        _close_quietly(self._message)
        self._message = None

    def close(self):
        """qmail_close(): finish the envelope, collect fd 4 text, reap, map the exit code."""
        if self._closed:
            raise ValueError("queue already closed")
        self._closed = True
        if self._envelope is None:  # no sender(): qmail-queue sees an empty envelope
            self._end_message()
            self.flagerr = True
            os.close(self._env_w)
        else:
            self._put_envelope(b"\0")
            try:
                if not self.flagerr:
                    self._envelope.flush()
            except OSError:
                self.flagerr = True
            _close_quietly(self._envelope)
        errtext = self._read_errtext()
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return WAITPID_SURPRISE
        if os.WIFSIGNALED(status):
            return CRASHED
        return result_text(os.waitstatus_to_exitcode(status), errtext, self.flagerr)

    def _read_errtext(self):
        """Everything the program wrote on fd 4 (read to EOF so it never blocks on us)."""
        text = bytearray()
        with os.fdopen(self._err_r, "rb", buffering=0) as f:
            while chunk := f.read(4096):
                text += chunk[:ERRTEXT_MAX - len(text)]
        return bytes(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._closed:  # an exception mid-message: queue nothing, reap the child
            self.fail()
            self.close()
        return False


def _close_quietly(f):
    try:
        f.close()
    except OSError:
        pass


def submit(message, sender, recipients, env=None, home=None):
    """Queue one whole message; "" on success, else qmail's D/Z result text.

    Raises OSError when the queue program cannot be started at all.
    """
    return submit_with_qp(message, sender, recipients, env, home)[0]


def submit_with_qp(message, sender, recipients, env=None, home=None):
    """submit(), also returning the queue program's pid (the "qp" programs log); `message` may
    be bytes or a list of byte strings written in order."""
    with Queue(env, home) as qq:
        for chunk in ([message] if isinstance(message, (bytes, bytearray, memoryview)) else message):
            qq.put(chunk)
        qq.sender(sender)
        for rcpt in recipients:
            qq.to(rcpt)
        return qq.close(), qq.qp
