"""qmail-local: one local delivery, following the user's .qmail file or the LDAP entry.

    qmail-local [-nN] -- user homedir local dash ext domain sender aliasempty

The message is on fd 0 (seekable: the queue's mess file). Builds the
qmail-command(8) environment, refuses looping mail (its own Delivered-To
line in the header), chooses the instructions — the qmail-ldap dot modes
(QMAILDOTMODE: ldaponly, ldapwithprog, dotonly, both) with the LDAP part
from QMAILMODE / QMAILFORWARDS / QMAILDELIVERYPROGRAM, and the stock
.qmail<dash><ext> / -default search — then runs them: Maildir and mbox
lines through engine.maildir, `|program` through /bin/sh, forwards as one
new message through the queue. Exit 0, 100 (permanent) or 111 (temporary)
with qmail-local's texts; prints `did F+W+P` and `qp N`.

The delivery pool runs `deliver()` in-process (after taking the user's
uid), the program entry `main()` is for tools and tests that call
qmail-local by name.
"""

import errno
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field

from engine import conf, maildir, qq
from engine.mailbox import TEMP_ERRNOS, MailboxError
from engine.quote import quote2
from engine.tcpto import error_str

PERMANENT_PROGRAM_EXITS = {100, 64, 65, 70, 76, 77, 78, 112}
DOT_STOCK, DOT_LDAP, DOT_BOTH = "dot", "ldap", "both"


class LocalFailure(Exception):
    """A delivery that stops with qmail-local's exit code (100 or 111) and text."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def hard(text):
    return LocalFailure(100, text)


def soft(text):
    return LocalFailure(111, text)


@dataclass
class Recipient:
    user: str
    home: str
    local: str
    dash: str
    ext: str
    host: str
    sender: str
    aliasempty: str


@dataclass
class Instructions:
    lines: list                    # text lines, in order
    forward_only: bool = False     # .qmail with the u+x bit (or +list)
    forward_only_ldap: bool = False  # deliveryMode forwardonly
    no_local: bool = False
    no_forward: bool = False
    no_program: bool = False
    newsender: str = ""
    default: str | None = None     # $DEFAULT when a -default file matched
    replies: list = field(default_factory=list)  # qmail-reply commands run while parsing
    stop_after_first: bool = False  # a qmail-reply exited 99: only the first line is run (flag99)


# --- the environment (qmail-command(8)) -------------------------------------------------

def _no_newlines(text):
    return text.replace("\n", "_")


def dtline(r):
    return f"Delivered-To: {_no_newlines(r.local + '@' + r.host)}\n"


def rpline(r):
    sender = quote2(r.sender.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
    return f"Return-Path: <{_no_newlines(sender)}>\n"


def ufline(r, when=None):
    sender = r.sender.translate(str.maketrans(" \t\n", "---")) if r.sender else "MAILER-DAEMON"
    return f"From {sender} {time.asctime(time.gmtime(time.time() if when is None else when))}\n"


def _ext_parts(ext):
    """EXT, EXT2, EXT3, EXT4: each drops one more dash-separated field."""
    parts, x = [], ext
    for _ in range(4):
        parts.append(x)
        i = x.find("-")
        x = x[i + 1:] if i >= 0 else ""
    return parts


def _host_parts(host):
    """HOST2..HOST4: the host cut before its last, second-last, third-last dot (unchanged when none)."""
    parts, end = [], len(host)
    for _ in range(3):
        dot = host.rfind(".", 0, end)
        if dot >= 0:
            end = dot
        parts.append(host[:end])
    return parts


def command_env(r, base=None):
    """The environment qmail-local gives programs (DEFAULT and NEWSENDER are added later)."""
    env = dict(os.environ if base is None else base)
    ext = _ext_parts(r.ext)
    host = _host_parts(r.host)
    env.update(HOST=r.host, HOME=r.home, USER=r.user, LOCAL=r.local,
               RECIPIENT=f"{r.local}@{r.host}", DTLINE=dtline(r), SENDER=r.sender,
               RPLINE=rpline(r), UFLINE=ufline(r),
               EXT=ext[0], EXT2=ext[1], EXT3=ext[2], EXT4=ext[3],
               HOST2=host[0], HOST3=host[1], HOST4=host[2])
    return env


# --- checks ---------------------------------------------------------------------------

def check_home(doit=True, warn=None):
    """checkhome(): the current directory (HOME) must not be writable by others nor sticky
    (with -n a sticky home is only a warning)."""
    try:
        st = os.stat(".")
    except OSError as e:
        raise soft(f"Unable to stat home directory: {error_str(e)}. (#4.3.0)")
    if st.st_mode & conf.PATTERN:
        raise soft("Uh-oh: home directory is writable. (#4.7.0)")
    if st.st_mode & stat.S_ISVTX:
        if doit:
            raise soft("Home directory is sticky: user is editing his .qmail file. (#4.2.1)")
        if warn:
            warn("Warning: home directory is sticky.")


def check_loop(header_lines, dt):
    """bouncexf(): our own Delivered-To line anywhere in the header means a loop."""
    for line in header_lines:
        if line == dt:
            raise hard("This message is looping: it already has my Delivered-To line. (#5.4.6)")


def header_lines(fd):
    """The message's header lines (each with its LF) read from the start of fd."""
    os.lseek(fd, 0, os.SEEK_SET)
    lines = []
    with os.fdopen(os.dup(fd), "rb") as f:
        for raw in f:
            if raw in (b"\n", b"\r\n") or not raw.endswith(b"\n"):
                break
            lines.append(raw.decode("utf-8", "surrogateescape"))
    os.lseek(fd, 0, os.SEEK_SET)
    return lines


