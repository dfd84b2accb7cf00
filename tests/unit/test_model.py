"""How exits read in `status`: the words an operator sees."""

from __future__ import annotations

import signal

import pytest

from pazuzu.model import Exit


@pytest.mark.parametrize(
    ("ended", "words"),
    [
        (Exit(status=0), "exit 0"),
        (Exit(status=3), "exit 3"),
        (Exit(status=127), "exit 127: command not found"),
        (Exit(status=126), "exit 126: command not executable"),
        (Exit(signal=signal.SIGKILL), "killed by SIGKILL"),
        (Exit(signal=signal.SIGKILL, out_of_memory=True), "killed by SIGKILL (out of memory)"),
        (Exit(signal=signal.SIGSEGV, core_dumped=True), "killed by SIGSEGV (core dumped)"),
        (Exit(signal=77), "killed by signal 77"),
        (Exit(), "unknown"),
    ],
)
def test_an_exit_reads_as_words(ended: Exit, words: str) -> None:
    """Exit statuses and signals in words; the OOM killer and core dumps are named."""
    assert str(ended) == words
