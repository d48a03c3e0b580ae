"""The session's throwaway slapd (engine/slapd.py) as a pytest fixture, and its helpers for tests."""

import pytest

from engine.slapd import (PEOPLE, QMAIL_SCHEMA, ROOT, ROOTDN, ROOTPW, SLAPD, SUFFIX,
                          SYSTEM_SCHEMA_DIR, Slapd, add_user, base_ldif, entry_ldif, free_port,
                          make_instance, slapd_conf)

__all__ = ["PEOPLE", "QMAIL_SCHEMA", "ROOT", "ROOTDN", "ROOTPW", "SLAPD", "SUFFIX", "SYSTEM_SCHEMA_DIR",
           "Slapd", "add_user", "base_ldif", "entry_ldif", "free_port", "make_instance", "slapd_conf",
           "slapd"]


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    """One slapd for the whole test session (tests use their own domains to stay independent)."""
    server = make_instance(str(tmp_path_factory.mktemp("slapd")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