# --- .qmail search --------------------------------------------------------------------

def safe_ext(ext):
    return ext.lower().replace(".", ":")


def _open_qmail(name):
    """qmeexists(): (fd, forward_only) of a usable .qmail file, or None; writable ones are refused.

    A temporary system error, EPERM or EACCES defers; any other error (ENOENT, ENOTDIR,
    ELOOP, ...) means there is no such file."""
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as e:
        if e.errno in TEMP_ERRNOS or e.errno in (errno.EPERM, errno.EACCES):
            raise soft(f"Unable to open {name}: {error_str(e)}. (#4.3.0)") from None
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    if st.st_mode & conf.PATTERN:
        os.close(fd)
        raise soft("Uh-oh: .qmail file is writable. (#4.7.0)")
    return fd, bool(st.st_mode & stat.S_IXUSR)


def qmail_search(dash, ext):
    """qmesearch(): (text, forward_only, DEFAULT) of the matching .qmail file, or None.

    Order for dash "-" and ext "a-b-c": .qmail-a-b-c, .qmail-a-b-default,
    .qmail-a-default, .qmail-default.
    """
    sext = safe_ext(ext)
    candidates = [(f".qmail{dash}{sext}", ext[len(sext) - 7:] if sext.endswith("default") else None)]
    for i in range(len(sext), -1, -1):
        if i == 0 or sext[i - 1] == "-":
            candidates.append((f".qmail{dash}{sext[:i]}default", ext[i:]))
    for name, default in candidates:
        found = _open_qmail(name)
        if found:
            fd, forward_only = found
            with os.fdopen(fd, "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
            return text, forward_only, default
    return None


def _exists(name):
    """qmeox(): stat() finds the file; only a temporary system error defers."""
    try:
        os.stat(name)
        return True
    except OSError as e:
        if e.errno in TEMP_ERRNOS:
            raise soft(f"Unable to open {name}: {error_str(e)}. (#4.3.0)") from None
        return False


def owner_sender(r):
    """NEWSENDER for the dot part: `local-owner@host` (or its VERP form) when .qmail-ext-owner exists."""
    if r.sender in ("", "#@[]"):
        return r.sender
    base = f".qmail{r.dash}{safe_ext(r.ext)}"
    if not _exists(base + "-owner"):
        return r.sender
    if _exists(base + "-owner-default"):
        return f"{r.local}-owner-@{r.host}-@[]"
    return f"{r.local}-owner@{r.host}"


# --- the instruction list --------------------------------------------------------------

def dot_mode(env, say=None):
    """QMAILDOTMODE -> (mode, LDAP programs allowed)."""
    value = env.get("QMAILDOTMODE")
    if value is None:
        return DOT_STOCK, False
    v = value.lower()
    known = {"ldaponly": (DOT_LDAP, False), "ldapwithprog": (DOT_LDAP, True),
             "dotonly": (DOT_STOCK, False), "both": (DOT_BOTH, True)}
    if v not in known:
        raise hard(f"Error: Non valid dot-mode found: {value}. (#5.3.5)")
    if say:
        say(f"DOTMODE_{v.upper()} ")
    return known[v]


def split_escaped(value):
    """QMAILMODE / QMAILFORWARDS / QMAILDELIVERYPROGRAM: `:`-joined values, `\\:` a literal colon."""
    items, cur, i = [], [], 0
    while i < len(value):
        if value[i] == "\\" and value[i + 1:i + 2] == ":":
            cur.append(":")
            i += 2
            continue
        if value[i] == ":":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(value[i])
        i += 1
    items.append("".join(cur))
    return items


_MODE_NOTES = {"forwardonly": "force forward only ", "nolocal": "no file delivery ",
               "nombox": "no file delivery ", "noforward": "no mail forwarding ",
               "noprogram": "no program delivery "}


def ldap_modes(r, env, ins, warn, reply=None, say=None):
    """Parse QMAILMODE. `reply` runs at once, while parsing, as qmail-local does: a failing
    qmail-reply stops the delivery before any .qmail file is looked at."""
    for mode in split_escaped(env["QMAILMODE"]) if "QMAILMODE" in env else []:
        m = mode.lower()
        if say and m in _MODE_NOTES:
            say(_MODE_NOTES[m])
        if m == "forwardonly":
            ins.forward_only_ldap = ins.no_local = ins.no_program = True
        elif m == "reply":
            if not r.sender:
                continue
            if "QMAILREPLYTEXT" not in env:
                warn("Warning: Reply mode is on but there is no reply text.")
                continue
            arg = r.aliasempty if r.aliasempty[:1] in (".", "/") else ""
            ins.replies.append("qmail-reply " + arg)
            if say:
                say("reply to " + r.sender)
                say("replytext " + env["QMAILREPLYTEXT"])
            elif reply and reply("qmail-reply " + arg):
                ins.stop_after_first = True  # qmail-reply exited 99: qmail-local's flag99
        elif m in ("nolocal", "nombox"):
            ins.no_local = True
        elif m == "noforward":
            ins.no_forward = True
        elif m == "noprogram":
            ins.no_program = True
        elif m not in ("local", "forward", "program", "noreply"):
            warn(f"Warning: undefined mail delivery mode: {mode} (ignored).")


def ldap_part(r, env, allow_programs, ins, warn, reply=None, say=None):
    """The LDAP lines in qmail-ldap's order: programs, forwards, the default delivery, then `#`.

    Built as one text and cut into lines like a .qmail file, as qmail-local does, so a
    multi-line default delivery gives several instructions and trailing blanks are cut."""
    ins.newsender = r.sender
    ldap_modes(r, env, ins, warn, reply, say)
    cmds = []
    if allow_programs and not ins.no_program and "QMAILDELIVERYPROGRAM" in env:
        cmds += ["|" + p + "\n" for p in split_escaped(env["QMAILDELIVERYPROGRAM"])]
    if not ins.no_forward and "QMAILFORWARDS" in env:
        cmds += ["&" + a + "\n" for a in split_escaped(env["QMAILFORWARDS"])]
    if not ins.no_local:
        cmds.append(r.aliasempty + "\n")
    cmds.append("#\n")
    ins.lines += _text_lines("".join(cmds))


def instructions(r, env, warn=lambda text: None, reply=None, say=None):
    """The lines qmail-local will execute for this recipient (cwd = HOME).

    reply(command) runs a qmail-reply command at once (True when it exited 99); say() gets
    qmail-local -n's description lines."""
    mode, allow_programs = dot_mode(env, say)
    ins = Instructions(lines=[])
    if mode in (DOT_LDAP, DOT_BOTH):
        ldap_part(r, env, allow_programs, ins, warn, reply, say)
    if mode in (DOT_STOCK, DOT_BOTH):
        found = qmail_search(r.dash, r.ext)
        if found is None and r.dash and mode == DOT_STOCK:
            raise hard("Sorry, no mailbox here by that name. (#5.1.1)")
        ins.newsender = owner_sender(r)
        if found:
            text, ins.forward_only, ins.default = found
            ins.lines += _text_lines(text)
    if not ins.lines:
        ins.lines = _text_lines(r.aliasempty)
        ins.forward_only = False
    return ins


def _text_lines(text):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip(" \t") for line in lines]


