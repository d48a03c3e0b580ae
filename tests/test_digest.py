"""digest (qmail-ldap's password hash tool): what it prints is accepted by our directory check
and, for the schemes OpenLDAP knows, by slapd's own password check on a simple bind."""

import base64
import hashlib
import os
import subprocess
import sys

import ldap
import pytest

from engine import passwd
from support.slapd import add_user
from support.slapd import slapd  # noqa: F401

DIGEST = os.path.join(os.path.dirname(sys.executable), "digest")
SCHEMES = ["CRYPT", "MD4", "MD5", "NS-MTA-MD5", "SMD5", "SHA", "SSHA", "RMD160"]


def digest(*args):
    p = subprocess.run([DIGEST, *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_every_scheme_once_and_each_checks():
    code, out, _ = digest("s3cret pass")
    lines = out.splitlines()
    assert code == 0 and [line[1:line.index("}")] for line in lines] == SCHEMES
    for line in lines:
        assert passwd.check("s3cret pass", line), line
        assert not passwd.check("S3cret pass", line), line  # DES crypt reads 8 characters only


def test_given_salt_is_used_whole():
    salt = bytes(range(20))
    code, out, _ = digest("-t", "ssha", "-S", salt.hex(), "pw")
    assert code == 0
    assert out == "{SSHA}" + base64.b64encode(hashlib.sha1(b"pw" + salt).digest() + salt).decode() + "\n"
    code, out, _ = digest("-t", "ns-mta-md5", "-s", base64.b64encode(salt).decode(), "pw")
    assert out.strip().endswith(salt[:16].hex())


def test_crypt_formats():
    assert digest("-5", "-t", "crypt", "pw")[1].startswith("{CRYPT}$1$")
    assert digest("-f", "$6$XXXXXXXX$", "-t", "crypt", "pw")[1].startswith("{CRYPT}$6$")
    assert digest("-f", "nox", "-t", "crypt", "pw")[1] == "crypt failed.\n"


@pytest.mark.parametrize("args,code,out", [
    (["-v", "pw", "{MD5}" + base64.b64encode(hashlib.md5(b"pw").digest()).decode()], 0, "passwords are equal.\n"),
    (["-v", "px", "{MD5}" + base64.b64encode(hashlib.md5(b"pw").digest()).decode()], 0, "passwords are NOT equal.\n"),
    (["-v", "pw", "{BOGUS}abc"], 1, "digest: cmp_password: illegal hashed password.\n"),
])
def test_verify(args, code, out):
    assert digest(*args)[:2] == (code, out)


@pytest.mark.parametrize("args", [[], ["-v", "one"], ["-q", "pw"], ["-S", "zz", "pw"], ["a", "b"]])
def test_usage(args):
    code, _, err = digest(*args)
    assert code == 1 and "usage:\tdigest" in err


def test_bad_type_lists_the_types():
    code, _, err = digest("-t", "sha256", "pw")
    assert code == 1 and err.startswith("digest: bad digest type, use one of:\n\tcrypt\n")


@pytest.mark.parametrize("scheme", ["crypt", "md5", "smd5", "sha", "ssha"])
def test_slapd_accepts_the_hash_on_bind(slapd, scheme):  # noqa: F811
    value = digest("-5", "-t", scheme, "bind me")[1].strip()
    dn = add_user(slapd, f"digest-{scheme}", f"digest-{scheme}@digest.test", userPassword=value)
    conn = ldap.initialize(slapd.url)
    try:
        conn.simple_bind_s(dn, "bind me")
        with pytest.raises(ldap.INVALID_CREDENTIALS):
            conn.simple_bind_s(dn, "bind mE")
    finally:
        conn.unbind_s()
