"""qmail-pop3d: the POP3 transaction state on one Maildir (qmail-pop3d.c, maildir.c; spec 5.6, 4.3).

    qmail-pop3d maildir

Run by auth_pop after the login, as the mailbox owner, with the client on
fd 0/1. $MAILDIR (set by auth_pop when the entry has homeDirectory and
mailMessageStore) replaces the argument; a Maildir it cannot enter answers
`-ERR this user has no $HOME/Maildir`. The list is new/ and cur/ ordered
by delivery time (the number a Maildir name starts with, else the mtime),
leaving out files of the current second as qmail does; tmp/ files not
accessed for 36 hours are removed first. Sizes come from `,S=<n>` in the
name, else from stat (LF-based, as qmail). Commands: STAT LIST UIDL RETR
TOP DELE RSET LAST NOOP QUIT, with qmail-pop3d's exact replies; RETR and
TOP answer `+OK <size> octets` (MAKE_NETSCAPE_WORK) and send lines with
CRLF, a leading '.' doubled, then an empty line and '.'. QUIT unlinks the
deleted messages, appends `-<size> -1` per message to maildirsize
(engine.quota), and moves the rest of new/ to cur/ with `:2,`.

POP3_LOGLEVEL 2 or more logs `acct: pid <pid>: <host>:<ip>:<info> <user>
login` and `... logout <n> bytes transferred` on stderr; 3 adds session
errors, 4 every command.
"""

import os
import re
import sys
import time

from engine import pop3io, quota
from engine.pop3io import Hangup

TMP_MAX_AGE = 129600  # maildir_clean: 36 hours
SIZE_IN_NAME = re.compile(rb",S=([0-9]*)")
LEADING_NUMBER = re.compile(rb"([0-9]+)\.")

OK = b"+OK \r\n"
ERR_NOMAILDIR = b"this user has no $HOME/Maildir"
ERR_SCAN = b"unable to scan $HOME/Maildir"
ERR_SYNTAX = b"syntax error"
ERR_UNIMPL = b"unimplemented"
ERR_DELETED = b"already deleted"
ERR_NOZERO = b"messages are counted from 1"
ERR_TOOBIG = b"not that many messages"
ERR_NOSUCH = b"unable to open that message"
ERR_NOUNLINK = b"unable to unlink all deleted messages"


class Message:
    __slots__ = ("fn", "size", "deleted")

    def __init__(self, fn, size):
        self.fn, self.size, self.deleted = fn, size, False

    @property
    def uid(self):
        """The UIDL: the name after new/ or cur/ up to the ':'."""
        return self.fn[4:].split(b":", 1)[0]


def message_size(fn):
    """getsize: `,S=<n>` anywhere in the name, else the file's size (0 when it cannot be read)."""
    m = SIZE_IN_NAME.search(fn)
    if m:
        return int(m.group(1) or b"0")
    try:
        return os.stat(fn).st_size
    except OSError:
        return 0


def delivery_time(fn):
    """gettime: the number a Maildir name starts with when it is non-zero and followed by '.', else the
    mtime; None when the file is gone."""
    m = LEADING_NUMBER.match(fn.rpartition(b"/")[2])
    if m and int(m.group(1)):
        return int(m.group(1))
    try:
        return int(os.stat(fn).st_mtime)
    except OSError:
        return None


def clean_tmp(now):
    """maildir_clean: remove tmp/ files not accessed for 36 hours."""
    try:
        names = os.listdir(b"tmp")
    except OSError:
        return
    for name in names:
        if name.startswith(b"."):
            continue
        path = b"tmp/" + name
        try:
            if now > os.stat(path).st_atime + TMP_MAX_AGE:
                os.unlink(path)
        except OSError:
            pass


