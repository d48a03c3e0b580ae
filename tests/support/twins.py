"""Runs a test against the compiled kernel and its pure twin (ids "c" and "py")."""

import pytest

from engine import compiled


def both(name):
    """parametrize(argname="k") over every variant of kernel `name`; a missing compiled one errors."""
    found = compiled.variants(name)
    return pytest.mark.parametrize("k", list(found.values()), ids=list(found.keys()))
