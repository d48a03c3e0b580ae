"""engine ldapfilter kernel (both twins): RFC 4515 value escaping and the filters
qmail-ldap's qldap-filter.c builds for address and login look-ups."""

import re

import pytest
from hypothesis import given, settings, strategies as st

from support.twins import both

from engine import _ldapfilter_c, _ldapfilter_py

ESCAPES = [
    ("joe@example.com", "joe@example.com"),
    ("", ""),
    ("*", "\\2a"),
    ("(", "\\28"),
    (")", "\\29"),
    ("\\", "\\5c"),
    ("\0", "\\00"),
    ("a*b(c)d\\e\0f@x", "a\\2ab\\28c\\29d\\5ce\\00f@x"),
    ("x)(uid=*", "x\\29\\28uid=\\2a"),
    ("\\2a", "\\5c2a"),                      # an escape-looking value is escaped again, not passed
    ("*)(|(mail=*", "\\2a\\29\\28|\\28mail=\\2a"),
    ("jörg@exämple.de", "jörg@exämple.de"),   # non-ASCII stays as text; python-ldap sends UTF-8
    ("üb*er", "üb\\2aer"),
    ("a\udcffb", "a\udcffb"),                 # a surrogate-escaped byte from the wire passes through
    ("end\\", "end\\5c"),
]


@both("ldapfilter")
@pytest.mark.parametrize("value,expected", ESCAPES)
def test_escape(k, value, expected):
    assert k.escape(value) == expected


@both("ldapfilter")
def test_address_filter(k):
    assert k.address_filter("a*b@x") == "(|(mail=a\\2ab@x)(mailAlternateAddress=a\\2ab@x))"
    assert k.address_filter("a@b", "qmailUser") == \
        "(&(objectClass=qmailUser)(|(mail=a@b)(mailAlternateAddress=a@b)))"


@both("ldapfilter")
def test_uid_filter(k):
    assert k.uid_filter("x)(uid=*") == "(uid=x\\29\\28uid=\\2a)"
    assert k.uid_filter("joe", "qmailUser") == "(&(objectClass=qmailUser)(uid=joe))"


@both("ldapfilter")
def test_objectclass_goes_in_verbatim(k):
    """Administrators put a compound condition in control/ldapobjectclass (qmail-ldap does not escape it)."""
    assert k.uid_filter("joe", "qmailUser)(accountStatus=active") == \
        "(&(objectClass=qmailUser)(accountStatus=active)(uid=joe))"
    assert k.wrap_objectclass("(uid=a)", "") == "(uid=a)"


@both("ldapfilter")
def test_non_str_is_refused(k):
    with pytest.raises(TypeError):
        k.escape(b"joe@example.com")


def unescape(text):
    return re.sub(r"\\([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_twins_agree_and_escape_is_reversible(value):
    c, py = _ldapfilter_c.escape(value), _ldapfilter_py.escape(value)
    assert c == py
    assert unescape(c) == value
    assert not re.search(r"[*()\0]", c) and not re.search(r"\\(?![0-9a-f]{2})", c)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["", "qmailUser", "qmailUser)(accountStatus=active"]))
def test_twins_build_the_same_filters(value, objectclass):
    for name in ("address_filter", "uid_filter"):
        assert getattr(_ldapfilter_c, name)(value, objectclass) == \
            getattr(_ldapfilter_py, name)(value, objectclass)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_value_cannot_change_the_filter_structure(value):
    """Whatever the address, the filter has exactly the template's parentheses."""
    f = _ldapfilter_c.address_filter(value)
    assert f.count("(") == 3 and f.count(")") == 3
    assert f.startswith("(|(mail=") and f.endswith("))")
