"""Chooses between a compiled kernel and its pure-Python twin.

Every compiled module engine._<name>_c (from ext/<name>.pyx or
ext/<name>_build.py) has a twin engine._<name>_py with the same API.
QMAIL_PUREPY=1 forces the twins. QMAIL_REQUIRE_COMPILED=1 (set by
`make test`) turns a missing compiled module into an ImportError instead
of a silent fallback, so CI fails when a kernel did not build.
"""

import importlib
import os




def pure_forced():
    return os.environ.get("QMAIL_PUREPY", "") == "1"


def compiled_required():
    return os.environ.get("QMAIL_REQUIRE_COMPILED", "") == "1"


def load(name):
    """The module to use for kernel `name`: compiled unless forced pure or unavailable."""
    if not pure_forced():
        try:
            return importlib.import_module(f"engine._{name}_c")
        except ImportError:
            if compiled_required():
                raise
    return importlib.import_module(f"engine._{name}_py")


def variants(name):
    """Both twins as {"c": module, "py": module}, for tests that run the same vectors through each.

    The compiled one is left out only when QMAIL_PUREPY=1; otherwise a
    missing compiled module raises, because the tests must cover it.
    """
    found = {"py": importlib.import_module(f"engine._{name}_py")}
    if not pure_forced():
        found["c"] = importlib.import_module(f"engine._{name}_c")
    return found
