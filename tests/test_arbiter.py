"""The prefork arbiter: respawn with back-off, HUP resize, ALRM routing, BOOT_ERROR, graceful TERM."""

import glob
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

ROLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "arbiter_roles.py")


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def pids(state, role, index="*"):
    return sorted(int(p.rsplit("-", 1)[1]) for p in glob.glob(os.path.join(state, f"pid-{role}-{index}-*")))


@pytest.fixture
def arbiter(tmp_path):
    state = str(tmp_path)
    with open(os.path.join(state, "count"), "w") as f:
        f.write("2")
    procs = []

    def start(stubborn=False, grace=5):
        if stubborn:
            open(os.path.join(state, "stubborn"), "w").close()
        p = subprocess.Popen([sys.executable, ROLES, state], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "GRACE": str(grace)})
        procs.append(p)
        wait_for(lambda: len(pids(state, "sleeper")) == 2 and pids(state, "sender"))
        return p, state

    yield start
    for p in procs:
        if p.poll() is None:
            for child in psutil.Process(p.pid).children(recursive=True):
                child.kill()
            p.kill()
        p.wait()


def test_killed_child_is_respawned_in_its_slot(arbiter):
    p, state = arbiter()
    victim = pids(state, "sleeper", 1)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(pids(state, "sleeper", 1)) == 2)
    assert len(pids(state, "sleeper", 0)) == 1
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert f"alert: sleeper 1 (pid {victim}) killed by signal 9; restarting in 1 s" in out


def test_boot_error_is_not_respawned(arbiter):
    p, state = arbiter()
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert out.count("alert: broken 0") == 1
    assert "could not start; not restarting it" in out


def test_hup_resizes_pool_and_reaches_children(arbiter):
    p, state = arbiter()
    with open(os.path.join(state, "count"), "w") as f:
        f.write("3")
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: pids(state, "sleeper", 2))
    first = pids(state, "sleeper", 0)[0]
    wait_for(lambda: os.path.exists(os.path.join(state, f"hup-{first}")))
    with open(os.path.join(state, "count"), "w") as f:
        f.write("1")
    p.send_signal(signal.SIGHUP)
    retired = pids(state, "sleeper", 2)[0]
    wait_for(lambda: not psutil.pid_exists(retired))
    assert psutil.pid_exists(first)
    time.sleep(1.2)
    assert len(pids(state, "sleeper", 2)) == 1, "a retired slot must not be respawned"


def test_alrm_goes_only_to_the_scheduler(arbiter):
    p, state = arbiter()
    p.send_signal(signal.SIGALRM)
    sender = pids(state, "sender")[0]
    wait_for(lambda: os.path.exists(os.path.join(state, f"alrm-{sender}")))
    assert not glob.glob(os.path.join(state, "alrm-*"))[1:], "only the sender got ALRM"


def test_term_stops_children_then_exits(arbiter):
    p, state = arbiter()
    children = [c.pid for c in psutil.Process(p.pid).children()]
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0
    assert "status: exiting" in out
    for pid in children:
        assert os.path.exists(os.path.join(state, f"term-{pid}"))
        assert not psutil.pid_exists(pid)


def test_child_ignoring_term_is_killed_after_grace(arbiter):
    p, state = arbiter(stubborn=True, grace=0.5)
    wait_for(lambda: pids(state, "stubborn"))
    stubborn = pids(state, "stubborn")[0]
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert f"alert: pid {stubborn} did not stop within 0.5 s; killing it" in out
    assert not psutil.pid_exists(stubborn)
