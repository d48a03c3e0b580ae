"""Connection limits shared by the preforked listener workers (tcpserver's -c, and a per-IP limit).

Shared memory created by the master before it forks, guarded by one lock:
one row per worker, each with its open-connection total and a small
open-addressing table of (client address, count). A connection is allowed
when the sum over all rows stays within the total limit and the sum for its
address within the per-IP limit; it is counted in the accepting worker's
row. When a worker dies the master clears its row (reset_row), so a crash
never leaks connection slots.
"""

import ipaddress
import multiprocessing
import struct
import zlib

SLOTS = 1024
_ENTRY = struct.Struct("<16si")
_EMPTY = b"\0" * 16


class ConnLimits:
    def __init__(self, workers, total, per_ip, slots=SLOTS):
        self.workers, self.total_limit, self.per_ip_limit, self.slots = workers, total, per_ip, slots
        self.row = 4 + slots * _ENTRY.size
        self.lock = multiprocessing.Lock()
        self.mem = multiprocessing.RawArray("B", workers * self.row)

    @staticmethod
    def key(ip):
        packed = ipaddress.ip_address(ip.split("%", 1)[0]).packed
        return packed.rjust(16, b"\xff") if len(packed) == 4 else packed

    def _find(self, w, key):
        """(offset of key's entry or None, offset of the first reusable entry or None) in row w."""
        base = w * self.row + 4
        start = zlib.crc32(key) % self.slots
        free = None
        for n in range(self.slots):
            off = base + ((start + n) % self.slots) * _ENTRY.size
            stored, count = _ENTRY.unpack_from(self.mem, off)
            if stored == key:
                return off, free
            if count == 0 and free is None:
                free = off
            if stored == _EMPTY:
                return None, free
        return None, free

    def _total(self, w):
        return struct.unpack_from("<i", self.mem, w * self.row)[0]

    def _add_total(self, w, delta):
        struct.pack_into("<i", self.mem, w * self.row, max(0, self._total(w) + delta))

    def _count(self, w, key):
        off, _ = self._find(w, key)
        return 0 if off is None else _ENTRY.unpack_from(self.mem, off)[1]

    def acquire(self, w, ip):
        """Count a new connection from `ip` in worker w's row; False when a limit is reached."""
        key = self.key(ip)
        with self.lock:
            if self.total_limit and sum(self._total(i) for i in range(self.workers)) >= self.total_limit:
                return False
            if self.per_ip_limit and sum(self._count(i, key) for i in range(self.workers)) >= self.per_ip_limit:
                return False
            off, free = self._find(w, key)
            if off is None:
                if free is None:
                    return False
                off = free
                _ENTRY.pack_into(self.mem, off, key, 0)
            _ENTRY.pack_into(self.mem, off, key, _ENTRY.unpack_from(self.mem, off)[1] + 1)
            self._add_total(w, 1)
            return True

    def release(self, w, ip):
        key = self.key(ip)
        with self.lock:
            off, _ = self._find(w, key)
            if off is not None:
                _ENTRY.pack_into(self.mem, off, key, max(0, _ENTRY.unpack_from(self.mem, off)[1] - 1))
                self._add_total(w, -1)

    def reset_row(self, w):
        with self.lock:
            start = w * self.row
            self.mem[start:start + self.row] = bytes(self.row)

    def total(self):
        with self.lock:
            return sum(self._total(i) for i in range(self.workers))

    def count(self, ip):
        key = self.key(ip)
        with self.lock:
            return sum(self._count(i, key) for i in range(self.workers))
