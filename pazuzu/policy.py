"""Crash-loop backoff: how long to wait before starting a crashed instance again.

A single crash respawns at once. Consecutive quick failures wait 0.5 s, then 1 s, 2 s, 4 s, ...
up to a minute, and are retried for ever; a run of `STABLE_AFTER` seconds or more counts as a
success and starts the count again.
"""

from __future__ import annotations

FIRST_DELAY = 0.5
MAX_DELAY = 60.0
STABLE_AFTER = 10.0

# 0.5 s * 2**7 already exceeds MAX_DELAY; capping the exponent keeps huge counts from
# overflowing a float.
_MAX_DOUBLINGS = 16


def restart_delay(failures: int) -> float:
    """Seconds to wait before the next start after `failures` consecutive quick failures."""
    if failures <= 1:
        return 0.0
    doublings = min(failures - 2, _MAX_DOUBLINGS)
    return min(FIRST_DELAY * 2.0**doublings, MAX_DELAY)


def next_failures(failures: int, run_seconds: float) -> int:
    """The consecutive-failure count after a run of `run_seconds` that ended in a failure.

    A run that lasted `STABLE_AFTER` seconds or more was healthy: its failure is the first.
    """
    if run_seconds >= STABLE_AFTER:
        return 1
    return failures + 1
