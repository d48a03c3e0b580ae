"""engine.cdb: the hash/lookup twins, the writer, interoperation with tinycdb, and the qmail-cdb program."""

import io
import os
import shutil
import stat
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cdb
from engine import compiled
from support.twins import both

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINYCDB = shutil.which("cdb")
if TINYCDB is None:
    pytest.fail("tinycdb's `cdb` is missing (Debian package tinycdb)", pytrace=False)


def reference_hash(key):
    h = 5381
    for c in key:
        h = ((h * 33) % 2**32) ^ c
    return h


def cdb_bytes(items):
    f = io.BytesIO()
    maker = cdb.CdbMaker(f)
    for k, v in items:
        maker.add(k, v)
    maker.finish()
    return f.getvalue()


def tinycdb_make(path, items):
    """`cdb -c` from tinycdb builds the file from +klen,dlen:key->data records."""
    records = b"".join(b"+%d,%d:%s->%s\n" % (len(k), len(v), k, v) for k, v in items) + b"\n"
    subprocess.run([TINYCDB, "-c", "-t", str(path) + ".tmp", str(path)], input=records, check=True)


# --- the twins ------------------------------------------------------------------------------

@both("cdb")
@pytest.mark.parametrize("key, value", [
    (b"", 5381), (b"a", 177604), (b"ab", reference_hash(b"ab")), (b"\xff" * 40, reference_hash(b"\xff" * 40)),
    (b"example.com", reference_hash(b"example.com"))])
def test_hash_vectors(k, key, value):
    assert k.hash(key) == value


@both("cdb")
def test_hash_wants_bytes(k):
    with pytest.raises(TypeError):
        k.hash("text")


@both("cdb")
def test_find_first_and_all_values_in_order(k):
    buf = cdb_bytes([(b"k", b"1"), (b"other", b"x"), (b"k", b"2"), (b"", b"empty key"), (b"k", b"3")])
    assert k.find(buf, b"k") == b"1"
    assert k.find_all(buf, b"k") == [b"1", b"2", b"3"]
    assert k.find(buf, b"") == b"empty key"
    assert k.find(buf, b"K") is None
    assert k.find_all(buf, b"missing") == []


@both("cdb")
def test_empty_database(k):
    buf = cdb_bytes([])
    assert len(buf) == 2048
    assert k.find(buf, b"anything") is None


@both("cdb")
@pytest.mark.parametrize("cut", [0, 100, 2047, 2048 + 8, -1, -9])
def test_truncated_file_raises_value_error(k, cut):
    buf = cdb_bytes([(b"key", b"value"), (b"key2", b"value2")])
    # each cut breaks the table the key hashes to, or the record it points at
    with pytest.raises(ValueError, match="bad cdb format"):
        for key in (b"key", b"key2"):
            k.find_all(buf[:cut], key)


@both("cdb")
def test_reads_a_tinycdb_file(k, tmp_path):
    items = [(b"example.com", b""), (b"dup", b"one"), (b"dup", b"two"), (b"\x00bin\xff", b"\x00" * 300)]
    tinycdb_make(tmp_path / "t.cdb", items)
    buf = (tmp_path / "t.cdb").read_bytes()
    assert k.find(buf, b"example.com") == b""
    assert k.find_all(buf, b"dup") == [b"one", b"two"]
    assert k.find(buf, b"\x00bin\xff") == b"\x00" * 300


keys = st.binary(max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(keys, st.binary(max_size=8)), max_size=40), probes=st.lists(keys, max_size=10))
def test_twins_agree_with_each_other_and_with_a_dict(items, probes):
    variants = compiled.variants("cdb")
    buf = cdb_bytes(items)
    expected = {}
    for key, val in items:
        expected.setdefault(key, []).append(val)
    for key in [k for k, _ in items] + probes:
        answers = [(m.find(buf, key), m.find_all(buf, key), m.hash(key)) for m in variants.values()]
        assert all(a == answers[0] for a in answers)
        assert answers[0][1] == expected.get(key, [])


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as e:
        return ("ValueError", str(e))


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=2100), key=keys)
def test_twins_agree_on_garbage(buf, key):
    variants = list(compiled.variants("cdb").values())
    for fn in ("find", "find_all"):
        outcomes = [_outcome(getattr(m, fn), buf, key) for m in variants]
        assert all(o == outcomes[0] for o in outcomes)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(keys, st.binary(max_size=8)), min_size=1, max_size=20), data=st.data())
def test_twins_agree_on_damaged_databases(items, data):
    buf = bytearray(cdb_bytes(items))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    buf = bytes(buf)
    variants = list(compiled.variants("cdb").values())
    for key, _ in items:
        outcomes = [_outcome(m.find_all, buf, key) for m in variants]
        assert all(o == outcomes[0] for o in outcomes)


# --- the module: files, writer, tinycdb interoperation --------------------------------------

