# cython: boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of engine/_cdb_py.py: djb's cdb hash and exact-key lookups over a cdb's bytes.

Same API and the same answers as the pure twin: `buf` is the whole file
(an mmap, bytes or any contiguous buffer), a lookup walks the key's hash
table like cdb_findnext, and a pointer outside the file raises ValueError.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp

HEADER_SIZE = 2048
_BAD = "bad cdb format: a pointer leaves the file"


cdef inline uint32_t _hash(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    cdef uint32_t h = 5381
    cdef Py_ssize_t i
    for i in range(n):
        h = ((h << 5) + h) ^ s[i]
    return h


cdef inline uint32_t _u32(const unsigned char *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def hash(bytes key not None):
    """djb's cdb hash: h = 5381; h = ((h << 5) + h) ^ c over the bytes, modulo 2**32."""
    return _hash(<const unsigned char *>key, len(key))


cdef list _lookup(const unsigned char[::1] buf, bytes key, Py_ssize_t limit):
    cdef uint64_t n = buf.shape[0]
    cdef const unsigned char *b = &buf[0] if n else NULL
    cdef const unsigned char *k = <const unsigned char *>key
    cdef uint64_t klen = len(key)
    cdef uint32_t h = _hash(k, klen)
    cdef uint64_t hpos, hslots, end, kpos, pos, start, dlen, loop
    cdef uint32_t slot_hash
    cdef list found = []

    pos = (h << 3) & 2047
    if pos + 8 > n:
        raise ValueError(_BAD)
    hpos = _u32(b + pos)
    hslots = _u32(b + pos + 4)
    if not hslots:
        return found
    end = hpos + (hslots << 3)
    kpos = hpos + (((h >> 8) % hslots) << 3)
    for loop in range(hslots):
        if kpos + 8 > n:
            raise ValueError(_BAD)
        slot_hash = _u32(b + kpos)
        pos = _u32(b + kpos + 4)
        if not pos:
            break
        kpos += 8
        if kpos == end:
            kpos = hpos
        if slot_hash != h:
            continue
        if pos + 8 > n:
            raise ValueError(_BAD)
        if _u32(b + pos) != klen:
            continue
        dlen = _u32(b + pos + 4)
        start = pos + 8
        if start + klen > n:
            raise ValueError(_BAD)
        if klen and memcmp(b + start, k, klen) != 0:
            continue
        start += klen
        if start + dlen > n:
            raise ValueError(_BAD)
        found.append((<const char *>b)[<Py_ssize_t>start:<Py_ssize_t>(start + dlen)])
        if len(found) == limit:
            break
    return found


def find(buf, bytes key not None):
    """The first value stored under `key`, or None."""
    found = _lookup(buf, key, 1)
    return found[0] if found else None


def find_all(buf, bytes key not None):
    """Every value stored under `key`, in the order they were added."""
    return _lookup(buf, key, -1)
