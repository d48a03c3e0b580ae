"""LDAP directory kernels: address lookups/s over one connection against slapd holding
100,000 users (bulk-loaded with slapadd), and filter building, compiled vs pure twin.

Run: .venv/bin/python -m pytest bench/bench_ldap.py --benchmark-only
"""

import itertools
import random

import pytest

from directory import DOMAINS, address, loaded_slapd
from engine import compiled, qldap

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


FILTER_CASES = {
    "plain": "first-second-third@alias.example",
    "to escape": "first-second-third*(x)@alias.example",
}


@pytest.mark.parametrize("case", sorted(FILTER_CASES))
@pytest.mark.parametrize("twin", sorted(compiled.variants("ldapfilter")))
def test_filter_building(benchmark, speedups, twin, case):
    """The four rounds' filters of a dash-extension address, as Directory.lookup builds them
    when none of the first three rounds matches."""
    k = compiled.variants("ldapfilter")[twin]
    aliasdomains = qldap.control.ConstMap(["alias.example:real.example"], values=True)
    rounds = qldap.mail_rounds(FILTER_CASES[case], aliasdomains)

    filters = benchmark(lambda: [k.address_filter(r.address, "qmailUser") for r in rounds])
    assert len(filters) == 4 and "@real.example" in filters[0]
    assert ("\\2a\\28x\\29" in filters[0]) == (case == "to escape")
    speedups.record(benchmark, f"filters of a 4-round address, {case}", twin,
                    lambda mean: f"{1 / mean:,.0f}/s")
