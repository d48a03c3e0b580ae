"""qmail-popup: the POP3 authorization state (qmail-popup.c; spec 5.6).

    qmail-popup hostname subprogram [args...]

Greets with `+OK <<pid>.<time>@<hostname>>`, takes USER, PASS, APOP, QUIT
and NOOP (anything else: `-ERR authorization first`), then hands
`user\\0password\\0<timestamp>\\0` on fd 3 to the subprogram (normally
auth_pop, which execs qmail-pop3d) and waits for it. Its exit code becomes
one -ERR line (`EXIT_TEXTS`; 0 = the subprogram served the session) and
qmail-popup exits. An APOP digest is handed on as the password, so
auth_pop refuses it. 1200 s timeouts on every read and write.

`Dialogue` is the protocol alone, shared with the master's POP3 pool
(engine.pop3pool), which runs it in-process and forks per login.
"""

import os
import signal
import sys
import time

from engine import pop3io
from engine.pop3io import Hangup

OK = b"+OK \r\n"

EXIT_TEXTS = {
    1: b"error in server configuration",
    2: b"unable to contact authorization server",
    25: b"user record incorrect",
    3: b"authorization failed",
    4: b"account disabled",
    5: b"mailhost is unreachable",
    6: b"mailbox is corrupted",
    61: b"mailbox could not be created",
    62: b"the users mailbox does not exist",
    7: b"unable to start subprogram",
    8: b"out of memory",
}
TEXT_TEMPORARY = b"temporary error"
TEXT_CRASHED = b"aack, child crashed"


def err(text):
    return b"-ERR " + text + b"\r\n"


def exit_reply(status):
    """What qmail-popup prints for the subprogram's wait status (None: nothing, it served the session)."""
    if os.WIFSIGNALED(status):
        return err(TEXT_CRASHED)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return err(EXIT_TEXTS.get(code, TEXT_TEMPORARY))


class Dialogue:
    """The authorization dialogue. `greeting()` first, then `handle(line)` per line: it returns
    (reply, action) with action None, "quit", or ("login", user, password)."""

    def __init__(self, hostname, pid=None, now=None):
        pid = os.getpid() if pid is None else pid
        now = int(time.time()) if now is None else now
        self.timestamp = b"<%d.%d@%s>" % (pid, now, hostname)
        self.user = None

    def greeting(self):
        return b"+OK " + self.timestamp + b"\r\n"

    def auth_data(self, user, password):
        """The fd 3 block for the checkpassword program."""
        return user + b"\0" + password + b"\0" + self.timestamp + b"\0"

    def handle(self, line):
        verb, arg = pop3io.command(line)
        if verb == b"user":
            if not arg:
                return err(b"syntax error"), None
            self.user = arg
            return OK, None
        if verb == b"pass":
            if self.user is None:
                return err(b"USER first"), None
            if not arg:
                return err(b"syntax error"), None
            return b"", ("login", self.user, arg)
        if verb == b"apop":
            user, space, digest = arg.partition(b" ")
            if not space:
                return err(b"syntax error"), None
            return b"", ("login", user, digest)
        if verb == b"quit":
            return OK, "quit"
        if verb == b"noop":
            return OK, None
        return err(b"authorization first"), None


def run_checkpassword(childargs, data):
    """doanddie: the subprogram with `data` on fd 3 and the client on fd 0/1; its wait status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            if r != 3:
                os.dup2(r, 3)
                os.close(r)
            os.set_inheritable(3, True)  # os.pipe() makes close-on-exec descriptors
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvp(childargs[0], childargs)
        finally:
            os._exit(1)
    os.close(r)
    try:
        os.write(w, data)
    except OSError:
        pass
    os.close(w)
    _, status = os.waitpid(pid, 0)
    return status


def serve(hostname, childargs, fd_in=0, fd_out=1):
    ch = pop3io.Channel(fd_in, fd_out)
    d = Dialogue(hostname.encode("utf-8", "surrogateescape"))
    try:
        ch.send(d.greeting())
        while True:
            reply, action = d.handle(ch.read_line())
            if reply:
                ch.send(reply)
            if action == "quit":
                return 1
            if action:
                _, user, password = action
                status = run_checkpassword(childargs, d.auth_data(user, password))
                reply = exit_reply(status)
                if reply:
                    ch.send(reply)
                return 1
    except Hangup:
        return 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        os.write(1, err(b"usage: popup hostname subprogram"))
        return 1
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return serve(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
