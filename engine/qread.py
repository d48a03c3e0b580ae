"""qmail-qread: lists the queued messages and their recipients (qmail-qread.c).

    28 Nov 2026 21:59:48 GMT  #2352724  341  <sender@example.org>  bouncing
    	remote	user@example.net
      done	local	joe@example.org

One line per preprocessed message (info/), with its birth, id, size and
sender, ` bouncing` when it has failures waiting in bounce/; then each
recipient by channel, `done` when it was already delivered.
"""

import os
import sys

from engine import compiled, conf, hier
from engine.date822 import date822

_scan = compiled.load("queuescan")


def records(path):
    with open(path, "rb") as f:
        return f.read().split(b"\0")[:-1]


def message_lines(queue, msgid):
    mess = os.stat(hier.queue_file(queue, "mess", msgid))
    info_path = hier.queue_file(queue, "info", msgid)
    with open(info_path, "rb") as f:
        sender = f.read().split(b"\0", 1)[0][1:]
        birth = os.fstat(f.fileno()).st_mtime
    bouncing = os.path.exists(hier.queue_file(queue, "bounce", msgid))
    head = (f"{date822(birth)[:-6]} GMT  #{msgid}  {mess.st_size}  <".encode() + sender + b"> "
            + (b" bouncing" if bouncing else b"") + b"\n")
    out = [head]
    for channel in ("local", "remote"):
        try:
            recs = records(hier.queue_file(queue, channel, msgid))
        except FileNotFoundError:
            continue
        for rec in recs:
            if rec[:1] in (b"T", b"D"):
                out.append((b"  done" if rec[:1] == b"D" else b"") + f"\t{channel}\t".encode() + rec[1:] + b"\n")
    return out


def main(argv=None):
    queue = os.path.join(conf.qmailhome(), "queue")
    try:
        ids = _scan.scan_split(queue, "info")
    except OSError:
        sys.stderr.write(f"qmail-qread: fatal: unable to opendir {queue}/info\n")
        return 111
    out = sys.stdout.buffer
    for msgid in ids:
        try:
            out.writelines(message_lines(queue, msgid))
        except OSError:
            sys.stderr.write(f"qmail-qread: warning: trouble with #{msgid}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
