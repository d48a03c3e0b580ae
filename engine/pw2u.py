"""qmail-pw2u: turns a passwd file into users/assign lines (qmail-pw2u.c).

Reads passwd lines on stdin and writes assign lines on stdout, ending with
`.`: for each account with a non-zero uid (and, by default, no upper case
letters in the name and a home directory that exists and belongs to it),
`=name:user:uid:gid:home:::` plus `+name-:user:uid:gid:home:-::` for its
extensions, one pair per name in users/mailnames (`user:name1:name2`); the
`alias` user also gets the catch-all `+:alias:...:-::`. users/include and
users/exclude pick accounts, users/subusers adds `sub:user:pre:` lines,
users/append is copied at the end. Options as qmail's: -/ (dash is `-/`),
-o -h -H (home checks: skip / stop / none), -u -U (allow upper case),
-c x / -C (extension separator). Exit 111 on trouble, 100 on a bad option.
"""

import os
import sys

from engine import conf, control
from engine.sgetopt import getopt

FATAL = "qmail-pw2u: fatal: "


class Options:
    dashcolon = "-:"
    homestrategy = 2   # 2: skip a missing or foreign home; 1: stop at a missing one; 0: no check
    noupper = True
    brk = conf.BREAK


def die(text):
    sys.stderr.write(FATAL + text + "\n")
    sys.exit(111)


def parse_options(argv):
    opt = Options()
    g = getopt([a.encode("utf-8", "surrogateescape") for a in argv], b"/ohHuUc:C", "qmail-pw2u")
    for c, arg in g:
        if c == b"?":
            sys.exit(100)
        if c == b"/":
            opt.dashcolon = "-/:"
        elif c in (b"o", b"h", b"H"):
            opt.homestrategy = {b"o": 2, b"h": 1, b"H": 0}[c]
        elif c in (b"u", b"U"):
            opt.noupper = c == b"U"
        elif c == b"c":
            opt.brk = arg.decode("utf-8", "surrogateescape")[:1]
        elif c == b"C":
            opt.brk = ""
    return opt


def users_file(home, name):
    try:
        return control.read_file_list(os.path.join(home, "users", name))
    except control.ControlError:
        die("unable to read controls")


def home_usable(opt, home, uid):
    if not opt.homestrategy:
        return True
    try:
        st = os.stat(home)
    except FileNotFoundError:
        if opt.homestrategy == 1:
            die(f"unable to stat {home}")
        return False
    except OSError:
        die(f"unable to stat {home}")
    return st.st_uid == uid


def account_lines(opt, fields, include, exclude, mailnames):
    """The assign lines of one passwd entry, and its `:user:uid:gid:home:` part (None: skipped)."""
    user, _, uidstr, gidstr, _, home = fields[:6]
    digits = len(uidstr) - len(uidstr.lstrip("0123456789"))
    uid = int(uidstr[:digits]) if digits else 0
    if not uid or (opt.noupper and any("A" <= ch <= "Z" for ch in user)):
        return [], None
    if (include is not None and user not in include) or (exclude is not None and user in exclude):
        return [], None
    if not home_usable(opt, home, uid):
        return [], None
    uugh = f":{user}:{uidstr}:{gidstr}:{home}:"
    lines = [f"+{uugh}{opt.dashcolon}:"] if user == conf.USER_ALIAS else []
    names = mailnames.get(user) if mailnames is not None else None
    for name in (names if names is not None else user).split(":"):
        if name:
            lines.append(f"={name}{uugh}::")
            if opt.brk:
                lines.append(f"+{name}{opt.brk}{uugh}{opt.dashcolon}:")
    return lines, uugh


def subuser_lines(opt, line, users):
    parts = line.split(":")
    if len(parts) < 4:
        return []
    sub, user, pre = parts[0], parts[1], parts[2]
    uugh = users.get(user)
    if uugh is None:
        die(f"unable to find {user} user for subuser")
    lines = [f"={sub}{uugh}{opt.dashcolon}{pre}:"]
    if opt.brk:
        lines.append(f"+{sub}{opt.brk}{uugh}{opt.dashcolon}{pre}-:")
    return lines


def read_users_raw(home, name):
    """users/subusers or users/append as bytes, None when missing (read as is, not as a control file)."""
    try:
        with open(os.path.join(home, "users", name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError:
        die("unable to read controls")


def _map(home, name, values=False):
    items = users_file(home, name)
    return control.ConstMap(items, values=values) if items is not None else None


def convert(opt, passwd_lines, home):
    """All assign lines (without the final `.`) for the passwd lines, and users/append's bytes."""
    include, exclude, mailnames = _map(home, "include"), _map(home, "exclude"), _map(home, "mailnames", True)
    out, allusers = [], []
    for line in passwd_lines:
        fields = line.rstrip("\n").split(":")
        if "\0" in line or len(fields) < 7:
            continue
        lines, uugh = account_lines(opt, fields, include, exclude, mailnames)
        out += lines
        if uugh is not None:
            allusers.append(f"{fields[0]}:{uugh}")
    if not any(u.startswith(conf.USER_ALIAS + ":") for u in allusers):
        die(f"unable to find {conf.USER_ALIAS} user")
    subusers = read_users_raw(home, "subusers")
    if subusers is not None:
        users = control.ConstMap(allusers, values=True)
        for line in subusers.decode("utf-8", "surrogateescape").split("\n"):
            out += subuser_lines(opt, line, users)
    return out, read_users_raw(home, "append") or b""


def main(argv=None):
    opt = parse_options(sys.argv if argv is None else ["qmail-pw2u", *argv])
    home = conf.qmailhome()
    if not os.path.isdir(home):
        die("unable to chdir")
    try:
        passwd_lines = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").split("\n")
    except OSError:
        die("unable to read input")
    lines, append = convert(opt, passwd_lines, home)
    try:
        out = sys.stdout.buffer
        out.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
        out.write(append)
        out.write(b".\n")
        out.flush()
    except OSError:
        die("unable to write output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
