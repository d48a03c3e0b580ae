"""LDAP search filters for the user directory (qmail-ldap's qldap-filter.c), pure-Python twin
of the compiled engine._ldapfilter_c (ext/ldapfilter.pyx); engine.qldap loads whichever
engine.compiled picks.

SECURITY: every user-supplied value is escaped per RFC 4515 section 3 (the five
characters * ( ) \\ NUL become \\2a \\28 \\29 \\5c \\00), so an address or login
cannot widen the search. control/ldapobjectclass goes in verbatim, as in qmail-ldap:
administrators use it to add a compound condition.
"""

from ldap.filter import escape_filter_chars as _escape_filter_chars


def escape(value):
    """RFC 4515 escaping of a filter value: * ( ) \\ NUL become \\2a \\28 \\29 \\5c \\00."""
    return _escape_filter_chars(value)


def wrap_objectclass(filt, objectclass):
    """(&(objectClass=<ldapobjectclass>)<filt>) when configured; the class goes in unescaped."""
    return f"(&(objectClass={objectclass}){filt})" if objectclass else filt


def address_filter(address, objectclass=""):
    """(|(mail=<a>)(mailAlternateAddress=<a>)), escaped and wrapped."""
    v = escape(address)
    return wrap_objectclass(f"(|(mail={v})(mailAlternateAddress={v}))", objectclass)


def uid_filter(uid, objectclass=""):
    """(uid=<uid>) for POP/IMAP/SMTP-AUTH logins, escaped and wrapped."""
    return wrap_objectclass(f"(uid={escape(uid)})", objectclass)
