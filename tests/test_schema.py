"""engine/schema/qmail.schema and qmail.ldif: OIDs as in qmail-ldap, loadable by slapd.conf
(slaptest) and into cn=schema,cn=config of a running cn=config slapd (ldapadd)."""

import os
import re
import subprocess
import time

import ldap
import pytest

from support.slapd import QMAIL_SCHEMA, ROOT, SLAPD, SYSTEM_SCHEMA_DIR, free_port, slapd_conf

LDIF = os.path.join(ROOT, "engine", "schema", "qmail.ldif")
P = "1.3.6.1.4.1.7914."
# spec 3.1: OID suffix -> name
ATTRS = {
    "1.2.1.1": "qmailUID", "1.2.1.2": "qmailGID", "1.2.1.3": "mailMessageStore",
    "1.2.1.4": "mailAlternateAddress", "1.2.1.6": "mailHost", "1.2.1.7": "mailForwardingAddress",
    "1.2.1.8": "deliveryProgramPath", "1.2.1.9": "qmailDotMode", "1.2.1.10": "deliveryMode",
    "1.2.1.11": "mailReplyText", "1.2.1.12": "accountStatus", "1.2.1.14": "qmailAccountPurge",
    "1.2.1.15": "mailQuotaSize", "1.2.1.16": "mailQuotaCount", "1.2.1.17": "mailSizeMax",
    "1.3.1.1": "dnmember", "1.3.1.2": "rfc822member", "1.3.1.3": "filtermember",
    "1.3.1.4": "senderconfirm", "1.3.1.5": "membersonly", "1.3.1.6": "confirmtext",
    "1.3.1.7": "dnmoderator", "1.3.1.8": "rfc822moderator", "1.3.1.9": "moderatortext",
    "1.3.1.10": "dnsender", "1.3.1.11": "rfc822sender", "1.3.1.12": "filtersender",
    "1.3.1.13": "bounceadmin",
}
CLASSES = {"1.2.2.1": "qmailUser", "1.3.2.1": "qmailGroup", "1.4.2.1": "qldapAdmin"}
SINGLE = {"qmailUID", "qmailGID", "mailMessageStore", "mailHost", "qmailDotMode", "mailReplyText",
          "accountStatus", "qmailAccountPurge", "mailQuotaSize", "mailQuotaCount", "mailSizeMax",
          "senderconfirm", "membersonly", "confirmtext", "moderatortext"}


def definitions(text):
    """{name: definition text} of every attributetype/objectclass in schema-file text."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found = re.findall(r"(?:attributetype|objectclass)\s+(\(.*?\))\s*(?=attributetype|objectclass|\Z)",
                       body, re.S | re.I)
    return {re.search(r"NAME '([^']+)'", d).group(1): " ".join(d.split()) for d in found}


def test_oids_names_and_single_value_as_in_qmail_ldap():
    defs = definitions(open(QMAIL_SCHEMA).read())
    for suffix, name in {**ATTRS, **CLASSES}.items():
        assert defs[name].startswith(f"( {P}{suffix} NAME '{name}'"), name
    for name in ATTRS.values():
        assert ("SINGLE-VALUE" in defs[name]) == (name in SINGLE), name
    assert "AUXILIARY MUST ( mail ) MAY ( uid $ mailMessageStore $ homeDirectory $ userPassword" \
        in defs["qmailUser"]
    assert "MUST ( mail $ mailAlternateAddress $ mailMessageStore )" in defs["qmailGroup"]
    assert "EQUALITY caseIgnoreIA5Match" in defs["mailAlternateAddress"]
    assert "EQUALITY caseExactIA5Match" in defs["mailMessageStore"]


def test_ldif_has_the_same_definitions():
    text = open(LDIF).read()
    assert "dn: cn=qmail,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: qmail\n" in text
    unfolded = re.sub(r"\n ", "", text)
    ldif_defs = {}
    for line in unfolded.splitlines():
        m = re.match(r"olc(?:AttributeTypes|ObjectClasses): (.*)", line)
        if m:
            d = " ".join(m.group(1).split())
            ldif_defs[re.search(r"NAME '([^']+)'", d).group(1)] = d
    assert ldif_defs == definitions(open(QMAIL_SCHEMA).read())


def test_slaptest_accepts_slapd_conf(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text(slapd_conf(str(tmp_path)))
    (tmp_path / "data").mkdir()
    r = subprocess.run(["slaptest", "-u", "-f", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "config file testing succeeded" in r.stderr


def test_slaptest_rejects_a_broken_schema(tmp_path):
    broken = tmp_path / "broken.schema"
    broken.write_text(open(QMAIL_SCHEMA).read().replace("integerMatch", "noSuchMatch", 1))
    conf = tmp_path / "slapd.conf"
    conf.write_text(slapd_conf(str(tmp_path)).replace(QMAIL_SCHEMA, str(broken)))
    (tmp_path / "data").mkdir()
    r = subprocess.run(["slaptest", "-u", "-f", str(conf)], capture_output=True, text=True)
    assert r.returncode != 0


CONFIG_LDIF = """dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {t}/slapd.pid

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://{d}/core.ldif

