"""Queue programs for tests: small executables that record what a qmail-queue gets, then exit as told.

record_queue(dir) writes <dir>/qq, a Python script standing in for
qmail-queue: it saves its fd 0 (message), fd 1 (envelope), cwd and
argv under <dir>, writes $FAKEQQ_ERRTEXT (if set) to fd 4, and exits
with $FAKEQQ_EXIT (default 0). read_envelope() splits the saved envelope
into (sender, [recipients]).
"""

import os
import sys

SCRIPT = """#!{python}
import os, sys
out = {out!r}
with open(os.path.join(out, "message"), "wb") as f:
    f.write(sys.stdin.buffer.read())
with open(os.path.join(out, "envelope"), "wb") as f:
    f.write(os.fdopen(1, "rb").read())
with open(os.path.join(out, "cwd"), "w") as f:
    f.write(os.getcwd())
errtext = os.environ.get("FAKEQQ_ERRTEXT")
if errtext is not None:
    os.write(4, errtext.encode())
if os.environ.get("FAKEQQ_KILL"):
    os.kill(os.getpid(), 9)
sys.exit(int(os.environ.get("FAKEQQ_EXIT", "0")))
"""


def record_queue(directory):
    """Write the recording queue program into `directory`; returns its path."""
    path = os.path.join(directory, "qq")
    with open(path, "w") as f:
        f.write(SCRIPT.format(python=sys.executable, out=str(directory)))
    os.chmod(path, 0o755)
    return path


def read_envelope(directory):
    """(sender, recipients) from the recorded envelope; asserts its framing is exact."""
    with open(os.path.join(directory, "envelope"), "rb") as f:
        data = f.read()
    assert data.endswith(b"\0\0") or data == b"", data
    records = data[:-1].split(b"\0")[:-1]
    assert records[0].startswith(b"F"), data
    assert all(r.startswith(b"T") for r in records[1:]), data
    return records[0][1:], [r[1:] for r in records[1:]]


def read_message(directory):
    with open(os.path.join(directory, "message"), "rb") as f:
        return f.read()
