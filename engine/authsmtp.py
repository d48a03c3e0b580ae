"""auth_smtp: SMTP AUTH against the directory (auth_smtp.c, checkpassword.c; spec 3.8, 5.3.5).

The login is looked up as `(uid=<login>)` (with ldapobjectclass), LDAP
only. Results, as auth_smtp's K / D / exit 111: ("K", login) for a good
password; ("D", "") for an unknown login, a wrong or empty password;
("Z", "") for accountStatus noaccess/disabled/deleted and for any
directory trouble (qmail-smtpd answers 454, not 535, for those).
Passwords are compared with engine.passwd, or with a re-bind as the
entry's DN when control/ldaprebind is 1.

As a program (`auth_smtp`, for a C qmail-smtpd or scripts; no arguments):
NUL-terminated fields on stdin, `login`, base64 user, base64 password, or
`plain`, base64 of `[authzid]\0user\0password`. It answers `K<user>\0`
for a good password, `D` for an unknown user or a wrong or empty one, `Z`
for missing or malformed fields (all exit 0), and exits 111 without a word
for an inactive account, directory or control-file trouble, another
mechanism or arguments (auth_smtp.c).
"""

import asyncio
import base64
import binascii
import os
import sys

from engine import conf, control, passwd, qldap
from engine.dirthread import DirectoryThread

AUTH_ATTRS = ["uid", "accountStatus", "userPassword"]
_threads = {}


def _thread(home):
    if home not in _threads:
        _threads[home] = DirectoryThread(home, login_fallback=True)
    return _threads[home]


def _check(directory, login, password):
    entry = directory.lookup_uid(login, AUTH_ATTRS)
    if entry is None:
        return "D", ""
    if entry.status() in ("noaccess", "disabled", "deleted"):
        return "Z", ""
    if directory.cfg.rebind:
        ok = directory.check_bind(entry.dn, password)
    else:
        ok = any(passwd.check(password, stored) for stored in entry.values("userPassword"))
    return ("K", login) if ok else ("D", "")


async def check(home, login, password):
    if not password:
        return "D", ""
    try:
        return await _thread(home).call(lambda d: _check(d, login, password))
    except (qldap.QldapError, control.ControlError):
        return "Z", ""


class Malformed(Exception):
    """A missing or undecodable field: auth_smtp.c's NEEDED/BADVAL, answered `Z`."""


class UnknownMechanism(Exception):
    """Neither `login` nor `plain`: auth_smtp.c's AUTH_TYPE, exit 111."""


def _fields(fd):
    """NUL-terminated fields from `fd` as they arrive; an unterminated rest is not a field."""
    buf = b""
    while True:
        data = os.read(fd, 4096)
        if not data:
            return
        buf += data
        *complete, buf = buf.split(b"\0")
        yield from complete


def _b64(field):
    try:
        return base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("bad base64") from None


def read_request(fd=0):
    """(login, password) as bytes from auth_smtp's stdin protocol."""
    fields = _fields(fd)
    kind = next(fields, None)
    if kind is None:
        raise Malformed("no mechanism")
    if kind == b"login":
        user, password = next(fields, None), next(fields, None)
        if user is None or password is None:
            raise Malformed("login needs user and password")
        return _b64(user), _b64(password)
    if kind == b"plain":
        blob = next(fields, None)
        if blob is None:
            raise Malformed("plain needs its blob")
        parts = _b64(blob).split(b"\0", 2)
        if len(parts) < 3:
            raise Malformed("plain blob is not authzid NUL user NUL password")
        return parts[1], parts[2].split(b"\0", 1)[0]
    raise UnknownMechanism(kind)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        return 111
    try:
        login, password = read_request(0)
    except Malformed:
        os.write(1, b"Z")
        return 0
    except UnknownMechanism:
        return 111
    dec = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
    kind, user = asyncio.run(check(conf.qmailhome(), dec(login), dec(password)))
    if kind == "Z":  # inactive account or directory trouble: no answer, qmail-smtpd says 454
        return 111
    os.write(1, b"K" + login + b"\0" if kind == "K" else b"D")
    return 0


if __name__ == "__main__":
    sys.exit(main())