include: file://{d}/cosine.ldif

include: file://{d}/nis.ldif

include: file://{d}/inetorgperson.ldif

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: cn=config
olcRootPW: cfgsecret

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: dc=example,dc=org
olcRootDN: cn=admin,dc=example,dc=org
olcRootPW: secret
olcDbDirectory: {t}/data
"""


def wait_bind(url, dn, pw, proc):
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, "slapd -F exited"
        try:
            c = ldap.initialize(url)
            c.simple_bind_s(dn, pw)
            return c
        except ldap.SERVER_DOWN:
            assert time.monotonic() < deadline, "slapd -F does not answer"
            time.sleep(0.02)


@pytest.fixture
def config_slapd(tmp_path):
    """A cn=config (slapd -F) instance with the Debian schemas but not ours."""
    (tmp_path / "data").mkdir()
    (tmp_path / "slapd.d").mkdir()
    ldif = tmp_path / "config.ldif"
    ldif.write_text(CONFIG_LDIF.format(d=SYSTEM_SCHEMA_DIR, t=tmp_path))
    subprocess.run(["slapadd", "-n0", "-F", str(tmp_path / "slapd.d"), "-l", str(ldif)],
                   check=True, capture_output=True)
    url = f"ldap://127.0.0.1:{free_port()}/"
    proc = subprocess.Popen([SLAPD, "-d", "0", "-F", str(tmp_path / "slapd.d"), "-h", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield url, wait_bind(url, "cn=config", "cfgsecret", proc)
    finally:
        proc.terminate()
        proc.wait(10)


def test_ldif_loads_into_cn_config(config_slapd):
    url, c = config_slapd
    r = subprocess.run(["ldapadd", "-x", "-H", url, "-D", "cn=config", "-w", "cfgsecret", "-f", LDIF],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    found = c.search_s("cn=schema,cn=config", ldap.SCOPE_ONELEVEL, "(cn=*qmail)",
                       ["olcAttributeTypes", "olcObjectClasses"])
    assert len(found) == 1
    _, attrs = found[0]
    assert len(attrs["olcAttributeTypes"]) == len(ATTRS) + 10 and len(attrs["olcObjectClasses"]) == 3
    # and the new classes are usable at once
    admin = ldap.initialize(url)
    admin.simple_bind_s("cn=admin,dc=example,dc=org", "secret")
    admin.add_s("dc=example,dc=org", [("objectClass", [b"dcObject", b"organization"]),
                                      ("dc", [b"example"]), ("o", [b"example"])])
    admin.add_s("uid=joe,dc=example,dc=org", [
        ("objectClass", [b"inetOrgPerson", b"qmailUser"]), ("uid", [b"joe"]), ("cn", [b"joe"]),
        ("sn", [b"joe"]), ("mail", [b"joe@example.org"]), ("qmailUID", [b"1000"]),
        ("accountStatus", [b"active"])])
    got = admin.search_s("dc=example,dc=org", ldap.SCOPE_SUBTREE, "(mail=JOE@example.org)", ["qmailUID"])
    assert got[0][1]["qmailUID"] == [b"1000"]
