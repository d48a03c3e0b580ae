"""Shared connection limits across forked workers: total, per IP, and crash cleanup."""

import os

from engine.connlimit import ConnLimits


def test_total_and_per_ip_limits_across_rows():
    lim = ConnLimits(workers=2, total=3, per_ip=2)
    assert lim.acquire(0, "127.0.0.1") and lim.acquire(1, "127.0.0.1")
    assert not lim.acquire(0, "127.0.0.1"), "third connection from one IP"
    assert lim.acquire(1, "::1")
    assert not lim.acquire(0, "127.0.0.2"), "total limit"
    lim.release(1, "::1")
    assert lim.acquire(0, "127.0.0.2")
    assert lim.count("127.0.0.1") == 2 and lim.total() == 3


def test_reset_row_frees_a_dead_workers_connections():
    lim = ConnLimits(workers=2, total=0, per_ip=1)
    assert lim.acquire(1, "10.0.0.1")
    assert not lim.acquire(0, "10.0.0.1")
    lim.reset_row(1)
    assert lim.acquire(0, "10.0.0.1")


def test_counts_are_shared_with_forked_children():
    lim = ConnLimits(workers=2, total=0, per_ip=5)
    pid = os.fork()
    if pid == 0:
        ok = all(lim.acquire(1, "192.0.2.7") for _ in range(3))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert lim.count("192.0.2.7") == 3
    assert lim.acquire(0, "192.0.2.7") and lim.acquire(0, "192.0.2.7")
    assert not lim.acquire(0, "192.0.2.7")


def test_many_addresses_reuse_released_entries():
    lim = ConnLimits(workers=1, total=0, per_ip=1, slots=8)
    for i in range(50):
        ip = f"198.51.100.{i}"
        assert lim.acquire(0, ip)
        lim.release(0, ip)
    assert lim.total() == 0
