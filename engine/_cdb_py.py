"""Pure-Python twin of ext/cdb.pyx: djb's cdb hash and exact-key lookups over a cdb's bytes.

`buf` is the whole file (an mmap, bytes or any buffer). A lookup walks the
key's hash table from the key's slot, like cdb_findnext: it stops at an
empty slot or after visiting every slot, and yields the values of every
record whose key matches, in the order the writer added them. A table or
record that points outside the file raises ValueError (the C library's
"bad cdb format", errno EPROTO).
"""

HEADER_SIZE = 2048
_BAD = "bad cdb format: a pointer leaves the file"


def hash(key):
    """djb's cdb hash: h = 5381; h = ((h << 5) + h) ^ c over the bytes, modulo 2**32."""
    if not isinstance(key, bytes):
        raise TypeError("cdb keys are bytes")
    h = 5381
    for c in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ c
    return h


def _pair(buf, pos):
    """The two little-endian uint32 at pos, pos + 4."""
    if pos + 8 > len(buf):
        raise ValueError(_BAD)
    b = buf[pos:pos + 8]
    return (b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24,
            b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24)


def _lookup(buf, key, limit):
    h = hash(key)
    hpos, hslots = _pair(buf, (h << 3) & 2047)
    found = []
    if not hslots:
        return found
    end = hpos + (hslots << 3)
    kpos = hpos + (((h >> 8) % hslots) << 3)
    for _ in range(hslots):
        slot_hash, pos = _pair(buf, kpos)
        if not pos:
            break
        kpos += 8
        if kpos == end:
            kpos = hpos
        if slot_hash != h:
            continue
        klen, dlen = _pair(buf, pos)
        if klen != len(key):
            continue
        start = pos + 8
        if start + klen > len(buf):
            raise ValueError(_BAD)
        if buf[start:start + klen] != key:
            continue
        start += klen
        if start + dlen > len(buf):
            raise ValueError(_BAD)
        found.append(bytes(buf[start:start + dlen]))
        if len(found) == limit:
            break
    return found


def find(buf, key):
    """The first value stored under `key`, or None."""
    found = _lookup(buf, key, 1)
    return found[0] if found else None


def find_all(buf, key):
    """Every value stored under `key`, in the order they were added."""
    return _lookup(buf, key, -1)
