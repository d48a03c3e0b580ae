"""The qmail home's layout (qmail's hier.c): every directory and special file
with its owner, group and mode, split subdirectories included.

`make setup` (engine.install) creates it and `make check` (engine.instcheck)
verifies it. As root the owners are qmail's users; a single-user instance
(not root) keeps the same tree and modes, all owned by the owner of the
home directory (the invoking user when it creates the home).
"""

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from engine import conf

DIR, FILE, FIFO = "d", "f", "p"
TCPTO_SIZE = 1024  # qmail-remote's lock/tcpto table


@dataclass(frozen=True)
class Entry:
    path: str   # relative to the qmail home; "" is the home itself
    kind: str   # DIR, FILE or FIFO
    owner: str
    group: str
    mode: int
    split: bool = False  # has conf-split numbered subdirectories
    size: int = 0        # FILE: created zero-filled to this size


LAYOUT = (
    Entry("", DIR, conf.USER_OWNER, conf.GROUP_QMAIL, 0o755),
    Entry("control", DIR, conf.USER_OWNER, conf.GROUP_QMAIL, 0o755),
    Entry("users", DIR, conf.USER_OWNER, conf.GROUP_QMAIL, 0o755),
    Entry("bin", DIR, conf.USER_OWNER, conf.GROUP_QMAIL, 0o755),
    Entry("alias", DIR, conf.USER_ALIAS, conf.GROUP_QMAIL, 0o2755),
    Entry("queue", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o750),
    Entry("queue/pid", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o700),
    Entry("queue/intd", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o700, split=True),
    Entry("queue/todo", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o750, split=True),
    Entry("queue/mess", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o750, split=True),
    Entry("queue/bounce", DIR, conf.USER_SEND, conf.GROUP_QMAIL, 0o700),
    Entry("queue/info", DIR, conf.USER_SEND, conf.GROUP_QMAIL, 0o700, split=True),
    Entry("queue/local", DIR, conf.USER_SEND, conf.GROUP_QMAIL, 0o700, split=True),
    Entry("queue/remote", DIR, conf.USER_SEND, conf.GROUP_QMAIL, 0o700, split=True),
    Entry("queue/lock", DIR, conf.USER_QUEUE, conf.GROUP_QMAIL, 0o750),
    Entry("queue/lock/tcpto", FILE, conf.USER_REMOTE, conf.GROUP_QMAIL, 0o644, size=TCPTO_SIZE),
    Entry("queue/lock/sendmutex", FILE, conf.USER_SEND, conf.GROUP_QMAIL, 0o600),
    Entry("queue/lock/trigger", FIFO, conf.USER_SEND, conf.GROUP_QMAIL, 0o622),
)


def expanded(split=conf.SPLIT):
    """Every entry of LAYOUT, with each split directory followed by its 0..split-1 children."""
    for e in LAYOUT:
        yield e
        if e.split:
            for i in range(split):
                yield Entry(f"{e.path}/{i}", DIR, e.owner, e.group, e.mode)


def is_single_user(home):
    """A home whose queue/ is not owned by qmailq is a single-user instance: everything runs as its owner."""
    owner = os.stat(os.path.join(home, "queue")).st_uid
    try:
        return owner != pwd.getpwnam(conf.USER_QUEUE).pw_uid
    except KeyError:
        return True


def ids(home, owner, group, single_user):
    """(uid, gid) for a layout owner; in a single-user instance everything belongs to the home's owner."""
    if single_user:
        st = os.stat(home)
        return st.st_uid, st.st_gid
    return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid


def create(home, single_user, split=conf.SPLIT):
    """Create (or repair) the layout under `home`. Existing entries get owner and mode fixed."""
    for e in expanded(split):
        path = os.path.join(home, e.path)
        if e.kind == DIR:
            os.makedirs(path, exist_ok=True)
        elif e.kind == FIFO:
            if not os.path.exists(path):
                os.mkfifo(path)
        elif not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(b"\0" * e.size)
        uid, gid = ids(home, e.owner, e.group, single_user)
        os.chown(path, uid, gid)
        os.chmod(path, e.mode)


def _kind_of(st_mode):
    if stat.S_ISDIR(st_mode):
        return DIR
    if stat.S_ISFIFO(st_mode):
        return FIFO
    if stat.S_ISREG(st_mode):
        return FILE
    return "?"


def problems(home, single_user, split=conf.SPLIT):
    """What differs from the layout under `home`, one readable line per problem (instcheck)."""
    found = []
    for e in expanded(split):
        path = os.path.join(home, e.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            found.append(f"{path}: missing")
            continue
        if _kind_of(st.st_mode) != e.kind:
            found.append(f"{path}: wrong type")
            continue
        uid, gid = ids(home, e.owner, e.group, single_user)
        if (st.st_uid, st.st_gid) != (uid, gid):
            found.append(f"{path}: owner {st.st_uid}:{st.st_gid}, want {e.owner}:{e.group} ({uid}:{gid})")
        if stat.S_IMODE(st.st_mode) != e.mode:
            found.append(f"{path}: mode {stat.S_IMODE(st.st_mode):o}, want {e.mode:o}")
    return found


SPLIT_KINDS = frozenset(e.path.split("/", 1)[1] for e in LAYOUT if e.split)


def queue_file(queue, kind, msgid, split=conf.SPLIT):
    """qmail's fmtqfn: queue/<kind>/<id mod split>/<id> for split kinds, else queue/<kind>/<id>."""
    if kind in SPLIT_KINDS:
        return f"{queue}/{kind}/{msgid % split}/{msgid}"
    return f"{queue}/{kind}/{msgid}"
