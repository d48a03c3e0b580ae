"""qmail-reply: the auto-responder of deliveryMode `reply` (qmail-reply.c, mailmagic.c; spec 4.6).

    qmail-reply [-f file] [-j junkfile] [maildir/]

The reply text comes from $QMAILREPLYTEXT (or -f file), the message on
stdin, and DTLINE, SENDER, RECIPIENT and HOST from qmail-local. No reply
(exit 0) to junk senders (whole address, local part, @host or a dash
suffix in the built-in list or the -j file), to messages with Mailing-List:,
Precedence: junk/bulk/list, X-RBL: or X-Spam-Status: Yes, and — when a
Maildir path is given — to a sender answered within the last 14 days with
the same text: qmail-reply.db (`QRDBv1:<md5 of the text>` then
`sender:<hex time>` lines) plus tmp/@<sender> stamps, guarded by
qmail-reply.lock. The reply goes out with the null envelope sender, the
headers following the %HEADER% rules (Subject defaults to
`[Auto-Reply] %SUBJECT%`).
"""

import hashlib
import os
import re
import sys
import time

from engine import newfield, qq
from engine.mailmagic import ALLOW, DEFAULT, DENY, FORCE, Field, headermagic
from engine.tcpto import error_str

FATAL = "qmail-reply: fatal: "
WARN = "qmail-reply: warn: "
USAGE = "qmail-reply: usage: qmail-reply [-f mailfile] [-j junkfile] [maildir]"
REPLY_TIMEOUT = 1209600  # 14 days
MAX_SIZE = 128 * 1024
STALE_LOCK = 900
_SUBJECT_MAGIC = re.compile(rb"%SUBJECT%", re.I)  # magicsubject(): matched in any case
JUNK = ("-request", "daemon", "-daemon", "uucp", "mailer-daemon", "mailer", "postmaster", "root", "-relay")


class Usage(Exception):
    """Bad options: qmail-reply's usage line, exit 100."""


