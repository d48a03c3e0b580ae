"""Runs qmail-inject / sendmail as subprocesses against a recording queue program."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass

from support.fakequeue import read_envelope, read_message, record_queue

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the environment variables that change what qmail-inject writes; tests start without them
INJECT_VARS = ("QMAILUSER", "MAILUSER", "USER", "LOGNAME", "QMAILHOST", "MAILHOST", "QMAILNAME",
               "MAILNAME", "NAME", "QMAILSUSER", "QMAILSHOST", "QMAILINJECT", "QMAILMFTFILE",
               "QMAILDEFAULTDOMAIN", "QMAILDEFAULTHOST", "QMAILPLUSDOMAIN", "QMAILIDHOST",
               "QMAILQUEUE", "PROTO")


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: bytes
    queued: bool
    sender: bytes = None
    recipients: list = None
    message: bytes = None

    def header(self):
        """The queued (or printed) header, without the body."""
        text = self.message if self.queued else self.stdout
        return text.split(b"\n\n", 1)[0] + b"\n"


class Runner:
    def __init__(self, module, qmailhome, workdir):
        self.module = module
        self.qmailhome = qmailhome
        self.workdir = workdir
        self.queue = record_queue(workdir)

    def __call__(self, args=(), stdin=b"", env=None, argv0=None):
        for name in ("message", "envelope"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                os.unlink(path)
        environ = {k: v for k, v in os.environ.items() if k not in INJECT_VARS}
        environ.update(QMAILHOME=self.qmailhome, QMAILQUEUE=self.queue, USER="joe",
                       PYTHONPATH=ROOT)
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        cmd = [sys.executable, "-m", self.module, *args]
        if argv0:
            cmd = [sys.executable, "-c",
                   f"import sys, runpy; sys.argv[0] = {argv0!r}; "
                   f"runpy.run_module({self.module!r}, run_name='__main__')", *args]
        p = subprocess.run(cmd, input=stdin, capture_output=True, env=environ, cwd=self.workdir,
                           timeout=60)
        queued = os.path.exists(os.path.join(self.workdir, "envelope"))
        r = Result(p.returncode, p.stdout, p.stderr, queued)
        if queued and os.path.getsize(os.path.join(self.workdir, "envelope")):
            r.sender, r.recipients = read_envelope(self.workdir)
            r.message = read_message(self.workdir)
        return r


def stamps(text):
    """Replace the Date and Message-ID values (time and pid dependent) with fixed marks, checking their form."""
    date = rb"\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d -0000"
    msgid = rb"<\d{14}\.\d+\.qmail@([^>]+)>"
    text = re.sub(rb"((?:Resent-)?Date: )" + date + rb"\n", rb"\1DATE\n", text)
    return re.sub(rb"((?:Resent-)?Message-ID: )" + msgid + rb"\n", rb"\1<ID@\2>\n", text)
