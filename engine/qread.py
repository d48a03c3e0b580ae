"""qmail-qread: lists the preprocessed messages and their recipients (qmail-qread.c).

    28 Nov 2026 21:59:48 GMT  #2352724  341  <sender@example.org>  bouncing
    	remote	user@example.net
      done	local	joe@example.org

One line per message in info/ (subdirectory 0 first, directory order
within), with its birth (info/'s mtime), id, size of mess/ and sender,
then ` bouncing` when failures wait in bounce/; then its recipients,
local/ before remote/, `  done` in front of the ones already delivered or
bounced. Bytes outside printable ASCII are shown as `_`. As in qmail,
everything goes to stdout: a message that cannot be read gives
`warning: trouble with #<id>: <error>` and the listing goes on; an
unreadable queue gives `fatal: ...` and exit 111. Messages still in todo/
are not listed (qmail-qstat counts them).
"""

import os
import sys

from engine import compiled, conf, hier
from engine.date822 import date822
from engine.tcpto import error_str

_scan = compiled.load("queuescan")
_PRINTABLE = bytes(c if 32 <= c <= 126 else ord("_") for c in range(256))
EXIT_FATAL = 111


class Fatal(Exception):
    """The queue cannot be listed; the text is qread's `fatal:` line."""


def printable(data):
    return data.translate(_PRINTABLE)


def stats_line(msgid, birth, size, sender, bouncing):
    """qread's fmtstats(): date, id, size, sender, then ` bouncing`; newline-terminated."""
    when = date822(birth)[:-len(" -0000")]
    line = (f"{when} GMT  #{msgid}  {size}  <".encode() + sender + b"> "
            + (b" bouncing" if bouncing else b""))
    return printable(line) + b"\n"


def recipient_lines(channel, records):
    """`\\t<channel>\\t<address>` per T record, `  done` in front for D records; others skipped."""
    out = []
    for rec in records:
        kind = rec[:1]
        if kind in (b"T", b"D"):
            out.append((b"  done" if kind == b"D" else b"") + b"\t%s\t" % channel + printable(rec[1:]) + b"\n")
    return out


def _warning(msgid, e):
    return f"warning: trouble with #{msgid}: {error_str(e)}\n".encode()


def message_lines(queue, msgid):
    """Everything qread prints for one message, warnings included, in qmail's order."""
    try:
        size = os.stat(hier.queue_file(queue, "mess", msgid)).st_size
        bouncing = os.path.exists(hier.queue_file(queue, "bounce", msgid))
        with open(hier.queue_file(queue, "info", msgid), "rb") as f:
            info = _scan.parse_records(f.read())
            birth = os.fstat(f.fileno()).st_mtime
    except OSError as e:
        return [_warning(msgid, e)]
    sender = info[0][1:] if info else b""
    out = [stats_line(msgid, birth, size, sender, bouncing)]
    for channel in (b"local", b"remote"):
        try:
            records = _scan.read_records(hier.queue_file(queue, channel.decode(), msgid))
        except FileNotFoundError:
            continue
        except OSError as e:
            out.append(_warning(msgid, e))
            continue
        out += recipient_lines(channel, records)
    return out


def _check_dir(path):
    try:
        os.stat(os.path.join(path, "."))
    except OSError as e:
        raise Fatal(f"fatal: unable to chdir: {error_str(e)}") from None


def report(home):
    """qread's whole output, line by line; Fatal when the queue cannot be read."""
    queue = os.path.join(home, "queue")
    _check_dir(home)
    _check_dir(queue)
    for sub in range(conf.SPLIT):
        try:
            ids = _scan.scan_dir(f"{queue}/info/{sub}")
        except OSError as e:
            raise Fatal(f"fatal: unable to opendir info/{sub}: {error_str(e)}") from None
        for msgid in ids:
            yield from message_lines(queue, msgid)


def main(argv=None):
    out = sys.stdout.buffer
    try:
        for line in report(conf.qmailhome()):
            out.write(line)
    except Fatal as e:
        out.write(str(e).encode() + b"\n")
        out.flush()
        return EXIT_FATAL
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