# --- execution -------------------------------------------------------------------------

class Counts:
    def __init__(self):
        self.files = self.forwards = self.programs = 0
        self.qp = 0

    def report(self):
        text = f"did {self.files}+{self.forwards}+{self.programs}\n"
        return text + (f"qp {self.qp}\n" if self.qp else "")


def run_program(command, fd, env, home, out):
    """mailprogram(): /bin/sh -c command with the message on stdin; its stdout and stderr go into
    the delivery report (`out`), as they go to qmail-lspawn's pipe. True when it exited 99."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        proc = subprocess.run(["/bin/sh", "-c", command], stdin=fd, env=env, cwd=home,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise soft(f"Unable to fork: {error_str(e)}. (#4.3.0)")
    out.append(proc.stdout.decode("utf-8", "surrogateescape"))
    code = proc.returncode
    if code < 0:
        raise soft("Aack, child crashed. (#4.3.0)")
    if code in PERMANENT_PROGRAM_EXITS:
        raise LocalFailure(100, "")
    if code == 99:
        return True
    if code != 0:
        raise LocalFailure(111, "")
    return False


def forward(recipients, fd, dt, newsender, env):
    """mailforward(): one new message to every forward, with our Delivered-To line."""
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as f:
        body = f.read()
    head = dt.encode("utf-8", "surrogateescape")
    if len(recipients) > 1:
        head += b"Precedence: bulk\n"
    try:
        with qq.Queue(env) as q:
            q.put(head)
            q.put(body)
            q.sender(newsender.encode("utf-8", "surrogateescape"))
            for a in recipients:
                q.to(a.encode("utf-8", "surrogateescape"))
            text, qp = q.close(), q.qp
    except OSError as e:
        raise soft(f"Unable to fork: {error_str(e)}. (#4.3.0)") from None
    if text:
        raise LocalFailure(100 if text[:1] == "D" else 111, f"Unable to forward message: {text[1:]}.")
    return qp


def file_delivery(line, fd, r, env):
    """A Maildir (`.../`) or mbox line, through engine.maildir; its errors become qmail-local's."""
    try:
        maildir.deliver_line(line, fd, rpline(r), dtline(r), ufline(r), env)
    except MailboxError as e:
        raise LocalFailure(e.code, e.text) from None


