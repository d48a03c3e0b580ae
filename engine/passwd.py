"""userPassword checking and hashing (qmail-ldap's passwd.c and digest.c).

A stored value starts with a scheme in braces, matched case-insensitively:
{crypt} crypt(3); {md4} {md5} {sha} {rmd160} base64 of the digest;
{smd5} {ssha} base64(digest(password + salt) + salt); {ns-mta-md5} 64
characters, hex(MD5(salt + 'Y' + password + 0xF7 + salt)) followed by the
32-character salt. A value without a scheme is a crypt(3) string; with
`cleartext=True` (qmail-ldap's CLEARTEXTPASSWD build) plain equality is
accepted as well. The computed text is compared exactly (case-sensitive), in
constant time.
"""

import base64
import hashlib
import hmac
import os
import struct
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt as _crypt  # stdlib until 3.13; the system's crypt(3), as passwd.c uses

SALT_LEN = 4


def _md4(data):
    """MD4 (RFC 1320); OpenSSL 3 no longer offers it through hashlib."""
    def f(x, y, z): return (x & y) | (~x & z)
    def g(x, y, z): return (x & y) | (x & z) | (y & z)
    def h(x, y, z): return x ^ y ^ z
    def rol(v, s): return ((v << s) | (v >> (32 - s))) & 0xFFFFFFFF

    msg = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", len(data) * 8)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        aa, bb, cc, dd = a, b, c, d
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            a, b, c, d = d, rol((a + f(b, c, d) + x[k]) & 0xFFFFFFFF, s), b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a, b, c, d = d, rol((a + g(b, c, d) + x[k] + 0x5A827999) & 0xFFFFFFFF, s), b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a, b, c, d = d, rol((a + h(b, c, d) + x[k] + 0x6ED9EBA1) & 0xFFFFFFFF, s), b, c
        a, b, c, d = ((a + aa) & 0xFFFFFFFF, (b + bb) & 0xFFFFFFFF,
                      (c + cc) & 0xFFFFFFFF, (d + dd) & 0xFFFFFFFF)
    return struct.pack("<4I", a, b, c, d)


def _digest(name):
    if name == "md4":
        return _md4
    return lambda data: hashlib.new(name, data).digest()


_PLAIN = {"md4": "md4", "md5": "md5", "sha": "sha1", "rmd160": "ripemd160"}
_SALTED = {"smd5": "md5", "ssha": "sha1"}


def _b64(b):
    return base64.b64encode(b).decode("ascii")


def _ns_mta_md5(clear, salt):
    raw = salt.encode() + b"Y" + clear + b"\xf7" + salt.encode()
    return hashlib.md5(raw).hexdigest() + salt


def _crypt3(clear, setting):
    try:
        out = _crypt.crypt(clear.decode("utf-8", "surrogateescape"), setting)
    except (ValueError, OSError):
        return None
    return out  # None when crypt(3) refuses the setting


def _split_scheme(stored):
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 0:
            return stored[1:end].lower(), stored[end + 1:]
    return None, stored


def computed(clear, scheme, stored):
    """The text `stored` must equal for `clear` under `scheme`, or None (unknown scheme / bad value)."""
    if scheme == "crypt":
        return _crypt3(clear, stored)
    if scheme in _PLAIN:
        return _b64(_digest(_PLAIN[scheme])(clear))
    if scheme in _SALTED:
        try:
            raw = base64.b64decode(stored, validate=True)
        except ValueError:
            return None
        fn = _digest(_SALTED[scheme])
        size = len(fn(b""))
        if len(raw) < size:
            return None
        salt = raw[size:]
        return _b64(fn(clear + salt) + salt)
    if scheme == "ns-mta-md5":
        return _ns_mta_md5(clear, stored[32:]) if len(stored) == 64 else None
    return None


def malformed(stored):
    """A userPassword of a known scheme whose value cannot be used at all (passwd.c's BADVAL):
    {ns-mta-md5} not 64 characters, {smd5}/{ssha} not base64 or shorter than the digest."""
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "surrogateescape")
    scheme, value = _split_scheme(stored)
    if scheme == "ns-mta-md5":
        return len(value) != 64
    if scheme in _SALTED:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return True
        return len(raw) < len(_digest(_SALTED[scheme])(b""))
    return False


def check(clear, stored, cleartext=False):
    """Does the clear-text password `clear` match the userPassword value `stored`?

    An empty password never matches (qmail-ldap: "null password").
    """
    if isinstance(clear, str):
        clear = clear.encode("utf-8", "surrogateescape")
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "surrogateescape")
    if not clear:
        return False
    scheme, value = _split_scheme(stored)
    if scheme is not None and (scheme in _PLAIN or scheme in _SALTED
                               or scheme in ("crypt", "ns-mta-md5")):
        want = computed(clear, scheme, value)
        return want is not None and hmac.compare_digest(want.encode(), value.encode())
    want = _crypt3(clear, stored)
    if want is not None and stored and hmac.compare_digest(want.encode(), stored.encode()):
        return True
    return cleartext and hmac.compare_digest(clear, stored.encode("utf-8", "surrogateescape"))


def make(clear, scheme, salt=None):
    """A userPassword value for `clear` (the digest program's job); random salt when none given."""
    if isinstance(clear, str):
        clear = clear.encode("utf-8", "surrogateescape")
    scheme = scheme.lower()
    if scheme == "crypt":
        setting = salt if salt is not None else _crypt.mksalt(_crypt.METHOD_SHA512)
        return "{crypt}" + _crypt3(clear, setting)
    if scheme in _PLAIN:
        return "{%s}" % scheme.upper() + _b64(_digest(_PLAIN[scheme])(clear))
    if scheme in _SALTED:
        salt = os.urandom(SALT_LEN) if salt is None else salt
        return "{%s}" % scheme.upper() + _b64(_digest(_SALTED[scheme])(clear + salt) + salt)
    if scheme == "ns-mta-md5":
        salt = os.urandom(16).hex() if salt is None else salt
        if len(salt) != 32:
            raise ValueError("ns-mta-md5 needs a 32-character salt")
        return "{NS-MTA-MD5}" + _ns_mta_md5(clear, salt)
    raise ValueError(f"unknown password scheme: {scheme}")
