"""Helpers for tests that point a qmail home at the test slapd: control files and fresh domains."""

import itertools
import os

_seq = itertools.count(1)


def fresh_domain(tag="t"):
    """A domain no other test uses, so tests sharing one slapd stay independent."""
    return f"{tag}{os.getpid()}x{next(_seq)}.example"


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text if text.endswith("\n") or text == "" else text + "\n")


def point_at(home, server, **controls):
    """control/ldapserver + ldapbasedn (+ any other control given as name=text) for `server`."""
    write_control(home, "ldapserver", server.hostport)
    write_control(home, "ldapbasedn", server.suffix)
    for name, text in controls.items():
        write_control(home, name, text)
    return home
