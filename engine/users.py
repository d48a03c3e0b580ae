"""users/cdb look-ups: which user gets a local part (qmail-lspawn's nughde_get, qmail-users(5)).

users/cdb is written by qmail-newu (engine.newu). For a local part the
look-up, on the lower-cased local part, tries:

1. the exact assignment "!" + local + NUL;
2. wildcard assignments "!" + prefix for every prefix of local, longest
   first (local itself included, down to the empty prefix, which is
   "+:..."), skipping prefixes whose last character is not one of the
   wildcard characters stored under the key "".

A wildcard hit appends the rest of the local part, in its original case,
to the stored extension prefix. No users/cdb means no assignment (the
caller goes on to qmail-getpw); a users/cdb that cannot be read, has no ""
key or holds a record with fewer than six fields raises OSError, which
qmail-lspawn reports as "Trouble reading users/cdb in qmail-lspawn.".
"""

import errno
import os

from engine import cdb, conf

FIELDS = 6


def path(home=None):
    return os.path.join(home or conf.qmailhome(), "users", "cdb")


def _bytes(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def _str(b):
    return b.decode("utf-8", "surrogateescape")


def _leading_number(field):
    """scan_ulong: the leading decimal digits, 0 when there are none."""
    digits = len(field) - len(field.lstrip(b"0123456789"))
    return int(field[:digits]) if digits else 0


def find_record(db, local):
    """The raw assignment for `local` (bytes) with any wildcard extension appended, or None."""
    wildchars = db.get(b"")
    if wildchars is None:
        raise cdb.CdbError(db.path, "users/cdb has no wildcard-characters record (key \"\")")
    lower = b"!" + local.lower() + b"\0"
    record = db.get(lower)
    if record is not None:
        return record
    for end in range(len(lower) - 1, 0, -1):
        if end == 1 or lower[end - 1] in wildchars:
            record = db.get(lower[:end])
            if record is not None:
                return record + local[end - 1:]
    return None


def parse_record(db_path, record):
    """(user, uid, gid, home, dash, ext) from "user NUL uid NUL gid NUL home NUL dash NUL ext"."""
    fields = record.split(b"\0", FIELDS - 1)
    if len(fields) < FIELDS:
        raise cdb.CdbError(db_path, f"users/cdb record has {len(fields)} fields, not {FIELDS}")
    user, uid, gid, home, dash, ext = fields
    return _str(user), _leading_number(uid), _leading_number(gid), _str(home), _str(dash), _str(ext)


def lookup(local, home=None):
    """(user, uid, gid, home, dash, ext) assigned to local part `local` (str or bytes), or None.

    None also when users/cdb does not exist; OSError when it cannot be read or is damaged.
    """
    p = path(home)
    try:
        db = cdb.Cdb(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OSError(e.errno or errno.EIO, f"unable to read users/cdb: {e.strerror}", p) from e
    with db:
        record = find_record(db, _bytes(local))
    return None if record is None else parse_record(p, record)
