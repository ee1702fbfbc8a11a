"""Benchmarks of the hot paths (``make bench``); see ``bench/__main__.py``."""
