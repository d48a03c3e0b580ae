"""Shared fixtures: a fresh single-user QMAILHOME per test, and the twin selector."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support.qmailhome import make_qmailhome  # noqa: E402


@pytest.fixture
def qmailhome(tmp_path, monkeypatch):
    """A complete single-user qmail home (queue, control, users, bin) in a temp dir; QMAILHOME points at it."""
    home = make_qmailhome(str(tmp_path / "qmail"))
    monkeypatch.setenv("QMAILHOME", home)
    return home


@pytest.fixture
def boxes():
    """Mailboxes for test users (real uids, removed afterwards): tests/support/pop3.py."""
    from support.pop3 import Mailboxes
    b = Mailboxes()
    yield b
    b.close()
