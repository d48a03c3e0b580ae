"""Generated qmailUser directories for the benchmarks: N users as LDIF, bulk-loaded into a throwaway slapd.

User i is uid=u<i> with mail user<i>@dom<i % domains>.example and
mailAlternateAddress alias<i>@ the same domain. Where mail is stored is the
caller's choice: bench_ldap.py gives every user a homeDirectory and
./Maildir/; the suite (bench/suite.py) gives no homeDirectory and a
relative mailMessageStore u<i>/, which our server prefixes with
control/ldapmessagestore and Postfix with virtual_mailbox_base, so both
read the same entries and deliver to Maildirs of their own.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from support.slapd import PEOPLE, Slapd, base_ldif, entry_ldif  # noqa: E402

DOMAINS = 50


def domain(i, domains=DOMAINS):
    return f"dom{i % domains}.example"


def address(i, domains=DOMAINS, kind="user"):
    """The mail (kind "user") or mailAlternateAddress (kind "alias") of user i."""
    return f"{kind}{i}@{domain(i, domains)}"


def domains_of(users, domains=DOMAINS):
    """Every domain that some user of range(users) lives in."""
    return sorted({domain(i, domains) for i in range(min(users, domains))})


def user_ldif(i, domains=DOMAINS, home="/home/u{i}", store="./Maildir/", quota=100000000):
    """One qmailUser entry; `home` and `store` are templates formatted with i (home None: no
    homeDirectory; quota None: no mailQuotaSize)."""
    attrs = {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser"],
             "uid": f"u{i}", "cn": f"u{i}", "sn": f"u{i}", "mail": address(i, domains),
             "mailAlternateAddress": address(i, domains, "alias")}
    if home is not None:
        attrs["homeDirectory"] = home.format(i=i)
    attrs.update({"mailMessageStore": store.format(i=i), "qmailUID": 1000 + i % 60000, "qmailGID": 1000})
    if quota is not None:
        attrs["mailQuotaSize"] = quota
    return entry_ldif(f"uid=u{i},{PEOPLE}", attrs)


def write_ldif(path, users, suffix, **kw):
    """The base entries and `users` generated users (user_ldif keywords) in one LDIF file."""
    with open(path, "w") as f:
        f.write(base_ldif(suffix))
        f.writelines(user_ldif(i, **kw) for i in range(users))


def loaded_slapd(directory, users, **kw):
    """A started slapd in `directory` holding `users` generated users, loaded offline with slapadd -q.

    Returns (server, seconds to write the LDIF, seconds slapadd took)."""
    server = Slapd(directory)
    server.setup()
    path = os.path.join(server.directory, "users.ldif")
    t0 = time.monotonic()
    write_ldif(path, users, server.suffix, **kw)
    t1 = time.monotonic()
    server.slapadd(path)
    t2 = time.monotonic()
    server.start()
    return server, t1 - t0, t2 - t1