class Fatal(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text


def junk_sender(addr, extra=()):
    junk = {j.lower() for j in (*JUNK, *extra)}
    a = addr.lower()
    at = a.rfind("@")
    if at < 0:
        raise Fatal(111, "Bad SENDER address.")
    if a in junk or a[:at] in junk or a[at:] in junk:
        return True
    return any(a[i:at] in junk for i in range(at) if a[i] == "-")


def parse_header(message):
    """(no reply wanted, original subject) from the header lines of the message.

    As parseheader(): the last Subject: line counts (its first line, blanks after the colon
    skipped); a header without an empty line after it is warned about but answered."""
    subject = None
    lines = message.split(b"\n")
    for i, raw in enumerate(lines):
        if raw == b"":
            if i == len(lines) - 1:
                break  # the end of the message, not an empty line
            return False, subject or b"Your Mail"
        line = raw.lower()
        if line.startswith(b"mailing-list:") or line.startswith(b"x-rbl:"):
            return True, subject
        if line.startswith(b"x-spam-status: yes"):
            return True, subject
        if line.startswith(b"precedence:"):
            value = line[11:].lstrip(b" \t")
            if value.startswith((b"junk", b"bulk", b"list")):
                return True, subject
        if line.startswith(b"subject:"):
            value = raw[8:].lstrip(b" \t")
            if value:
                subject = value
    sys.stderr.write(f"{WARN}Premature end of header. The message has no body.\n")
    return False, subject or b"Your Mail"


# --- the 14-day memory ---------------------------------------------------------------

def trylock():
    """1 locked, 0 somebody else holds it, -1 trouble."""
    for _ in range(2):
        try:
            os.close(os.open("qmail-reply.lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return 1
        except FileExistsError:
            try:
                if os.stat("qmail-reply.lock").st_mtime + STALE_LOCK < time.time():
                    os.unlink("qmail-reply.lock")
                    continue
            except OSError:
                return -1
            return 0
        except OSError:
            return -1
    return -1


def read_db(digest):
    """[(sender, time)] of qmail-reply.db when it belongs to this reply text, [] when there is
    none (or it has no QRDBv1 line); None when it was written for another reply text."""
    try:
        with open("qmail-reply.db", "rb") as f:
            lines = [ln for ln in f.read().split(b"\n") if ln]
    except FileNotFoundError:
        return []
    if not lines or not lines[0].lower().startswith(b"qrdbv1:"):
        return []
    if lines[0].lower() != b"qrdbv1:" + digest:
        return None
    out = []
    for line in lines[1:]:
        sender, _, stamp = line.rpartition(b":")
        try:
            out.append((sender, int(stamp, 16)))
        except ValueError:
            continue
    return out


def stamp_recent(sender, now, timeout):
    try:
        return os.stat(b"tmp/@" + sender).st_mtime + timeout >= now
    except OSError:
        return False


def recently_answered(sender, digest, now, timeout):
    """recent_lookup(): the database entry, else the tmp/@sender stamp; a database of another
    reply text means nobody was answered with this one (stamps are not looked at)."""
    entries = read_db(digest)
    if entries is None:
        return False
    for who, when in entries:
        if who.lower() == sender.lower():
            if when + timeout >= now:
                return True
            break
    return stamp_recent(sender, now, timeout)


def touch_stamp(sender):
    try:
        os.close(os.open(b"tmp/@" + sender, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError as e:
        sys.stderr.write(f"{WARN}Unable to create stamp: {error_str(e)}\n")


def update_db(digest, now, timeout):
    """Fold the tmp/@ stamps into qmail-reply.db, drop expired entries, keep it under 128 KiB."""
    entries = {who.lower(): (who, when) for who, when in read_db(digest) or ()}
    stamps = [n for n in os.listdir(b"tmp") if n.startswith(b"@") and b"@" in n[1:]]
    for name in stamps:
        try:
            entries[name[1:].lower()] = (name[1:], int(os.stat(b"tmp/" + name).st_mtime))
        except OSError:
            continue
    lines = [b"%s:%08x\n" % (who, when) for who, when in sorted(entries.values(), key=lambda e: e[1])
             if when + timeout >= now]
    while sum(map(len, lines)) > MAX_SIZE:
        lines.pop(0)
    tmp = f"tmp/qmail-reply.{os.getpid()}.{int(now)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"QRDBv1:" + digest + b"\n" + b"".join(lines))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, "qmail-reply.db")
    for name in stamps:
        try:
            os.unlink(b"tmp/" + name)
        except OSError:
            pass


def recent(sender, maildir, digest, timeout=REPLY_TIMEOUT):
    """qmail-reply's recent(): True when this sender was already answered (and nothing is sent)."""
    try:
        os.chdir(maildir)
    except OSError as e:
        sys.stderr.write(f"{WARN}Unable to switch to {maildir}: {error_str(e)}\n")
        return False
    now = time.time()
    # the reply runs before the first delivery may have made the Maildir: its stamps need tmp/
    os.makedirs("tmp", mode=0o700, exist_ok=True)
    lock = trylock()
    if lock < 0:
        return False
    try:
        if recently_answered(sender, digest, now, timeout):
            return True
        touch_stamp(sender)
        if lock == 1:
            try:
                update_db(digest, now, timeout)
            except OSError as e:
                sys.stderr.write(f"{WARN}Database update failed: {error_str(e)}\n")
        return False
    finally:
        if lock == 1:
            os.unlink("qmail-reply.lock")


# --- the reply ------------------------------------------------------------------------

def reply_message(text, dtline, recipient, sender, host, subject, when):
    fields = [
        Field(b"From:", recipient, ALLOW),
        Field(b"To:", sender, FORCE),
        Field(b"Subject:", b"[Auto-Reply] %SUBJECT%\n", ALLOW),
        Field(b"MIME-Version:", b"1.0", FORCE),
        Field(b"Content-Type:", b"text/plain; charset=utf-8", ALLOW),
        Field(b"Content-Transfer-Encoding:", b"8bit", ALLOW),
        Field(b"X-Mailer:", b"qmail-reply (by qmail-ldap)", FORCE),
        Field(b"Precedence:", b"junk", FORCE),
        Field(b"X-", None, ALLOW),
        Field(DEFAULT.encode(), None, DENY),
    ]
    header, offset = headermagic(text, fields)
    header = b"".join(_SUBJECT_MAGIC.sub(lambda m: subject, line) if line.lower().startswith(b"subject:")
                      else line for line in header.splitlines(keepends=True))
    return (dtline + newfield.msgid_field(host, when) + newfield.date_field(when) + header + b"\n"
            + text[offset:] + b"\n")


def parse_args(argv):
    textfile, junkfile, rest = None, None, list(argv)
    while rest and rest[0].startswith("-") and len(rest[0]) > 1:
        opt = rest.pop(0)
        if opt in ("-f", "-j") and rest:
            value = rest.pop(0)
        elif opt[:2] in ("-f", "-j") and len(opt) > 2:
            value = opt[2:]
        else:
            raise Usage()
        if opt.startswith("-f"):
            textfile = value
        else:
            junkfile = value
    return textfile, junkfile, (rest[0] if rest else None)


def read_file(path, what):
    """The -f text or -j junk file; unreadable -> exit 100 with qmail-reply's text."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Fatal(100, f"Unable to {what} '{path}': {error_str(e)}") from None


def junk_lines(data):
    """control_readfile(): lines without trailing blanks, empty and # lines dropped."""
    lines = (ln.rstrip(" \t\r") for ln in data.decode("utf-8", "surrogateescape").split("\n"))
    return [ln for ln in lines if ln and not ln.startswith("#")]


def read_env(env):
    """get_env(): DTLINE, SENDER, RECIPIENT (must have a local part and an @), HOST, in that order."""
    for name in ("DTLINE", "SENDER", "RECIPIENT"):
        if name not in env:
            raise Fatal(100, f"Environment {name} not present.")
    recipient = env["RECIPIENT"]
    if "@" not in recipient or recipient.startswith("@"):
        raise Fatal(100, "Bad RECIPIENT address.")
    if "HOST" not in env:
        raise Fatal(100, "Environment HOST not present.")
    return env["SENDER"], recipient


def run(argv, env, message):
    textfile, junkfile, maildir = parse_args(argv)
    if textfile:
        text = read_file(textfile, "open")
    elif "QMAILREPLYTEXT" in env:
        text = env["QMAILREPLYTEXT"].encode("utf-8", "surrogateescape")
    else:
        raise Fatal(100, "QMAILREPLYTEXT not present.")
    extra = junk_lines(read_file(junkfile, "read")) if junkfile else []
    sender, recipient = read_env(env)
    if junk_sender(sender, extra):
        return 0
    unwanted, subject = parse_header(message)
    if unwanted:
        return 0
    digest = hashlib.md5(text).hexdigest().encode()
    enc = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731
    if maildir and maildir[:1] in (".", "/") and maildir.endswith("/") and recent(enc(sender), maildir, digest):
        return 0
    mail = reply_message(text, enc(env["DTLINE"]), enc(recipient), enc(sender), enc(env["HOST"]), subject,
                         time.time())
    result = qq.submit(mail, b"", [enc(sender)])
    if result:
        raise Fatal(100 if result[:1] == "D" else 111, f"Unable to send reply message: {result[1:]}.")
    return 0


def main(argv=None):
    try:
        return run(sys.argv[1:] if argv is None else argv, dict(os.environ), sys.stdin.buffer.read())
    except Usage:
        sys.stderr.write(USAGE + "\n")
        return 100
    except Fatal as e:
        sys.stderr.write(FATAL + e.text + "\n")
        return e.code
    except OSError as e:
        sys.stderr.write(f"{FATAL}{e}\n")
        return 111


if __name__ == "__main__":
    sys.exit(main())
