"""tcprules: our compiler matches ucspi-tcp's byte for byte, and lookups follow tcpserver's order."""

import shutil
import subprocess

import pytest

from engine import cdb, tcprules

RULES = b"""# comment
joe@127.0.0.1:deny
127.0.0.1:allow,RELAYCLIENT=""
10.1.:allow,RBL="",X=/a b/
192.168.1.7-9:deny
=mx.example.test:allow,SMTPAUTH=""
=.example.test:allow,NOBOUNCE=""
no colon line is ignored
:allow,LAST=""
"""


def test_same_cdb_as_ucspi_tcp(tmp_path):
    ours, theirs = tmp_path / "ours.cdb", tmp_path / "theirs.cdb"
    tcprules.compile_rules(RULES, str(ours), str(tmp_path / "ours.tmp"))
    subprocess.run([shutil.which("tcprules"), str(theirs), str(tmp_path / "theirs.tmp")], input=RULES, check=True)
    dump = lambda p: subprocess.run(["cdb", "-d", str(p)], capture_output=True, check=True).stdout  # noqa: E731
    assert dump(ours) == dump(theirs)


@pytest.mark.parametrize("line", [b"1.2.3.4:frob", b"1.2.3.4:allow,FOO", b'1.2.3.4:allow,A="b', b"1.2.3.4:allow ,A=/b/"])
def test_bad_lines_are_refused_like_tcprules(line):
    with pytest.raises(tcprules.RuleError, match="unable to parse this line"):
        tcprules.parse_rules(line + b"\n")


def test_lookup_order(tmp_path):
    path = tmp_path / "r.cdb"
    tcprules.compile_rules(RULES, str(path), str(tmp_path / "r.tmp"))
    with cdb.Cdb(str(path)) as r:
        assert tcprules.lookup(r, "127.0.0.1").env == {"RELAYCLIENT": ""}
        assert not tcprules.lookup(r, "127.0.0.1", info="joe").allow
        assert tcprules.lookup(r, "10.1.2.3").env == {"RBL": "", "X": "a b"}
        assert not tcprules.lookup(r, "192.168.1.8").allow and tcprules.lookup(r, "192.168.1.10").allow
        assert tcprules.lookup(r, "8.8.8.8", host="mx.example.test").env == {"SMTPAUTH": ""}
        assert tcprules.lookup(r, "8.8.8.8", host="a.b.example.test").env == {"NOBOUNCE": ""}
        d = tcprules.lookup(r, "8.8.8.8")
        assert d.allow and d.env == {"LAST": ""} and d.rule == b""
