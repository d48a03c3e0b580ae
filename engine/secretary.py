"""qmail-secretary: sender confirmation and moderation for mail groups (qmail-secretary.c; spec 4.9).

    qmail-secretary [-Z] [-c | -C] [-m addr]... [-M file] maildir

Run by qmail-group (or a .qmail line) with the message on fd 0 and
qmail-command's environment. The list is LOCAL without its EXT (and HOST);
the rest of the address after the list name is `-<action>-<hash>`:

  * no action, a new post: held in <maildir>/new/<hash> (-c: the sender must
    confirm; a request goes out from <list>-confirm-<hash>@host, bounces to
    -reject-<hash>) or <maildir>/cur/<hash> (-C: the moderators must approve;
    a request from <list>-approve-<hash>, bounces to -bounce-<hash>);
  * confirm-<hash>: the sender confirmed; released, or passed on to the
    moderators when there are any;
  * approve-<hash>: a moderator approved; released;
  * reject-<hash> / bounce-<hash>: a request bounced (the held message is
    dropped / left to expire); moderators: refused.

"Released" means `K<path of the held message>\\0` on stdout: qmail-group
then sends that message to the members and removes it. Held messages are
named by the SHA1 hex of time, pid, random bytes and the message; anything
older than 7 days is removed on every run. Requests use the texts in
$CONFIRMMESS / $APPROVEMESS (the group's confirmtext / moderatortext) or the
built-in ones, with %LIST% and the %HEADER% rules; Precedence: junk is forced.
The senders <>, #@[] and addresses without a host, messages with
Mailing-List: or Precedence: junk/bulk/list, and our own Delivered-To line
are refused.

    qmail-secretary -z ezmlmdir [-c | -C] [-m addr]... [-M file] maildir ezmlm-send ...

ezmlm mode: the list's inlocal, inhost, outlocal, outhost and mailinglist
files and text/confirm, text/approve come from ezmlmdir (the working
directory from then on); requests carry a Mailing-List: header, and a
released message is piped into the given program (SENDER from its
Return-Path) instead of being handed back.
"""

import hashlib
import os
import re
import struct
import subprocess
import sys
import time

from engine import newfield, qq
from engine.durable import fsync_path
from engine.mailbox import MailboxError
from engine.maildir import make_maildir
from engine.mailmagic import ALLOW, DEFAULT, DENY, FORCE, Field, headermagic
from engine.quote import quote2

FATAL = "qmail-secretary: fatal: "
WARN = "qmail-secretary: warn: "
EXPIRY = 604800  # held messages and stray files are removed after 7 days
CONFIRM_ATTACH, APPROVE_ATTACH = 10 * 1024, 128 * 1024
HASH = re.compile(r"[0-9a-fA-F]{40}")
USAGE = ("qmail-secretary: usage:\n    qmail-secretary [ -Z ] [ -c | -C ] [[ -m addr ] ... ] "
         "[ -M file ] maildir\n    qmail-secretary -z ezmlmdir [ -c | -C ] [[ -m addr ] ... ] "
         "[ -M file ]\n                    maildir [ ezmlm-send ... ]\n")

CONFIRM_TEXT = b"""Hi,

I'm mailgroup secretary, an automated mail-handling program.
I received a message from you addressed to %LIST%
for which I'm responsible. The top of your message is shown below.

I'm here to protect the address %LIST% from
all anonymous messages and bulk mail messages.

If you reply to this notice, you are acknowledging that your message
identifies you and is not part of a bulk mailing.
I won't look at the contents of your reply. A simple OK is fine.

If you do not reply to this notice, your message will be dropped
and the recipient will not receive it.

I realize that this confirmation process is inconvenient. I'm sorry for
the hassle.

Sincerely,
The mailgroup secretary program

"""

APPROVE_TEXT = b"""Hi,

I'm mailgroup secretary, an automated mail-handling program.
I need an approval that the attached message is allowed to be sent
to the %LIST% mailinglist.

To approve a message you must reply to this message. I won't look at
the contents of your reply. A simple OK is fine.

To deny a message no action must be taken. The message will be rejected
automaticaliy after a few days.

Sincerely,
The mailgroup secretary program

"""


