"""Every kernel under ext/ was compiled and is the one in use, and has a pure twin."""

import glob
import importlib
import os

import pytest

from engine import compiled

EXT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ext")


def kernel_names():
    names = [os.path.basename(p)[:-4] for p in glob.glob(os.path.join(EXT, "*.pyx"))]
    names += [os.path.basename(p)[:-len("_build.py")] for p in glob.glob(os.path.join(EXT, "*_build.py"))]
    return sorted(names)


def test_there_are_kernels():
    assert kernel_names(), "ext/ holds no compiled kernels"


@pytest.mark.parametrize("name", kernel_names())
def test_compiled_kernel_is_in_use(name):
    if compiled.pure_forced():
        pytest.fail("QMAIL_PUREPY=1 is set: the suite must run with the compiled kernels")
    module = compiled.load(name)
    assert module.__name__ == f"engine._{name}_c"
    if os.path.exists(os.path.join(EXT, f"{name}_build.py")):
        # cffi kernels: engine._<name>_c is Python around the built engine._<name>_cffi
        module = importlib.import_module(f"engine._{name}_cffi")
    assert module.__file__.endswith(".so")


@pytest.mark.parametrize("name", kernel_names())
def test_pure_twin_has_same_api(name):
    c = compiled.load(name)
    py = importlib.import_module(f"engine._{name}_py")
    public = lambda m: {n for n in dir(m) if not n.startswith("_")} - {"ffi", "lib"}  # noqa: E731
    assert public(py) <= public(c), f"compiled {name} lacks {public(py) - public(c)}"