def scan(now=None):
    """maildir_scan over new/ and cur/: Messages ordered by delivery time; OSError when a dir is unreadable."""
    now = int(time.time()) if now is None else now
    found = []
    for sub in (b"new", b"cur"):
        for name in os.listdir(sub):
            if name.startswith(b"."):
                continue
            fn = sub + b"/" + name
            t = delivery_time(fn)
            if t is not None and t < now:  # a message of this second could be followed by an older one
                found.append((t, fn))
    found.sort(key=lambda item: item[0])
    return [Message(fn, message_size(fn)) for _, fn in found]


class Session:
    def __init__(self, channel, messages, env, maildirquota=None):
        self.ch = channel
        self.messages = messages
        self.last = 0
        self.loglevel = _int(env.get("POP3_LOGLEVEL", ""))
        self.pidinfo = " pid %d: %s:%s:%s %s " % (
            os.getpid(), env.get("TCPREMOTEHOST", "unknown"), env.get("TCPREMOTEIP", "unknown"),
            env.get("TCPREMOTEINFO", ""), env.get("USER", "unknown"))
        self.bytes = 0
        self.maildirquota = maildirquota

    # -- logging (qmail-pop3d.c logit) --
    def log(self, level, text):
        if level <= self.loglevel:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def log_login(self):
        self.log(2, f"acct:{self.pidinfo}login")

    def log_quit(self):
        self.log(2, f"acct:{self.pidinfo}logout {self.bytes} bytes transferred")

    def err(self, text, level=3):
        self.ch.send(b"-ERR " + text + b"\r\n")
        self.log(level, text.decode())

    def okay(self):
        self.ch.send(OK)

    # -- the dialogue --
    def run(self):
        """Serve until QUIT or hangup; the exit code (0, as qmail-pop3d's die())."""
        self.log_login()
        try:
            self.okay()
            while True:
                verb, arg = pop3io.command(self.ch.read_line())
                handler = COMMANDS.get(verb)
                if handler is None:
                    self.err(ERR_UNIMPL)
                    continue
                if handler(self, arg) == "quit":
                    break
        except Hangup:
            pass
        self.log_quit()
        return 0

    def msgno(self, arg):
        """The index for a message number argument, or None after the error reply."""
        m = re.match(rb"[0-9]+", arg)
        if not m:
            self.err(ERR_SYNTAX)
            return None
        n = int(m.group(0))
        if n == 0:
            self.err(ERR_NOZERO)
            return None
        if n > len(self.messages):
            self.err(ERR_TOOBIG)
            return None
        if self.messages[n - 1].deleted:
            self.err(ERR_DELETED)
            return None
        return n - 1

    def cmd_noop(self, arg):
        self.okay()

    def cmd_stat(self, arg):
        self.log(4, "comm: stat")
        live = [m for m in self.messages if not m.deleted]
        self.ch.send(b"+OK %d %d\r\n" % (len(live), sum(m.size for m in live)))

    def cmd_rset(self, arg):
        self.log(4, "comm: rset")
        for m in self.messages:
            m.deleted = False
        self.last = 0
        self.okay()

    def cmd_last(self, arg):
        self.log(4, "comm: last")
        self.ch.send(b"+OK %d\r\n" % self.last)

    def cmd_dele(self, arg):
        self.log(4, "comm: dele: " + arg.decode("latin-1"))
        i = self.msgno(arg)
        if i is None:
            return
        self.messages[i].deleted = True
        self.last = max(self.last, i + 1)
        self.okay()

    def _listing(self, arg, uidl):
        def line(i):
            m = self.messages[i]
            return b"%d %s\r\n" % (i + 1, m.uid if uidl else b"%d" % m.size)
        if arg:
            i = self.msgno(arg)
            if i is None:
                return
            self.ch.put(b"+OK " + line(i))
        else:
            self.ch.put(OK)
            for i, m in enumerate(self.messages):
                if not m.deleted:
                    self.ch.put(line(i))
            self.ch.put(b".\r\n")
        self.ch.flush()

    def cmd_list(self, arg):
        self.log(4, "comm: list: " + arg.decode("latin-1"))
        self._listing(arg, uidl=False)

    def cmd_uidl(self, arg):
        self.log(4, "comm: uidl: " + arg.decode("latin-1"))
        self._listing(arg, uidl=True)

    def cmd_top(self, arg):
        """RETR n and TOP n m (RETR with a second number acts as TOP, as in qmail-pop3d)."""
        self.log(4, "comm: retr/top: " + arg.decode("latin-1"))
        i = self.msgno(arg)
        if i is None:
            return
        m = re.match(rb"[0-9]* *([0-9]+)?", arg)
        limit = int(m.group(1)) + 1 if m and m.group(1) else 0
        try:
            f = open(self.messages[i].fn, "rb")
        except OSError:
            self.err(ERR_NOSUCH)
            return
        with f:
            self.ch.send(b"+OK %d octets\r\n" % self.messages[i].size)
            self.blast(f, limit)

    def blast(self, f, limit):
        """The message with CRLF line ends and dot-stuffing; `limit` = body lines + 1 (0 = all)."""
        in_headers = True
        for raw in f:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if limit and not in_headers:
                limit -= 1
                if not limit:
                    break
            if not line:
                in_headers = False
            elif line.startswith(b"."):
                self.ch.put(b".")
            self.ch.put(line + b"\r\n")
            self.bytes += len(line) + 2
            if len(self.ch._out) > 65536:
                self.ch.flush()
        self.ch.send(b"\r\n.\r\n")

    def cmd_quit(self, arg):
        self.log(4, "comm: quit")
        deleted = [m for m in self.messages if m.deleted]
        if deleted:
            self.update_quota()
        for m in self.messages:
            if m.deleted:
                try:
                    os.unlink(m.fn)
                except OSError:
                    self.err(ERR_NOUNLINK)
                    continue
                quota.remove(".", m.size, 1)
            elif m.fn.startswith(b"new/"):
                try:
                    os.rename(m.fn, b"cur/" + m.fn[4:] + b":2,")
                except OSError:
                    pass  # qmail-pop3d: "if it fails, bummer"
        self.okay()
        return "quit"

    def update_quota(self):
        """quota_calc before the deltas: a missing or outdated maildirsize is rebuilt first."""
        q = quota.parse_quota(self.maildirquota or "")
        for attempt in (1, 2):
            try:
                if quota.calc(".", q) is not None:
                    return
            except Exception as e:  # noqa: BLE001 - qmail-pop3d ignores quota trouble at QUIT
                self.log(1, f"warning: maildirsize: {e}")
                return
            if attempt == 1:
                time.sleep(quota.RACE_RETRY_SECONDS)


