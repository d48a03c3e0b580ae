"""LDAP directory kernels: address lookups/s over one connection against slapd holding
100,000 users (bulk-loaded with slapadd), and filter building ops/s (pure Python).

Run: .venv/bin/python -m pytest bench/bench_ldap.py --benchmark-only
"""

import itertools
import os
import random
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from engine import qldap  # noqa: E402
from support.slapd import PEOPLE, Slapd, base_ldif, entry_ldif  # noqa: E402

USERS = 100_000
DOMAINS = 50


def user_ldif(i):
    dom = f"dom{i % DOMAINS}.example"
    return entry_ldif(f"uid=u{i},{PEOPLE}", {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser"],
        "uid": f"u{i}", "cn": f"u{i}", "sn": f"u{i}", "mail": f"user{i}@{dom}",
        "mailAlternateAddress": f"alias{i}@{dom}", "homeDirectory": f"/home/u{i}",
        "mailMessageStore": "./Maildir/", "qmailUID": 1000 + i % 60000, "qmailGID": 1000,
        "mailQuotaSize": 100000000})


@pytest.fixture(scope="module")
def big_slapd(tmp_path_factory):
    server = Slapd(str(tmp_path_factory.mktemp("bench-slapd")))
    server.setup()
    path = os.path.join(server.directory, "users.ldif")
    t0 = time.monotonic()
    with open(path, "w") as f:
        f.write(base_ldif(server.suffix))
        f.writelines(user_ldif(i) for i in range(USERS))
    t1 = time.monotonic()
    server.slapadd(path)
    t2 = time.monotonic()
    print(f"\n{USERS} users: LDIF written in {t1 - t0:.1f} s, slapadd -q in {t2 - t1:.1f} s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def directory(big_slapd):
    cfg = qldap.Config(servers=[big_slapd.hostport], basedn=big_slapd.suffix)
    d = qldap.Directory(cfg)
    yield d
    d.close()


def addresses(kind):
    rnd = random.Random(7)
    while True:
        i = rnd.randrange(USERS)
        yield f"{kind}{i}@dom{i % DOMAINS}.example"


def test_lookup_exact_mail(benchmark, directory):
    it = addresses("user")
    result = benchmark(lambda: directory.lookup(next(it)))
    assert result is not None and result[1].exact


def test_lookup_alternate_address(benchmark, directory):
    it = addresses("alias")
    result = benchmark(lambda: directory.lookup(next(it)))
    assert result is not None


def test_lookup_miss_all_rounds(benchmark, directory):
    """An unknown a-b-c@domain: four rounds, all empty."""
    n = itertools.count()
    result = benchmark(lambda: directory.lookup(f"no-such-{next(n)}@dom1.example"))
    assert result is None


def test_lookup_and_resolve(benchmark, directory):
    it = addresses("user")
    cfg = directory.cfg

    def kernel():
        address = next(it)
        entry, rnd = directory.lookup(address)
        return qldap.resolve(entry, cfg, address, rnd).local_env()
    env = benchmark(kernel)
    assert env["MAILDIRQUOTA"] == "100000000S"


def test_filter_building(benchmark):
    aliasdomains = qldap.control.ConstMap(["alias.example:real.example"], values=True)

    def kernel():
        return [qldap.address_filter(r.address, "qmailUser")
                for r in qldap.mail_rounds("first-second-third*(x)@ALIAS.example", aliasdomains)]
    filters = benchmark(kernel)
    assert len(filters) == 4 and "\\2a\\28x\\29" in filters[0]
