"""The disk's own limit for mail: create + write + fsync + rename files/s on one filesystem.

Every durable message costs at least this much (a queue file or a Maildir
file made durable and moved into place), so the figure is the ceiling that
bench/suite.py prints beside each server's rate. One writer and several
writers in parallel; the files are removed afterwards.

    .venv/bin/python bench/disk.py [DIR] [--files N] [--size BYTES]
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time


def _writer(tmp, new, prefix, files, data):
    for n in range(files):
        name = f"{prefix}.{n}"
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(os.path.join(tmp, name), os.path.join(new, name))


def probe(directory, files=1000, size=4096, writers=1):
    """files/s for `writers` threads together making `files` files of `size` bytes durable in `directory`."""
    base = tempfile.mkdtemp(prefix="disk-probe-", dir=directory)
    try:
        tmp, new = os.path.join(base, "tmp"), os.path.join(base, "new")
        os.mkdir(tmp)
        os.mkdir(new)
        data = b"x" * size
        each = max(1, files // writers)
        threads = [threading.Thread(target=_writer, args=(tmp, new, f"w{w}", each, data)) for w in range(writers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return each * writers / (time.perf_counter() - start)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def ceiling(directory, files=1000, size=4096):
    """{"1 writer": files/s, "8 writers": files/s, "ceiling": the better of the two}."""
    rates = {f"{w} writer{'s' if w > 1 else ''}": probe(directory, files, size, w) for w in (1, 8)}
    rates["ceiling"] = max(rates.values())
    return rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", nargs="?", default=tempfile.gettempdir())
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--size", type=int, default=4096)
    args = p.parse_args(argv)
    for what, rate in ceiling(args.dir, args.files, args.size).items():
        print(f"{what}: {rate:,.0f} files/s (create + write {args.size} B + fsync + rename)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
