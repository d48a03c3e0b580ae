"""qmail-qstat: how many messages are queued, and how many wait for preprocessing (qmail-qstat.sh)."""

import os
import sys

from engine import compiled, conf

_scan = compiled.load("queuescan")


def counts(queue):
    return len(_scan.scan_split(queue, "mess")), len(_scan.scan_split(queue, "todo"))


def main(argv=None):
    queue = os.path.join(conf.qmailhome(), "queue")
    try:
        mess, todo = counts(queue)
    except OSError as e:
        sys.stderr.write(f"qmail-qstat: fatal: unable to read {queue}: {e.strerror}\n")
        return 111
    print("messages in queue:", mess)
    print("messages in queue but not yet preprocessed:", todo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
