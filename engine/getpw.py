"""qmail-getpw: finds the passwd user for a local part (qmail-getpw.c).

The longest prefix of the local part, ending at the end or at a `-`, that
names a passwd user with a non-zero uid whose home directory exists and is
owned by that uid wins: dash "" without extension, else "-" and the rest.
Otherwise the alias user gets the whole local part as its extension.
As a program: `qmail-getpw local` prints user, uid, gid, home, dash, ext
each NUL-terminated; exit 100 without an argument, 116 (QLX_NOALIAS) when
even alias is missing, 115 (QLX_NFS) when a home directory cannot be
checked for a temporary reason (an empty local part is the alias user's).
"""

import errno
import os
import pwd
import sys

from engine import conf

QLX_NFS = 115
QLX_NOALIAS = 116
GETPW_USERLEN = 32


# qmail's error_temp(): a home directory that cannot be checked for one of these defers
TEMP_ERRNOS = frozenset((errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT, errno.EAGAIN,
                         errno.ENFILE, errno.EMFILE, errno.ENOSPC, errno.EHOSTDOWN, errno.EHOSTUNREACH,
                         errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNREFUSED, errno.EDQUOT, errno.ESTALE))


class NoAlias(Exception):
    """There is no passwd entry for the alias user."""


class NfsFailure(OSError):
    """A home directory could not be checked for a temporary reason (qmail-getpw's QLX_NFS)."""


def _owner_home(username):
    try:
        pw = pwd.getpwnam(username.lower())
    except KeyError:
        return None
    if not pw.pw_uid:
        return None
    try:
        if os.stat(pw.pw_dir).st_uid == pw.pw_uid:
            return pw
    except OSError as e:  # missing or forbidden: not this user; temporary trouble: try later
        if e.errno in TEMP_ERRNOS:
            raise NfsFailure(e.errno, f"unable to stat {pw.pw_dir}") from None
    return None


def getpw(local, alias=True):
    """(user, uid, gid, home, dash, ext) for `local`; raises NoAlias when neither a user nor alias exists.

    alias=False (qmail-verify's lookup_passwd) returns None instead of falling back to the alias user.
    """
    for end in range(min(len(local), GETPW_USERLEN - 1), -1, -1):
        if end == len(local) or local[end] == conf.BREAK:
            pw = _owner_home(local[:end])
            if pw:
                if end < len(local):
                    return pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, "-", local[end + 1:]
                return pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, "", ""
    if not alias:
        return None
    try:
        pw = pwd.getpwnam(conf.USER_ALIAS)
    except KeyError:
        raise NoAlias(conf.USER_ALIAS) from None
    return pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, "-", local


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return 100
    try:
        fields = getpw(argv[0])
    except NoAlias:
        return QLX_NOALIAS
    except NfsFailure:
        return QLX_NFS
    sys.stdout.buffer.write(b"".join(str(f).encode("utf-8", "surrogateescape") + b"\0" for f in fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
