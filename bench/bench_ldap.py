"""LDAP directory kernels: address lookups/s over one connection against slapd holding
100,000 users (bulk-loaded with slapadd), and filter building ops/s (pure Python).

Run: .venv/bin/python -m pytest bench/bench_ldap.py --benchmark-only
"""

import itertools
import random

import pytest

from directory import DOMAINS, address, loaded_slapd
from engine import qldap

USERS = 100_000


@pytest.fixture(scope="module")
def big_slapd(tmp_path_factory):
    server, write_s, slapadd_s = loaded_slapd(str(tmp_path_factory.mktemp("bench-slapd")), USERS)
    print(f"\n{USERS} users: LDIF written in {write_s:.1f} s, slapadd -q in {slapadd_s:.1f} s")
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
        yield address(rnd.randrange(USERS), DOMAINS, kind)


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
