"""Queue scanning kernel: the compiled and the pure twin on the same vectors, and hypothesis comparing them."""

import os

from hypothesis import given, settings, strategies as st

from engine import _queuescan_py as pure
from engine import compiled, hier, queue
from support.twins import both

TWINS = compiled.variants("queuescan")


@both("queuescan")
def test_scan_split_and_todo_find_queued_ids(k, qmailhome):
    q = os.path.join(qmailhome, "queue")
    ids = {queue.enqueue(b"x\n", b"a@b", [b"c@d"], home=qmailhome) for _ in range(30)}
    assert set(k.scan_todo(q)) == ids == set(k.scan_split(q, "mess"))
    assert len(k.scan_todo(q)) == 30
    assert k.scan_split(q, "info") == [] and k.scan_split(q, "intd") == []


@both("queuescan")
def test_only_all_digit_names_are_ids(k, qmailhome):
    q = os.path.join(qmailhome, "queue")
    for name in ("notanumber", "12a", "+5", "-1", " 7", "1" * 20, "00042", "9" * 19, "٣"):
        open(os.path.join(q, "todo", "3", name), "w").close()
    assert sorted(k.scan_todo(q)) == [42, int("9" * 19)]


@both("queuescan")
def test_subdirectories_in_order_and_bytes_paths(k, qmailhome):
    q = os.path.join(qmailhome, "queue")
    for msgid in (46, 1, 24, 5):  # subdirectories 0, 1, 1, 5
        open(hier.queue_file(q, "local", msgid), "w").close()
    got = k.scan_split(os.fsencode(q), b"local")
    assert got[0] == 46 and sorted(got[1:3]) == [1, 24] and got[3] == 5
    assert k.scan_split(q, "local", 2) == got[:3]


@both("queuescan")
def test_missing_directory_is_an_oserror(k, tmp_path):
    for call in (lambda: k.scan_dir(str(tmp_path / "nope")), lambda: k.scan_split(str(tmp_path), "todo")):
        try:
            call()
        except FileNotFoundError as e:
            assert e.filename.startswith(str(tmp_path))
        else:
            raise AssertionError("no error for a missing directory")


@both("queuescan")
def test_parse_records(k):
    assert k.parse_records(b"") == []
    assert k.parse_records(b"u0\0p12\0Fa@b\0Tc@d\0Te@f\0") == [b"u0", b"p12", b"Fa@b", b"Tc@d", b"Te@f"]
    assert k.parse_records(b"Tc@d\0Dx@y\0Tunterminated") == [b"Tc@d", b"Dx@y"]
    assert k.parse_records(b"F\0\0") == [b"F", b""]
    assert k.parse_records(bytearray(b"Fa\0")) == [b"Fa"] == k.parse_records(memoryview(b"Fa\0"))
    assert k.parse_records(b"T\xff\xfe\0") == [b"T\xff\xfe"]


@both("queuescan")
def test_read_records_of_a_queued_envelope(k, qmailhome):
    q = os.path.join(qmailhome, "queue")
    msgid = queue.enqueue(b"x\n", b"s@x", [b"r1@y", b"r2@z"], home=qmailhome)
    assert k.read_records(hier.queue_file(q, "todo", msgid)) == \
        [b"u%d" % os.getuid(), b"p%d" % os.getpid(), b"Fs@x", b"Tr1@y", b"Tr2@z"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.lists(st.sampled_from([b"\0", b"T", b"F", b"a@b", b"\xff"])).map(b"".join))
def test_twins_agree_on_records(data):
    expect = pure.parse_records(data)
    assert b"\0".join(expect) + (b"\0" if expect else b"") == data[:data.rfind(b"\0") + 1]
    for k in TWINS.values():
        assert k.parse_records(data) == expect


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ab.", min_size=1, max_size=22).filter(lambda n: n not in (".", "..")),
                max_size=30, unique=True))
def test_twins_agree_on_names(tmp_path_factory, names):
    d = tmp_path_factory.mktemp("scan")
    for n in names:
        open(d / n, "w").close()
    expect = sorted(pure.scan_dir(str(d)))
    assert expect == sorted(int(n) for n in names if n.isdigit() and len(n) <= 19)
    for k in TWINS.values():
        assert sorted(k.scan_dir(str(d))) == expect


@both("queuescan")
def test_read_records_of_big_files_and_errors(k, tmp_path):
    big = b"".join(b"Tuser%05d@example.org\0" % i for i in range(5000)) + b"Tcut"  # ~110 KB, many reads
    (tmp_path / "big").write_bytes(big)
    assert k.read_records(str(tmp_path / "big")) == pure.parse_records(big) and len(pure.parse_records(big)) == 5000
    (tmp_path / "empty").write_bytes(b"")
    assert k.read_records(tmp_path / "empty") == []
    for path, error in ((tmp_path / "missing", FileNotFoundError), (tmp_path, IsADirectoryError)):
        try:
            k.read_records(str(path))
        except error:
            continue
        raise AssertionError(f"no {error.__name__} for {path}")
