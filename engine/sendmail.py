"""sendmail: the sendmail command-line interface on top of qmail-inject (qmail's sendmail.c).

    sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]

Runs qmail-inject -a (or -H with -t: header recipients plus arguments) on
the message, after switching to the qmail home. -f sets the envelope
sender and, through QMAILUSER/QMAILHOST, the From address; -F sets the
personal name (MAILNAME). -bs runs ~/bin/qmail-smtpd on stdin/stdout as a
local, relaying, unlimited SMTP session (PROTO, TCP*, RELAYCLIENT and
DATABYTES set unless PROTO already is); -bp (or running as "mailq") runs
~/bin/qmail-qread. sendmail's other options that make no sense for qmail
(-B -e -i -m -o* -p -v -x -E -J, -bm) are accepted and ignored; anything
else is a usage error (exit 100). Invoked as "newaliases" it refuses.

One difference from qmail-ldap: -F keeps its name when -f is also given
(sendmail.c's -f handling cleared the name set by -F).
"""

import os
import sys

from engine import conf, inject
from engine.sgetopt import getopt

PROG = "sendmail"
USAGE = b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"
OPTIONS = b"vimte:f:p:o:B:F:EJxb:"

# the environment of a "sendmail -bs" session when no tcpserver set one up
SMTPD_ENV = {
    "RELAYCLIENT": "", "DATABYTES": "0", "PROTO": "TCP",
    "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost",
    "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEHOST": "localhost", "TCPREMOTEINFO": "sendmail-bs",
}


class Exit(Exception):
    """Ends sendmail with `code` after writing `text` (bytes) to stderr."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def fatal(code, what):
    return Exit(code, b"sendmail: fatal: " + what + b"\n")


def usage():
    return Exit(100, USAGE)


def run_program(name):
    """exec ~/bin/<name> (we are in the qmail home); returns only by raising."""
    path = os.path.join("bin", name)
    try:
        os.execv(path, [path])
    except OSError:
        pass
    raise fatal(111, b"unable to run " + name.encode())


def smtpd():
    if "PROTO" not in os.environ:
        os.environ.update(SMTPD_ENV)
    run_program("qmail-smtpd")


def mailq():
    run_program("qmail-qread")


def set_sender_identity(sender):
    """-f: the From user and host follow the envelope sender; the personal name is cleared."""
    for name in ("QMAILNAME", "MAILNAME", "NAME", "QMAILHOST", "MAILHOST"):
        os.environb.pop(name.encode(), None)
    user, at, host = sender.rpartition(b"@")
    if not at:
        user = host
    else:
        os.environb[b"QMAILHOST"] = host
    os.environb[b"QMAILUSER"] = user


def program_name(argv0):
    name = os.path.basename(os.fsdecode(argv0))
    return PROG if name.endswith(".py") else name


def parse(argv, progname):
    """Options to (flagh, sender, fullname, args); runs -bp/-bs right away like sendmail.c."""
    flagh, sender, fullname = False, None, None
    opts = getopt(argv, OPTIONS, progname)
    for opt, arg in opts:
        if opt == b"t":
            flagh = True
        elif opt == b"f":
            sender = arg
        elif opt == b"F":
            fullname = arg
        elif opt in (b"E", b"J"):  # Sony NEWS-OS: an optional argument attached
            opts.skip_rest()
        elif opt == b"b":
            mode = arg[:1]
            if mode == b"p":
                mailq()
            elif mode == b"s":
                smtpd()
            elif mode != b"m":
                raise usage()
        elif opt == b"?":
            raise usage()
        # B e i m o p v x: meaningless for qmail, ignored
    return flagh, sender, fullname, opts.rest()


def sendmail(argv, stdin, stdout):
    progname = program_name(argv[0]) if argv else PROG
    try:
        os.chdir(conf.qmailhome())
    except OSError:
        raise fatal(111, b"unable to switch to qmail home directory") from None
    flagh, sender, fullname, args = parse(argv, progname)
    if progname == "mailq":
        mailq()
    if progname == "newaliases":
        raise fatal(100, b"please use fastforward/newaliases instead")
    qiargv = [b"qmail-inject", b"-H" if flagh else b"-a"]
    if sender is not None:
        qiargv += [b"-f", sender]
        set_sender_identity(sender)
    if fullname is not None:
        os.environb[b"MAILNAME"] = fullname
    qiargv += [b"--", *args]
    return inject.inject(qiargv, stdin, stdout)


def main(argv=None):
    argv = [os.fsencode(a) for a in (sys.argv if argv is None else argv)]
    try:
        return sendmail(argv, sys.stdin.buffer, sys.stdout.buffer)
    except Exit as e:
        sys.stderr.buffer.write(e.text)
        sys.stderr.buffer.flush()
        return e.code


if __name__ == "__main__":
    sys.exit(main())