class Fatal(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text


def enc(s):
    return s.encode("utf-8", "surrogateescape")


class Secretary:
    """One run: the list's addresses, the texts, the moderators and the held-message store.

    In qmail-group mode the list is LOCAL without EXT at HOST (in = out); in ezmlm mode
    the addresses and texts come from the list directory (`ezmlm`, the cwd by then)."""

    def __init__(self, env, maildir, confirm, moderators, ezmlm=None):
        for name in ("SENDER", "LOCAL", "HOST"):
            if name not in env:
                raise Fatal(100, f"{FATAL}{name} not set")
        self.sender, self.local, self.host = env["SENDER"], env["LOCAL"], env["HOST"]
        self.maildir, self.confirm, self.moderators, self.ezmlm = maildir, confirm, moderators, ezmlm
        if ezmlm is None:
            ext = env.get("EXT", "")
            self.inlocal = self.outlocal = self.local[:len(self.local) - len(ext) - 1] if ext else self.local
            self.inhost = self.outhost = self.host
            self.mailinglist = f"{self.outlocal}@{self.outhost}"
            self.approve_text = enc(env["APPROVEMESS"]) if "APPROVEMESS" in env else APPROVE_TEXT
            self.confirm_text = enc(env["CONFIRMMESS"]) if "CONFIRMMESS" in env else CONFIRM_TEXT
        else:
            self.mailinglist, self.inhost, self.inlocal, self.outhost, self.outlocal = (
                ezmlm_line(ezmlm, name) for name in ("mailinglist", "inhost", "inlocal", "outhost", "outlocal"))
            self.approve_text = ezmlm_text(ezmlm, "text/approve", APPROVE_TEXT)
            self.confirm_text = ezmlm_text(ezmlm, "text/confirm", CONFIRM_TEXT)
        self.rpline = b"Return-Path: <" + quote2(enc(self.sender)).replace(b"\n", b"_") + b">\n"
        self.dtline = enc(f"Delivered-To: secretary for {self.outlocal}@{self.outhost}".replace("\n", "_")) + b"\n"

    def reply_address(self, hashid, action):
        return f"{self.outlocal}-{action}-{hashid}@{self.outhost}"

    def action(self):
        """extractrcpt(): (action, hash) from the address after the list name."""
        if self.inhost.lower() != self.host.lower() or not self.local.lower().startswith(self.inlocal.lower()):
            raise Fatal(100, FATAL + "I do not accept messages at this address (#5.1.1)")
        rest = self.local[len(self.inlocal):]
        if not rest:
            return "", ""
        if rest[0] != "-":
            raise Fatal(0, WARN + "mail address has bad extension.")
        action, _, hashid = rest[1:].partition("-")
        return action, hashid

    # -- checks

    def check_sender(self):
        """nullsender(): no requests to bounces or host-less senders."""
        if not self.sender or self.sender == "#@[]":
            raise Fatal(100, FATAL + "I don't reply to bounce messages. (#5.7.2)")
        if "@" not in self.sender:
            raise Fatal(100, FATAL + "I don't reply to senders without host names. (#5.7.2)")

    def check_header(self, message):
        """bouncefx(): lists, bulk mail and our own loop are refused."""
        for line in message.split(b"\n"):
            if not line:
                return
            low = line.lower()
            if low.startswith(b"mailing-list:"):
                raise Fatal(100, FATAL + "incoming message has Mailing-List. (#5.7.2)")
            if low.startswith(b"precedence:") and low[11:].lstrip(b" \t").startswith((b"junk", b"bulk", b"list")):
                raise Fatal(100, FATAL + "incoming message has bad precedence. (#5.7.2)")
            if line + b"\n" == self.dtline:
                raise Fatal(100, FATAL + "this message is looping: it already has my Delivered-To line. (#5.4.6)")

    # -- the store

    def path(self, subdir, hashid):
        return os.path.join(self.maildir, subdir, hashid)

    def held(self, subdir, hashid):
        """checkmessage(): the path of a held message; exit 99 when it is gone (expired, released)."""
        p = self.path(subdir, hashid.lower()) if HASH.fullmatch(hashid) else None
        if p is None or not os.path.exists(p):
            raise Fatal(99, WARN + "Message no longer in repository.")
        return p

    def new_hash(self, message):
        """A SHA1 hex name nobody can guess: time, pid, random bytes and the message."""
        h = hashlib.sha1(struct.pack("<dq", time.time(), os.getpid()) + os.urandom(16))
        h.update(message)
        return h.hexdigest()

    def save(self, message, subdir):
        """savemessage(): tmp/<hash>, fsynced, linked to <subdir>/<hash>; the hash."""
        hashid = self.new_hash(message)
        tmp, final = self.path("tmp", hashid), self.path(subdir, hashid)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, self.rpline + self.dtline)
                view = memoryview(message)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, final)
            fsync_path(os.path.join(self.maildir, subdir))
        except OSError as e:
            raise Fatal(111, f"{FATAL}Unable to store message: {e.strerror}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return hashid

    def move_to_moderation(self, hashid):
        """mvmessage(): new/<hash> -> cur/<newhash> (the sender confirmed); (new hash, its bytes)."""
        src = self.held("new", hashid)
        with open(src, "rb") as f:
            data = f.read()
        newhash = self.new_hash(data)
        try:
            os.rename(src, self.path("cur", newhash))
        except OSError as e:
            raise Fatal(111, f"{FATAL}Could not move file: {e.strerror}") from None
        return newhash, data

    def clean(self):
        """Remove held messages (and tmp leftovers) older than 7 days."""
        limit = time.time() - EXPIRY
        for sub in ("new", "cur", "tmp"):
            d = os.path.join(self.maildir, sub)
            try:
                names = os.listdir(d)
            except OSError as e:
                sys.stderr.write(f"{WARN}Cleanup: Unable to opendir {sub}/: {e.strerror}\n")
                continue
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    if os.stat(os.path.join(d, name)).st_mtime < limit:
                        os.unlink(os.path.join(d, name))
                except OSError:
                    pass

    # -- requests

    def request(self, text, to, reply_from, subject, hashid, attachment, maxsize):
        """sendmail(): the MIME request with the secretary text and the top of the message."""
        fields = [
            Field(b"To:", to, FORCE),
            Field(b"From:", b"The mailgroup secretary <" + reply_from + b">", FORCE),
            Field(b"Subject:", subject, ALLOW),
            Field(b"MIME-Version:", b"1.0", FORCE),
            Field(b"Content-Type:", None, FORCE),
            Field(b"Content-Transfer-Encoding:", None, FORCE),
            Field(b"X-Mailer:", b"qmail-secretary (by qmail-ldap)", FORCE),
            Field(b"Precedence:", b"junk", FORCE),
            Field(b"X-", None, ALLOW),
            Field(DEFAULT.encode(), None, DENY),
        ]
        header, _ = headermagic(text, fields)
        part_header, offset = headermagic(text, [
            Field(b"Content-Type:", b'text/plain; charset="iso-8859-1"', ALLOW),
            Field(b"Content-Transfer-Encoding:", b"8bit", ALLOW),
            Field(DEFAULT.encode(), None, DENY),
        ])
        bound = enc(hashid)
        now = time.time()
        body = re.sub(rb"(?i)%LIST%", lambda _: enc(f"{self.outlocal}@{self.outhost}"), text[offset:])
        listhead = b"Mailing-List: " + enc(self.mailinglist) + b"\n" if self.ezmlm is not None else b""
        return b"".join([
            self.dtline, newfield.msgid_field(enc(self.inhost), now), newfield.date_field(now), listhead, header,
            b'Content-Type: multipart/mixed; boundary="' + bound + b'"\n\n',
            b"This is a multi-part message in MIME format.\n",
            b"If you can read this your mail user agent doesnot support MIME messages\n",
            b"\n--" + bound + b"\n", part_header, b"\n", body, b"\n",
            b"--" + bound + b"\n", b"Content-Type: message/rfc822\n\n",
            attach(attachment, maxsize), b"\n",
            b"--" + bound + b"--\n\n",
        ])

    def send(self, mail, envelope_sender, recipients, what):
        try:
            result, qp = qq.submit_with_qp(mail, enc(envelope_sender), [enc(r) for r in recipients])
        except OSError as e:
            raise Fatal(111, f"{FATAL}Unable to fork: {e.strerror}") from None
        if result:
            raise Fatal(100 if result[:1] == "D" else 111, f"{FATAL}Unable to send {what} message: {result[1:]}.")
        sys.stderr.write(f"qmail-secretary: info: qp {qp}\n")

    def send_confirm(self, hashid, attachment):
        mail = self.request(self.confirm_text, enc(self.sender), enc(self.reply_address(hashid, "confirm")),
                            b"Message sender confirmation", hashid, attachment, CONFIRM_ATTACH)
        self.send(mail, self.reply_address(hashid, "reject"), [self.sender], "reply")

    def send_moderator(self, hashid, attachment):
        if not self.moderators:
            raise Fatal(100, FATAL + "no moderators found but needed.")
        to = enc(f"The moderators of {self.mailinglist} <{self.outlocal}-moderators@{self.outhost}>")
        mail = self.request(self.approve_text, to, enc(self.reply_address(hashid, "approve")),
                            b"Moderation request", hashid, attachment, APPROVE_ATTACH)
        # a moderator's own post goes to that moderator only
        recipients = [self.sender] if self.sender in self.moderators else self.moderators
        self.send(mail, self.reply_address(hashid, "bounce"), recipients, "approve")


def attach(message, maxsize):
    """attachmail(): the first `maxsize` bytes of the message, then a stripped marker."""
    if len(message) <= maxsize:
        return message
    return message[:maxsize] + b"\n\n--- End of message stripped.\n"


def release(path):
    """blast(), qmail-group mode: tell qmail-group which held message to send."""
    sys.stdout.buffer.write(b"K" + os.fsencode(path) + b"\0")
    sys.stdout.buffer.flush()


def release_ezmlm(path, program):
    """blast(), ezmlm mode: run the list program (ezmlm-send ...) on the held message, with
    SENDER taken from its Return-Path; the held copy goes once the program took it."""
    env = dict(os.environ)
    with open(path, "rb") as f:
        for line in f:
            if line == b"\n" or not line.endswith(b"\n"):
                break
            if line[:12].lower() == b"return-path:" and b"<" in line and line.rfind(b">") > line.find(b"<"):
                env["SENDER"] = os.fsdecode(line[line.find(b"<") + 1:line.rfind(b">")])
                break
        os.lseek(f.fileno(), 0, os.SEEK_SET)  # f.seek() may only move inside its buffer
        try:
            code = subprocess.run(program, stdin=f, env=env).returncode
        except OSError as e:
            raise Fatal(111, f"{FATAL}Unable to exec: {e.strerror}") from None
    if code < 0:
        raise Fatal(111, FATAL + "Aack, child crashed.")
    if code in (100, 64, 65, 70, 76, 77, 78, 112):
        raise Fatal(100, "")
    if code not in (0, 99):
        raise Fatal(111, "")
    try:
        os.unlink(path)
    except OSError as e:
        sys.stderr.write(f"{WARN}Could not unlink message: {e.strerror}\n")


def ezmlm_line(directory, name):
    """First line of an ezmlm list file (control-file line rules); 100 when it is missing."""
    try:
        with open(name, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape").split("\n", 1)[0].rstrip(" \t\r")
    except FileNotFoundError:
        raise Fatal(100, f"{FATAL}{directory}/{name} does not exist") from None
    except OSError as e:
        raise Fatal(111, f"{FATAL}unable to read {directory}/{name}: {e.strerror}") from None


def ezmlm_text(directory, name, default):
    try:
        with open(name, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return default
    except OSError as e:
        raise Fatal(111, f"{FATAL}unable to read {directory}/{name}: {e.strerror}") from None


def parse_args(argv):
    """(confirm, moderators, -M file, -z dir, maildir, program); Fatal(100) with the usage text."""
    confirm, moderators, modfile, ezmlm, args = False, [], None, None, list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        if opt == "--":
            break
        i = 1
        while i < len(opt):
            c = opt[i]
            if c in "cCZ":
                confirm = {"c": True, "C": False}.get(c, confirm)
                ezmlm = None if c == "Z" else ezmlm
                i += 1
                continue
            if c not in "mMz":
                raise Fatal(100, USAGE)
            value = opt[i + 1:] or (args.pop(0) if args else None)
            if value is None:
                raise Fatal(100, USAGE)
            if c == "m":
                moderators.append(value)
            elif c == "M":
                modfile = value
            else:
                ezmlm = value
            break
    if not args or (ezmlm is None) != (len(args) == 1):
        raise Fatal(100, USAGE)
    return confirm, moderators, modfile, ezmlm, args[0], args[1:]


def read_modfile(path):
    """-M file: one moderator address a line (control-file list rules: no blanks, no # lines)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").split("\n")
    except FileNotFoundError:
        raise Fatal(100, f"{FATAL}{path} does not exist") from None
    except OSError as e:
        raise Fatal(111, f"{FATAL}unable to read {path}: {e.strerror}") from None
    return [ln.rstrip(" \t\r") for ln in lines if ln.rstrip(" \t\r") and not ln.startswith("#")]


def run(argv, env, message):
    confirm, moderators, modfile, ezmlm, maildir, program = parse_args(argv)
    if ezmlm is not None:
        try:
            os.chdir(ezmlm)  # the list's files, a relative maildir and -M file are in the list directory
        except OSError as e:
            raise Fatal(111, f"{FATAL}unable to switch to {ezmlm}: {e.strerror}") from None
    s = Secretary(env, maildir, confirm, moderators, ezmlm)
    if modfile:
        s.moderators += read_modfile(modfile)
    s.program = program
    action, hashid = s.action()
    try:
        make_maildir(maildir)
    except MailboxError:
        raise Fatal(111, f"{FATAL}Unable to create maildir '{maildir}' (#4.3.0)") from None
    try:
        return step(s, action.lower(), hashid, message)
    finally:
        s.clean()


def step(s, action, hashid, message):
    """The work for one action; returns the exit code (Fatal for the texts)."""
    if action == "":
        s.check_sender()
        s.check_header(message)
        if s.confirm:
            s.send_confirm(s.save(message, "new"), message)
        else:
            s.send_moderator(s.save(message, "cur"), message)
        return 99
    if action in ("approve", "confirm"):
        s.check_sender()
        s.check_header(message)
        if not hashid:
            raise Fatal(100, f"{FATAL}{action.capitalize()} message without id.")
        if action == "approve" or not s.moderators:
            path = s.held("cur" if action == "approve" else "new", hashid)
            if s.ezmlm is None:
                release(path)
            else:
                release_ezmlm(path, s.program)
        else:
            s.send_moderator(*s.move_to_moderation(hashid))
        return 99
    if action == "reject":
        if HASH.fullmatch(hashid):
            try:
                os.unlink(s.path("new", hashid.lower()))
            except FileNotFoundError:
                pass
            except OSError as e:
                sys.stderr.write(f"{WARN}Could not unlink message: {e.strerror}\n")
        raise Fatal(99, WARN + "confirmation to sender bounced.")
    if action == "bounce":
        raise Fatal(99, WARN + "message to moderator bounced.")
    if action == "moderators":
        raise Fatal(100, FATAL + "I do not accept messages at this address (#5.1.1)")
    return 0  # an unknown action: the next .qmail line may know it


def main(argv=None):
    try:
        os.lseek(0, 0, os.SEEK_SET)
    except OSError:
        pass
    try:
        code = run(sys.argv[1:] if argv is None else argv, dict(os.environ), sys.stdin.buffer.read())
    except Fatal as e:
        if e.text:
            sys.stderr.write(e.text if e.text.endswith("\n") else e.text + "\n")
        code = e.code
    return code


if __name__ == "__main__":
    sys.exit(main())
