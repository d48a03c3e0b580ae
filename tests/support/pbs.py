"""POP-before-SMTP test helpers: a free UDP port, a raw query, the pbsdbd program on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time

from engine import pbs

IP = bytes([127, 0, 0, 1])


def program(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port, ip=IP, timeout=2.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pbs.header(pbs.QUERY, ip) + b"\0", ("127.0.0.1", port))
        return s.recv(pbs.MAX_PACKET)


def start_pbsdbd(home, port):
    """The pbsdbd program on 127.0.0.1, once it answers queries."""
    proc = subprocess.Popen([program("pbsdbd")], stderr=subprocess.PIPE, env={**os.environ, "QMAILHOME": home})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            query(port, timeout=0.2)
            return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
    proc.kill()
    raise AssertionError("pbsdbd did not answer")


def stop(proc):
    proc.terminate()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()
