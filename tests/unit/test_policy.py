"""The crash-loop backoff curve."""

from __future__ import annotations

import pytest

from pazuzu.policy import MAX_DELAY, STABLE_AFTER, next_failures, restart_delay


@pytest.mark.parametrize("failures", [0, 1])
def test_a_single_crash_respawns_at_once(failures: int) -> None:
    """No wait before restarting an instance that has not crash-looped."""
    assert restart_delay(failures) == 0.0


def test_repeated_quick_failures_double_the_wait_from_half_a_second() -> None:
    """The second to ninth consecutive failures wait 0.5, 1, 2, 4, 8, 16, 32, then 60 s."""
    assert [restart_delay(n) for n in range(2, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60]


def test_the_wait_is_capped_at_a_minute() -> None:
    """However long the crash loop, the next try is at most 60 s away."""
    assert MAX_DELAY == 60.0
    assert restart_delay(9) == 60.0
    assert restart_delay(50) == 60.0


def test_a_crash_loop_of_any_length_is_retried() -> None:
    """Even after millions of failures the delay stays finite: an instance is never parked."""
    assert restart_delay(10_000_000) == 60.0


def test_a_quick_failure_adds_to_the_count() -> None:
    """A run shorter than STABLE_AFTER is one more consecutive failure."""
    assert next_failures(0, 0.1) == 1
    assert next_failures(3, 9.9) == 4


def test_a_stable_run_starts_the_count_again() -> None:
    """A run of 10 s or more resets the count: its failure is the first of a new series."""
    assert STABLE_AFTER == 10.0
    assert next_failures(7, 10.0) == 1
    assert next_failures(7, 3600.0) == 1
    assert restart_delay(next_failures(7, 10.0)) == 0.0
