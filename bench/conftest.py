"""Benchmarks share the tests' support package (temporary qmail homes, slapd, servers)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