def test_written_file_is_byte_identical_to_tinycdb(tmp_path):
    items = [(b"k%d" % i, b"v" * (i % 7)) for i in range(500)] + [(b"k1", b"again")]
    tinycdb_make(tmp_path / "ref.cdb", items)
    cdb.create(str(tmp_path / "ours.cdb"), items)
    assert (tmp_path / "ours.cdb").read_bytes() == (tmp_path / "ref.cdb").read_bytes()


def test_tinycdb_reads_ours(tmp_path):
    path = str(tmp_path / "ours.cdb")
    cdb.create(path, [("Example.COM", ""), ("dup", "a"), ("dup", "b"), (b"bin\x00", b"\xff\x00")])
    q = subprocess.run([TINYCDB, "-q", "-m", path, "Example.COM"], capture_output=True)
    assert q.returncode == 0 and q.stdout == b"\n"
    q = subprocess.run([TINYCDB, "-q", "-n", "2", path, "dup"], capture_output=True)
    assert q.returncode == 0 and q.stdout == b"b"
    assert subprocess.run([TINYCDB, "-q", path, "example.com"], capture_output=True).returncode == 100
    dump = subprocess.run([TINYCDB, "-d", path], capture_output=True, check=True).stdout
    assert dump == b"+11,0:Example.COM->\n+3,1:dup->a\n+3,1:dup->b\n+4,2:bin\x00->\xff\x00\n\n"


def test_cdb_class_get_contains_items(tmp_path):
    path = str(tmp_path / "t.cdb")
    tinycdb_make(path, [(b"one", b"1"), (b"two", b"2"), (b"one", b"uno")])
    with cdb.Cdb(path) as db:
        assert db.get("one") == b"1" and db.get(b"two") == b"2"
        assert db.get("three", b"none") == b"none"
        assert db.get_all("one") == [b"1", b"uno"]
        assert "two" in db and "TWO" not in db
        assert list(db.items()) == [(b"one", b"1"), (b"two", b"2"), (b"one", b"uno")]
    assert cdb.contains(path, b"two") and not cdb.contains(path, "four")
    assert cdb.get(path, "one") == b"1"


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        cdb.contains(str(tmp_path / "nope.cdb"), b"x")


@pytest.mark.parametrize("data", [b"", b"\0" * 100, b"\xff" * 2048])
def test_damaged_file_is_a_cdb_error(tmp_path, data):
    path = tmp_path / "bad.cdb"
    path.write_bytes(data)
    with pytest.raises(cdb.CdbError, match="bad cdb format") as e:
        cdb.contains(str(path), b"x")
    assert isinstance(e.value, OSError) and e.value.filename == str(path)


def test_create_replaces_atomically_and_leaves_no_tmp(tmp_path):
    path = str(tmp_path / "t.cdb")
    cdb.create(path, [(b"old", b"")])
    with cdb.Cdb(path) as before:
        cdb.create(path, [(b"new", b"")])
        assert "old" in before and "new" not in before   # an open reader keeps the old file
    assert cdb.contains(path, b"new") and not cdb.contains(path, b"old")
    assert os.listdir(tmp_path) == ["t.cdb"]


# --- qmail-cdb ------------------------------------------------------------------------------

def qmail_cdb(args, stdin=b"", cwd=None):
    return subprocess.run([sys.executable, "-m", "engine.cdb"] + args, input=stdin, capture_output=True,
                          cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT))


def test_qmail_cdb_builds_lowercased_keys(tmp_path):
    lines = b"Example.COM \t\n#comment\n\n   \nOther.Org\r\n  lead\nexample.com\nlast"
    r = qmail_cdb(["out.cdb", "out.tmp"], lines, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dump = subprocess.run([TINYCDB, "-d", str(tmp_path / "out.cdb")], capture_output=True, check=True).stdout
    assert dump == (b"+11,0:example.com->\n+10,0:other.org\r->\n+6,0:  lead->\n"
                    b"+11,0:example.com->\n+4,0:last->\n\n")
    assert stat.S_IMODE(os.stat(tmp_path / "out.cdb").st_mode) == 0o644
    assert not (tmp_path / "out.tmp").exists()


def test_qmail_cdb_usage(tmp_path):
    r = qmail_cdb(["only-one"], cwd=tmp_path)
    assert r.returncode == 111
    assert b"qmail-cdb: usage: qmail-cdb rules.cdb rules.tmp" in r.stderr


def test_qmail_cdb_cannot_write(tmp_path):
    r = qmail_cdb(["out.cdb", "nodir/out.tmp"], b"a\n", cwd=tmp_path)
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-cdb: fatal: unable to write to nodir/out.tmp: ")
    assert not (tmp_path / "out.cdb").exists()


def test_qmail_cdb_cannot_move(tmp_path):
    (tmp_path / "out.cdb").mkdir()
    (tmp_path / "out.cdb" / "keep").write_text("x")
    r = qmail_cdb(["out.cdb", "out.tmp"], b"a\n", cwd=tmp_path)
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-cdb: fatal: unable to move out.tmp to out.cdb: ")
