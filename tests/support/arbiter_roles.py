"""Runs engine.arbiter.Arbiter with small test roles, for tests/test_arbiter.py.

Usage: python arbiter_roles.py STATEDIR. Children record themselves as files
in STATEDIR: pid-<role>-<index>-<pid> on start, term-<pid> when TERM arrives,
alrm-<pid> on SIGALRM. STATEDIR/count holds the sleeper pool size (read on HUP).
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from engine.arbiter import BOOT_ERROR, Arbiter, Role  # noqa: E402

STATE = sys.argv[1]


def mark(name):
    open(os.path.join(STATE, name), "w").close()


def sleeper(role, stubborn=False):
    def body(index):
        stop = []
        signal.signal(signal.SIGTERM, lambda s, f: (mark(f"term-{os.getpid()}"), stop.append(1)))
        signal.signal(signal.SIGALRM, lambda s, f: mark(f"alrm-{os.getpid()}"))
        signal.signal(signal.SIGHUP, lambda s, f: mark(f"hup-{os.getpid()}"))
        mark(f"pid-{role}-{index}-{os.getpid()}")
        while not stop or stubborn:
            time.sleep(0.02)
        return 0
    return body


def pool_size():
    with open(os.path.join(STATE, "count")) as f:
        return int(f.read())


roles = [
    Role("sleeper", sleeper("sleeper"), count=pool_size),
    Role("sender", sleeper("sender"), alarm=True),
    Role("broken", lambda index: BOOT_ERROR),
]
if os.path.exists(os.path.join(STATE, "stubborn")):
    roles.append(Role("stubborn", sleeper("stubborn", stubborn=True)))
sys.exit(Arbiter(roles, grace=float(os.environ.get("GRACE", "5"))).run())
