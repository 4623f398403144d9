"""Runtimes: what executes an optimised graph."""
