"""qmail's newfield.c: the Date: and Message-ID: fields qmail programs add to mail they write."""

import os
import time

from engine.date822 import date822


def date_field(when):
    return b"Date: " + date822(when).encode() + b"\n"


def msgid_field(host, when, pid=None):
    """`Message-ID: <YYYYMMDDHHMMSS.<pid>.qmail@host>`; host is bytes."""
    t = time.gmtime(when)
    return b"Message-ID: <%d%02d%02d%02d%02d%02d.%d.qmail@%s>\n" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, os.getpid() if pid is None else pid, host)
