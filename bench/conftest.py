"""Benchmarks share the tests' support package (temporary qmail homes, slapd, servers)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


class Speedups:
    """Mean seconds per round of each kernel's compiled ("c") and pure ("py") twin, for the
    speedup lines a module prints at its end."""

    def __init__(self):
        self.rows = {}

    def record(self, benchmark, what, twin, show):
        """`show(mean)` says one twin's figure in the row's own unit (ns per key, MB/s, ...)."""
        self.rows.setdefault(what, {"show": show})[twin] = benchmark.stats.stats.mean

    def lines(self):
        return [f"{what}: compiled {row['show'](row['c'])}, pure {row['show'](row['py'])}; "
                f"speedup {row['py'] / row['c']:.1f}x"
                for what, row in self.rows.items() if "c" in row and "py" in row]


@pytest.fixture(scope="module")
def speedups(request):
    """A module's Speedups, printed (past pytest's capture) when its last benchmark ran."""
    found = Speedups()
    yield found
    lines = found.lines()
    if lines:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\n" + "\n".join(lines))
