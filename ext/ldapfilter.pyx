# cython: boundscheck=False, wraparound=False
"""Compiled twin of engine._ldapfilter_py (LDAP search filters, qldap-filter.c).

Same API and results as the pure twin, which documents the behaviour. escape()
counts the characters to escape in one pass over the string's own storage and
returns the value itself when there are none (every ordinary address);
otherwise it writes the result into one new string of the right length. The
pure twin makes five str.replace passes.
"""

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    int PyUnicode_KIND(object o)
    void *PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void *data, Py_ssize_t index)
    void PyUnicode_WRITE(int kind, void *data, Py_ssize_t index, Py_UCS4 value)
    Py_UCS4 PyUnicode_MAX_CHAR_VALUE(object o)


cdef inline bint _special(Py_UCS4 c):
    return c == u'*' or c == u'(' or c == u')' or c == u'\\' or c == 0


cpdef str escape(str value):
    """RFC 4515 escaping of a filter value: * ( ) \\ NUL become \\2a \\28 \\29 \\5c \\00."""
    cdef Py_ssize_t i, j, n = len(value), count = 0
    cdef int kind = PyUnicode_KIND(value), okind
    cdef void *data = PyUnicode_DATA(value)
    cdef void *out
    cdef Py_UCS4 c
    for i in range(n):
        if _special(PyUnicode_READ(kind, data, i)):
            count += 1
    if count == 0:
        return value
    result = PyUnicode_New(n + 2 * count, PyUnicode_MAX_CHAR_VALUE(value))
    okind = PyUnicode_KIND(result)
    out = PyUnicode_DATA(result)
    j = 0
    for i in range(n):
        c = PyUnicode_READ(kind, data, i)
        if _special(c):
            PyUnicode_WRITE(okind, out, j, u'\\')
            PyUnicode_WRITE(okind, out, j + 1, u'2' if c == u'*' or c == u'(' or c == u')' else
                            u'5' if c == u'\\' else u'0')
            PyUnicode_WRITE(okind, out, j + 2, u'a' if c == u'*' else u'8' if c == u'(' else
                            u'9' if c == u')' else u'c' if c == u'\\' else u'0')
            j += 3
        else:
            PyUnicode_WRITE(okind, out, j, c)
            j += 1
    return result


cpdef str wrap_objectclass(str filt, str objectclass):
    """(&(objectClass=<ldapobjectclass>)<filt>) when configured; the class goes in unescaped."""
    return f"(&(objectClass={objectclass}){filt})" if objectclass else filt


cpdef str address_filter(str address, str objectclass=""):
    """(|(mail=<a>)(mailAlternateAddress=<a>)), escaped and wrapped."""
    cdef str v = escape(address)
    return wrap_objectclass(f"(|(mail={v})(mailAlternateAddress={v}))", objectclass)


cpdef str uid_filter(str uid, str objectclass=""):
    """(uid=<uid>) for POP/IMAP/SMTP-AUTH logins, escaped and wrapped."""
    return wrap_objectclass(f"(uid={escape(uid)})", objectclass)
