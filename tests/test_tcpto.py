"""queue/lock/tcpto (engine.tcpto) with tcpto.c's rules and byte layout, qmail-tcpto and qmail-tcpok as programs."""

import os
import subprocess
import sys
import time

from engine import tcpto

PY = sys.executable
NOW = 1_800_000_000


def table_bytes(home):
    with open(tcpto.table_path(home), "rb") as f:
        return f.read()


def put_record(home, index, ip, count, when):
    rec = bytes(int(x) for x in ip.split(".")) + bytes([count, 0, 0, 0]) + when.to_bytes(4, "little") + bytes(4)
    with open(tcpto.table_path(home), "r+b") as f:
        f.seek(index * 16)
        f.write(rec)


def test_first_timeout_written_in_qmail_layout(qmailhome):
    tcpto.report("192.0.2.7", True, False, qmailhome, now=NOW)
    data = table_bytes(qmailhome)
    assert len(data) == 1024
    assert data[:16] == bytes([192, 0, 2, 7, 1, 0, 0, 0]) + NOW.to_bytes(4, "little") + bytes(4)
    assert data[16:] == bytes(1008)


def test_one_timeout_does_not_make_a_host_dead(qmailhome):
    tcpto.report("192.0.2.7", True, False, qmailhome, now=NOW)
    assert tcpto.check("192.0.2.7", qmailhome, now=NOW + 1) == (False, True)
    assert tcpto.check("192.0.2.8", qmailhome, now=NOW + 1) == (False, False)


def test_second_timeout_counts_only_after_two_minutes(qmailhome):
    tcpto.report("192.0.2.7", True, False, qmailhome, now=NOW)
    tcpto.report("192.0.2.7", True, True, qmailhome, now=NOW + 119)
    assert table_bytes(qmailhome)[4] == 1
    tcpto.report("192.0.2.7", True, True, qmailhome, now=NOW + 120)
    assert table_bytes(qmailhome)[4] == 2
    assert int.from_bytes(table_bytes(qmailhome)[8:12], "little") == NOW + 120


def test_dead_for_about_an_hour_depending_on_pid(qmailhome):
    put_record(qmailhome, 0, "192.0.2.7", 2, NOW)
    assert tcpto.check("192.0.2.7", qmailhome, now=NOW + 3839, pid=0) == (True, True)
    assert tcpto.check("192.0.2.7", qmailhome, now=NOW + 3840, pid=0) == (False, True)
    assert tcpto.check("192.0.2.7", qmailhome, now=NOW + 5823, pid=31) == (True, True)
    assert tcpto.check("192.0.2.7", qmailhome, now=NOW + 5824, pid=31) == (False, True)


def test_count_capped_at_ten(qmailhome):
    for i in range(15):
        tcpto.report("192.0.2.7", True, i > 0, qmailhome, now=NOW + 200 * i)
    assert table_bytes(qmailhome)[4] == 10


def test_success_resets_only_a_known_host(qmailhome):
    put_record(qmailhome, 3, "192.0.2.7", 5, NOW)
    before = table_bytes(qmailhome)
    tcpto.report("192.0.2.7", False, False, qmailhome, now=NOW)  # not seen by check(): nothing to do
    assert table_bytes(qmailhome) == before
    tcpto.report("192.0.2.7", False, True, qmailhome, now=NOW)
    assert table_bytes(qmailhome)[3 * 16 + 4] == 0
    assert table_bytes(qmailhome)[3 * 16:3 * 16 + 4] == bytes([192, 0, 2, 7])


def test_full_table_replaces_the_stalest_record(qmailhome):
    for i in range(64):
        put_record(qmailhome, i, f"198.51.100.{i}", 1 + (i % 3), NOW + i)
    put_record(qmailhome, 40, "198.51.100.40", 1, NOW - 5000)  # the oldest when+count*1024
    tcpto.report("203.0.113.9", True, False, qmailhome, now=NOW + 100)
    data = table_bytes(qmailhome)
    assert data[40 * 16:40 * 16 + 5] == bytes([203, 0, 113, 9, 1])
    assert [e[0] for e in tcpto.entries(qmailhome)].count("203.0.113.9") == 1


def test_ipv6_addresses_are_not_recorded(qmailhome):
    tcpto.report("2001:db8::1", True, False, qmailhome, now=NOW)
    assert table_bytes(qmailhome) == bytes(1024)
    assert tcpto.check("2001:db8::1", qmailhome) == (False, False)


def test_missing_table_means_no_memory(qmailhome):
    os.unlink(tcpto.table_path(qmailhome))
    tcpto.report("192.0.2.7", True, False, qmailhome)
    assert tcpto.check("192.0.2.7", qmailhome) == (False, False)
    assert not os.path.exists(tcpto.table_path(qmailhome))


def test_qmail_tcpto_prints_the_table(qmailhome):
    now = int(time.time())
    put_record(qmailhome, 0, "192.0.2.7", 2, now - 30)
    put_record(qmailhome, 1, "192.0.2.8", 0, now - 30)  # reset by a success: not shown
    put_record(qmailhome, 5, "198.51.100.1", 10, now - 4000)
    out = subprocess.run([PY, "-m", "engine.tcpto"], capture_output=True, check=True).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("192.0.2.7 timed out 3") and lines[0].endswith(" seconds ago; # recent timeouts: 2")
    assert lines[1].startswith("198.51.100.1 timed out 40") and lines[1].endswith("; # recent timeouts: 10")


def test_qmail_tcpto_empty_and_errors(qmailhome, tmp_path, monkeypatch):
    p = subprocess.run([PY, "-m", "engine.tcpto"], capture_output=True)
    assert (p.returncode, p.stdout) == (0, b"")
    os.unlink(tcpto.table_path(qmailhome))
    p = subprocess.run([PY, "-m", "engine.tcpto"], capture_output=True)
    assert (p.returncode, p.stdout) == (111, b"fatal: unable to open tcpto: file does not exist\n")
    monkeypatch.setenv("QMAILHOME", str(tmp_path / "nowhere"))
    p = subprocess.run([PY, "-m", "engine.tcpto"], capture_output=True)
    assert (p.returncode, p.stdout) == (111, b"fatal: unable to chdir: file does not exist\n")


def test_qmail_tcpok_clears(qmailhome):
    for i in range(5):
        put_record(qmailhome, i, f"192.0.2.{i}", 3, NOW)
    p = subprocess.run([PY, "-m", "engine.tcpok"], capture_output=True)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    assert table_bytes(qmailhome) == bytes(1024)


def test_qmail_tcpok_errors(qmailhome, tmp_path, monkeypatch):
    os.unlink(tcpto.table_path(qmailhome))
    p = subprocess.run([PY, "-m", "engine.tcpok"], capture_output=True)
    assert p.returncode == 111
    assert p.stderr == f"qmail-tcpok: fatal: unable to write {qmailhome}/queue/lock/tcpto: file does not exist\n".encode()
    missing = str(tmp_path / "nowhere")
    monkeypatch.setenv("QMAILHOME", missing)
    p = subprocess.run([PY, "-m", "engine.tcpok"], capture_output=True)
    assert p.stderr == f"qmail-tcpok: fatal: unable to chdir to {missing}: file does not exist\n".encode()
