"""qbiff: qmail's qbiff(1) (qbiff.c), a .qmail program announcing new mail on the user's terminals.

`|qbiff` in a .qmail file: for every utmp entry of $USER, the terminal
/dev/<line> gets

    \\r\\n\\a*** TO <$LOCAL> FROM <$SENDER>\\r\\n
        <Subject, then the body, 78 characters in all>\\r\\n

provided the user ran `biff y` there: the terminal's owner-execute bit is set
and the terminal belongs to the user qbiff runs as. Control and 8-bit
characters become '_' in the first line and '/' in the second. Like qbiff.c
it never fails a delivery: whatever goes wrong (no USER, SENDER or LOCAL, no
utmp, a terminal that cannot be written) exits 0 quietly. utmp lines
starting with '/' or containing '.' are skipped, so nothing outside /dev is
written.

The utmp file is glibc's /var/run/utmp (struct utmp, 384 bytes a record);
$QBIFF_UTMP names another one (for tests). Beyond qbiff.c, terminals are
opened without creating a missing one and without becoming a controlling
terminal.
"""

import os
import struct
import sys

from engine import hfield

UTMP_FILE = "/var/run/utmp"
# glibc's struct utmp on Linux: ut_type, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256], ...
UTMP = struct.Struct("=h2xi32s4s32s256s2hi2i4i20s")
NAME_SIZE = 32
TEXT_MAX = 78


class _Full(Exception):
    """The summary has all the text it can show."""


def printable(data, replacement):
    return bytes(ch if 32 <= ch <= 126 else replacement for ch in data)


def skipname(line):
    """hfield_skipname: the field's value, after the colon and any leading blanks."""
    colon = line.find(b":")
    return line[colon + 1:].lstrip(b" \t\r\n") if colon >= 0 else b""


def summary_text(stdin):
    """Four spaces, the Subject field's value, then the body: the first 78 bytes of that."""
    text = bytearray(b"    ")

    def add(data):
        text.extend(data)
        if len(text) >= TEXT_MAX:
            raise _Full

    def field(line):
        if hfield.known(line) == hfield.SUBJECT:
            add(skipname(line))

    try:
        hfield.headerbody(stdin, field, lambda: None, add)
    except _Full:
        pass
    return bytes(text[:TEXT_MAX])


def announcement(local, sender, text):
    tofrom = printable(b"*** TO <" + local + b"> FROM <" + sender + b">", ord("_"))
    return b"\r\n\a" + tofrom + b"\r\n" + printable(text, ord("/")) + b"\r\n"


def user_lines(utmp_path, user):
    """The ut_line values of the utmp entries whose ut_user is `user`."""
    with open(utmp_path, "rb") as f:
        while len(record := f.read(UTMP.size)) == UTMP.size:
            fields = UTMP.unpack(record)
            line, name = fields[2], fields[4]
            if name.split(b"\0", 1)[0] == user[:NAME_SIZE]:
                yield line.split(b"\0", 1)[0]


def write_to_tty(line, data):
    """Write to /dev/<line> (we are in /dev) if it is a biff-enabled terminal of ours."""
    if not line or line.startswith(b"/") or b"." in line:
        return
    try:
        fd = os.open(line, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o100 and st.st_uid == os.getuid():
            os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def main(argv=None):
    env = os.environb
    user, sender, local = env.get(b"USER"), env.get(b"SENDER"), env.get(b"LOCAL")
    try:
        os.chdir("/dev")
    except OSError:
        return 0
    if user is None or sender is None or local is None or len(user) > NAME_SIZE:
        return 0
    try:
        woof = announcement(local, sender, summary_text(sys.stdin.buffer))
        for line in user_lines(env.get(b"QBIFF_UTMP") or UTMP_FILE, user):
            write_to_tty(line, woof)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
