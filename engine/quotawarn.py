"""qmail-quotawarn: drops one quota warning into a mailbox (qmail-quotawarn.c; spec 4.4).

    qmail-quotawarn <maildir/ or mbox file>

Run by qmail-local (engine.maildir.run_quotawarn) at 70 % of the quota and
before an over-quota bounce, as the mailbox owner, with USER, HOST,
RECIPIENT and DTLINE in the environment and the message on stdin (unused).
Does nothing (exit 0) when control/quotawarning is missing or empty, or
when the mailbox already holds a warning: a Maildir file whose name part
after the last dot starts with QUOTA_WARNING, an mbox line
`Qmail-QuotaWarning: USER@HOST`. The warning's headers follow the
%HEADER% rules of engine.mailmagic (From and Subject may be overridden,
To and MIME-Version are forced).
"""

import os
import sys
import time

from engine import conf, control, maildir, newfield
from engine.date822 import date822
from engine.mailmagic import ALLOW, DEFAULT, DENY, FORCE, Field, headermagic
from engine.tcpto import error_str

FATAL = "qmail-quotawarn: fatal: "


class Usage(Exception):
    pass


def fields(me, recipient):
    return [
        Field(b"From:", b"Qmail-QUOTAGUARD <MAILER-DAEMON@" + me + b">\n", ALLOW),
        Field(b"To:", recipient, FORCE),
        Field(b"Subject:", b"QUOTA-WARNING!\n", ALLOW),
        Field(b"MIME-Version:", b"1.0", FORCE),
        Field(b"Content-Type:", b"text/plain; charset=\"iso-8859-1\"\n", ALLOW),
        Field(b"Content-Transfer-Encoding:", b"8bit", ALLOW),
        Field(b"X-", None, ALLOW),
        Field(DEFAULT.encode(), None, DENY),
    ]


def warning_mail(warning, me, env, when):
    qwline = b"Qmail-QuotaWarning: " + env["USER"] + b"@" + env["HOST"] + b"\n"
    header, offset = headermagic(warning, fields(me, env["RECIPIENT"]))
    out = [b"Return-Path: <>\n", env["DTLINE"], qwline,
           b"Received: (directly through the qmail-quotawarning program);\n\t", date822(when).encode(), b"\n",
           newfield.msgid_field(me, when), newfield.date_field(when), header, b"\n", warning[offset:]]
    if warning.endswith(b"\n"):
        out.append(b"\n")
    return b"".join(out), qwline


def maildir_warned(maildir):
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(maildir, sub)):
            if name.startswith("."):
                continue
            dot = name.rfind(".")
            if dot >= 0 and name[dot + 1:].startswith("QUOTA_WARNING"):
                return True
    return False


def write_maildir(maildir, mail, when):
    name = f"{int(when)}.{os.getpid()}.QUOTA_WARNING"
    tmp = os.path.join(maildir, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, mail)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, os.path.join(maildir, "new", f"{name},S={len(mail)}"))
    os.unlink(tmp)


def mbox_warned(path, qwline):
    """check_mailfile(): the mbox already holds our Qmail-QuotaWarning line (any case)."""
    want = qwline.lower()
    try:
        with open(path, "rb") as f:
            return any(line.lower() == want for line in f)
    except FileNotFoundError:
        return False


def write_mbox(path, mail, qwline, when):
    """write_mailfile(): append under an exclusive lock (30 s at most); a failed write is cut off."""
    if mbox_warned(path, qwline):
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        locked = maildir.lock_mbox(fd, Slowlock())  # qmail-quotawarn's own 30 s limit
        pos = os.lseek(fd, 0, os.SEEK_END)
        try:
            os.write(fd, b"From MAILER-DAEMON " + time.asctime(time.gmtime(when)).encode() + b"\n" + mail + b"\n")
            os.fsync(fd)
        except OSError:
            if locked:
                os.ftruncate(fd, pos)
            raise
    finally:
        os.close(fd)


class Slowlock(Exception):
    pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("qmail-quotawarn: usage: qmail-quotawarn mailbox.\n")
        return 100
    home = conf.qmailhome()
    try:
        me = control.read_line("me", None, home)
        warning = control.read_raw("quotawarning", b"", home)
    except control.ControlError as e:
        sys.stderr.write(f"{FATAL}unable to read controls: {e}\n")
        return 111
    if not warning:
        return 0
    if me is None:
        sys.stderr.write(f"{FATAL}Unable to read control/me\n")
        return 111
    env = {k: os.environb.get(k.encode()) for k in ("USER", "HOST", "RECIPIENT", "DTLINE")}
    for name in ("USER", "HOST"):
        if env[name] is None:
            sys.stderr.write(f"{name} environment not present.\n")
            return 100
    for name in ("RECIPIENT", "DTLINE"):
        if env[name] is None:
            sys.stderr.write(f"{FATAL}{name} not present\n")
            return 111
    when = time.time()
    mail, qwline = warning_mail(warning, me.encode(), env, when)
    target = argv[0]
    try:
        if target.endswith("/"):
            if not maildir_warned(target):
                write_maildir(target, mail, when)
        else:
            write_mbox(target, mail, qwline, when)
    except Slowlock:
        sys.stderr.write(f"{FATAL}File has been locked for 30 seconds straight. (#4.3.0)\n")
        return 111
    except OSError as e:
        sys.stderr.write(f"{FATAL}Unable to write {target}: {error_str(e)}\n")
        return 111
    return 0


if __name__ == "__main__":
    sys.exit(main())
