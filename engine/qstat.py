"""qmail-qstat: how many messages are in the queue, and how many wait for preprocessing (qmail-qstat.sh).

    messages in queue: 12
    messages in queue but not yet preprocessed: 1

The first count is mess/ (every message from queueing until its last
delivery), the second todo/ (queued, not yet split into local/remote by
qmail-todo), both over their conf-split subdirectories.
"""

import os
import sys

from engine import compiled, conf
from engine.tcpto import error_str

_scan = compiled.load("queuescan")
EXIT_FATAL = 111


def counts(queue):
    """(messages in mess/, messages in todo/)."""
    return len(_scan.scan_split(queue, "mess")), len(_scan.scan_todo(queue))


def main(argv=None):
    queue = os.path.join(conf.qmailhome(), "queue")
    try:
        mess, todo = counts(queue)
    except OSError as e:
        sys.stderr.write(f"qmail-qstat: fatal: unable to read {e.filename or queue}: {error_str(e)}\n")
        return EXIT_FATAL
    sys.stdout.write(f"messages in queue: {mess}\nmessages in queue but not yet preprocessed: {todo}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
