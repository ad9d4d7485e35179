"""Integration tests: the real CLI and harness against real servers."""
