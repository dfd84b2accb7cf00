"""pazuzu's benchmark suite: `make bench` (see run.py)."""