COMMANDS = {b"quit": Session.cmd_quit, b"stat": Session.cmd_stat, b"list": Session.cmd_list,
            b"uidl": Session.cmd_uidl, b"dele": Session.cmd_dele, b"retr": Session.cmd_top,
            b"rset": Session.cmd_rset, b"last": Session.cmd_last, b"top": Session.cmd_top,
            b"noop": Session.cmd_noop}


def _int(text):
    m = re.match(r"\s*([0-9]+)", text or "")
    return int(m.group(1)) if m else 0


def serve(fd_in, fd_out, maildir, env, initial=b""):
    """qmail-pop3d on fds: chdir to the Maildir ($MAILDIR first), list it, run the dialogue; exit code."""
    ch = pop3io.Channel(fd_in, fd_out, initial)
    maildir = env.get("MAILDIR") or maildir
    try:
        if not maildir:
            raise OSError("no maildir")
        os.chdir(maildir)
    except OSError:
        try:
            ch.send(b"-ERR " + ERR_NOMAILDIR + b"\r\n")
        except Hangup:
            pass
        return 0
    clean_tmp(time.time())
    try:
        messages = scan()
    except OSError:
        try:
            ch.send(b"-ERR " + ERR_SCAN + b"\r\n")
        except Hangup:
            pass
        return 0
    return Session(ch, messages, env, env.get("MAILDIRQUOTA")).run()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return serve(0, 1, argv[0] if argv else None, os.environ)


if __name__ == "__main__":
    sys.exit(main())