def execute(r, ins, fd, env, out, doit=True, say=None):
    """Run the instruction list; returns the Counts. Raises LocalFailure on the first failure.

    The qmail-reply commands already ran while the list was built; they count as forwards.
    Program output is collected in `out` (the delivery report); say() gets -n's lines."""
    counts = Counts()
    counts.forwards += len(ins.replies)
    env = dict(env, NEWSENDER=ins.newsender)
    if ins.default is not None:
        env["DEFAULT"] = ins.default
    dt = dtline(r)
    forwards = []
    flag99 = ins.stop_after_first  # after a program exits 99 no further line is run
    for index, line in enumerate(ins.lines):
        if index and flag99:
            break
        first = line[:1]
        if not line:
            if index == 0:
                raise soft("Uh-oh: first line of .qmail file is blank. (#4.2.1)")
            continue
        if first == "#":
            continue
        if first in (".", "/"):
            if ins.no_local:
                if say:
                    say("disabled file delivery " + line)
                continue
            counts.files += 1
            if ins.forward_only:
                raise soft("Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)")
            if ins.forward_only_ldap:
                raise soft("Uh-oh: user has file delivery but is not allowed to. (#4.7.0)")
            if doit:
                file_delivery(line, fd, r, env)
            elif say:
                say(("maildir " if line.endswith("/") else "mbox ") + line)
        elif first == "|":
            if ins.no_program:
                if say:
                    say("disabled program " + line)
                continue
            counts.programs += 1
            if ins.forward_only:
                raise soft("Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)")
            if ins.forward_only_ldap:
                raise soft("Uh-oh: user has prog delivery but is not allowed to. (#4.7.0)")
            if doit:
                flag99 = run_program(line[1:], fd, env, r.home, out) or flag99
            elif say:
                say("program " + line[1:])
        elif first == "+":
            if line[1:] == "list":
                ins.forward_only = True
        else:
            counts.forwards += 1
            address = line[1:] if first == "&" else line
            if ins.no_forward:
                if say:
                    say("disabled forward " + address)
                continue
            if doit:
                forwards.append(address)
            elif say:
                say("forward " + address)
    if forwards:
        counts.qp = forward(forwards, fd, dt, ins.newsender, env)
    return counts


