"""qmail-verify: does a local address exist? (qmail-verify.c), for RCPTCHECK and SENDERCHECK.

Answers ("K", ""), ("D", text) or ("Z", text) as the original's K / D<text> /
Z<text> records: the qmail-lspawn lookup rounds in LDAP; accountStatus
disabled or deleted are permanent refusals; too many entries (accepted
with control/ldapdupealias, DUPEALIAS) or an LDAP failure are temporary
with an empty text (qmail-smtpd then says `451 `); no entry and
ldaplocaldelivery → users/cdb, then a real passwd user. A directory that
cannot be reached at all — where qmail-verify exited without an answer and
qmail-smtpd printed garbage — gives a fixed temporary text.

As a program (`qmail-verify`, for a C qmail-smtpd or scripts): NUL-terminated
addresses on stdin, one answer each on stdout — `K`, or `D<text>` / `Z<text>`
followed by a NUL — until stdin ends.
"""

import asyncio
import os
import sys

from engine import conf, control, getpw, qldap, users
from engine.dirthread import DirectoryThread

NO_HOST = "Sorry, address must include host name. (#5.1.3)"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
DISABLED = "Mailaddress is administratively disabled. (#5.2.1)"
UNREACHABLE = "temporary problem verifying the address (#4.3.0)"
VERIFY_ATTRS = ["accountStatus"]

_threads = {}


def _thread(home):
    if home not in _threads:
        _threads[home] = DirectoryThread(home, login_fallback=True)
    return _threads[home]


def _lookup(directory, address):
    """(kind, text) from the directory, or None when no entry matched."""
    try:
        hit = directory.lookup(address, VERIFY_ATTRS)
    except qldap.TooMany:
        if directory.cfg.dupealias:  # DUPEALIAS: qmail-lspawn delivers it to dupealias
            return "K", ""
        raise
    if hit is None:
        return None
    status = hit[0].status()
    if status == "disabled":
        return "D", DISABLED
    if status == "deleted":
        return "D", NO_MAILBOX
    return "K", ""


def local_user_exists(home, local_part):
    """users/cdb or a passwd user (never the alias fallback); Z text on trouble."""
    try:
        if users.lookup(local_part, home=home) is not None:
            return True
    except OSError:
        raise LookupError("Trouble reading users/cdb in qmail-verify.") from None
    return getpw.getpw(local_part, alias=False) is not None


async def check(home, address):
    at = address.rfind("@")
    if at < 0:
        return "D", NO_HOST
    try:
        found = await _thread(home).call(lambda d: _lookup(d, address))
    except (qldap.SearchTimeout, qldap.BindTimeout, qldap.LdapAuth, control.ControlError):
        return "Z", UNREACHABLE
    except qldap.QldapError:
        return "Z", ""
    if found is not None:
        return found
    if control.read_int("ldaplocaldelivery", 1, home):
        try:
            if local_user_exists(home, address[:at]):
                return "K", ""
        except LookupError as e:
            return "Z", str(e)
    return "D", NO_MAILBOX


def answer(kind, text):
    """The record qmail-smtpd reads: K alone, D or Z with the text and a NUL."""
    return b"K" if kind == "K" else (kind + text).encode("utf-8", "surrogateescape") + b"\0"


def read_fields(fd):
    """NUL-terminated fields from `fd` as they arrive (addresses here, auth_smtp's request);
    a last one without NUL is dropped, as in C."""
    buf = b""
    while True:
        data = os.read(fd, 4096)
        if not data:
            return
        buf += data
        *complete, buf = buf.split(b"\0")
        yield from complete


def main(argv=None):
    home = conf.qmailhome()
    for raw in read_fields(0):
        kind, text = asyncio.run(check(home, raw.decode("utf-8", "surrogateescape")))
        os.write(1, answer(kind, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
