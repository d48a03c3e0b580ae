"""engine.passwd: userPassword schemes, checked against hashes made by OpenLDAP's slappasswd."""

import subprocess

import pytest

from engine import passwd


def slappasswd(scheme, secret, *extra):
    return subprocess.run(["slappasswd", "-h", scheme, "-s", secret, *extra],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("scheme,extra", [("{SSHA}", ()), ("{SMD5}", ()), ("{SHA}", ()),
                                          ("{MD5}", ()), ("{CRYPT}", ("-c", "$6$%.16s")),
                                          ("{CRYPT}", ("-c", "%.2s"))])
def test_slappasswd_hashes(scheme, extra):
    stored = slappasswd(scheme, "Geheim7", *extra)  # 7 characters: DES crypt uses only 8
    assert passwd.check("Geheim7", stored)
    assert not passwd.check("geheim7", stored)
    assert not passwd.check("Geheim", stored)


def test_scheme_prefix_is_case_insensitive():
    stored = slappasswd("{SSHA}", "pw")
    assert passwd.check("pw", "{ssha}" + stored[6:])


@pytest.mark.parametrize("scheme", ["crypt", "md4", "md5", "sha", "rmd160", "smd5", "ssha", "ns-mta-md5"])
def test_make_and_check(scheme):
    stored = passwd.make("s3cr3t", scheme)
    assert passwd.check("s3cr3t", stored) and not passwd.check("s3cr3T", stored)


def test_known_vectors():
    # base64(MD4("abc")), base64(SHA1("abc")), base64(RIPEMD160("abc"))
    assert passwd.check("abc", "{MD4}pEgBeq8h2FJfwQroeqZynQ==")
    assert passwd.check("abc", "{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")
    assert passwd.check("abc", "{RMD160}jrII9+BdmHqbBEqOmMawh/FaC/w=")


def test_plain_crypt_without_prefix_and_cleartext():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    assert passwd.check("pw", crypt.crypt("pw", "ab"))
    assert not passwd.check("pw", "pw")  # cleartext off, as in a default qmail-ldap build
    assert passwd.check("pw", "pw", cleartext=True)
    assert not passwd.check("px", "pw", cleartext=True)


def test_empty_password_never_matches():
    assert not passwd.check("", "")
    assert not passwd.check("", "", cleartext=True)
    assert not passwd.check("", passwd.make("", "md5"))


def test_garbage_values_do_not_match():
    assert not passwd.check("pw", "{SSHA}not base64!")
    assert not passwd.check("pw", "{SMD5}QQ==")
    assert not passwd.check("pw", "{NS-MTA-MD5}short")