def deliver(r, fd, doit=True, env=None, warn=None, say=None):
    """One delivery for recipient r with the message on fd: (exit code, output text).

    Warnings, program output and failure texts go into the output in the order they happen,
    as qmail-local's stdout and stderr reach qmail-lspawn through one pipe. say() gets the
    description lines of -n (doit False) and is not used when delivering."""
    out = []
    warn = warn or (lambda text: out.append(text + "\n"))
    say = None if doit else say
    try:
        if not r.home.startswith("/"):
            raise LocalFailure(100, "qmail-local: usage: qmail-local [ -nN ] user homedir local dash "
                               "ext domain sender aliasempty")
        try:
            os.chdir(r.home)
        except OSError as e:
            raise soft(f"Unable to switch to {r.home}: {error_str(e)}. (#4.3.0)")
        check_home(doit, warn)
        cenv = command_env(r, env)
        if doit:
            check_loop(header_lines(fd), dtline(r))
        if cenv.get("QLDAPGROUP") is not None:
            counts = Counts()
            if doit:
                counts.programs += 1
                arg = r.aliasempty if r.aliasempty[:1] in (".", "/") else ""
                run_program("qmail-group " + arg, fd, cenv, r.home, out)
            elif say:
                say("group delivery")
            return 0, "".join(out) + counts.report()
        if say:
            quota = cenv.get("MAILDIRQUOTA")
            say(f"quota defined as: {quota}" if quota else "unlimited quota")
        reply_env = dict(cenv, NEWSENDER=r.sender)

        def reply(command):
            return run_program(command, fd, reply_env, r.home, out)

        ins = instructions(r, cenv, warn, reply if doit else None, say)
        counts = execute(r, ins, fd, cenv, out, doit, say)
        return 0, "".join(out) + counts.report()
    except LocalFailure as f:
        return f.code, "".join(out) + (f.text + "\n" if f.text else "")


def parse_argv(argv):
    doit = True
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "--":
        for flag in args.pop(0)[1:]:
            if flag not in "nN":
                return None
            doit = flag == "N"
    if args and args[0] == "--":
        args.pop(0)
    if len(args) != 8:
        return None
    return doit, Recipient(*args)


def main(argv=None):
    parsed = parse_argv(sys.argv[1:] if argv is None else argv)
    if parsed is None:
        sys.stderr.write("qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain "
                         "sender aliasempty\n")
        return 100
    doit, r = parsed
    code, text = deliver(r, 0, doit, say=lambda s: sys.stdout.write(s + "\n"))
    sys.stdout.write(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
