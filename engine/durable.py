"""Making files durable: fsync of a file or directory by name, and syncfs(2) of a whole file system.

Shared by qmail-queue (engine/queue.py), qmail-todo, qmail-send and qmail-secretary.
syncfs flushes every dirty file of one file system in one call, which is how several
messages share one flush (group commit); where it is missing or fails, callers fall back
to an fsync per file.
"""

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(fd):
    """syncfs(2) of the file system holding fd; False where the call is unavailable or fails."""
    return _syncfs is not None and _syncfs(fd) == 0


def fsync_path(path):
    """fsync the file or directory `path` (OSError as it comes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_files(fs_fd, paths):
    """Make every file in `paths` durable: one syncfs of fs_fd's file system, else fsync each."""
    if syncfs(fs_fd):
        return
    for p in paths:
        fsync_path(p)
