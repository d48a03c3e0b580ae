"""Test support: real components (temporary qmail homes, slapd, servers) started and stopped by fixtures."""
