"""The `pazuzu status` table and the cell formats it uses."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pazuzu.render import STATE_COLORS, WIDTH, duration, size, status_table

NOW = 1_700_000_000.0


def instance(number: int, **fields: Any) -> dict[str, Any]:
    """One instance of the status JSON: running for 42 s unless `fields` say otherwise."""
    return {
        "number": number,
        "state": "running",
        "pid": 4711 + number,
        "started_at": NOW - 42.0,
        "restarts": 0,
        "last_exit": None,
        "memory_bytes": 52_428_800,
        "cpu_seconds": 1.5,
        "next_try_in": None,
        **fields,
    }


def status(app: str, worker: str, desired: int, *instances: dict[str, Any]) -> dict[str, Any]:
    """A status result with one application of one worker."""
    return {
        "daemon": {"pid": 1, "backend": "fake", "version": "0.1.0"},
        "applications": [
            {
                "name": app,
                "workers": [
                    {
                        "name": worker,
                        "command_line": "python -m http.server",
                        "desired": desired,
                        "instances": list(instances),
                    }
                ],
            }
        ],
    }


def test_the_first_line_is_the_header() -> None:
    """The header names every column of the DESIGN's status table."""
    header = status_table(status("myapp", "web", 1, instance(1)), now=NOW).splitlines()[0]
    assert header.split() == [
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST",
        "EXIT",
        "MEMORY",
        "CPU",
    ]


def test_each_worker_line_shows_running_over_desired() -> None:
    """myapp.web with two of three instances running reads `myapp.web (2/3)`."""
    table = status_table(
        status(
            "myapp",
            "web",
            3,
            instance(1),
            instance(2),
            instance(3, state="starting", pid=None, started_at=None),
        ),
        now=NOW,
    )
    assert table.splitlines()[1] == "myapp.web (2/3)"


def test_an_instance_row_shows_state_pid_uptime_restarts_memory_and_cpu() -> None:
    """web.1 running for 42 s with pid 4712, 50 MiB and 1.5 s of CPU."""
    table = status_table(status("myapp", "web", 1, instance(1, restarts=2)), now=NOW)
    assert table.splitlines()[2].split() == [
        "web.1",
        "running",
        "4712",
        "42s",
        "2",
        "-",
        "50.0M",
        "1.5s",
    ]


def test_an_instance_that_is_not_running_shows_dashes() -> None:
    """A stopped instance has no pid, uptime, memory or cpu to show."""
    row = instance(
        1, state="stopped", pid=None, started_at=None, memory_bytes=None, cpu_seconds=None
    )
    table = status_table(status("myapp", "web", 0, row), now=NOW)
    assert table.splitlines()[2].split() == ["web.1", "stopped", "-", "-", "0", "-", "-", "-"]


def test_backoff_shows_when_the_next_try_is() -> None:
    """An instance in backoff reads `backoff 4.0s` and its last exit."""
    row = instance(1, state="backoff", pid=None, next_try_in=4.0, restarts=5, last_exit="exit 127")
    table = status_table(status("myapp", "web", 1, row), now=NOW)
    assert "backoff 4.0s" in table
    assert "exit 127" in table


def test_no_applications_says_so() -> None:
    """An empty configuration renders a sentence, not an empty table."""
    assert status_table({"daemon": {}, "applications": []}, now=NOW) == "no applications configured"


def test_every_line_fits_80_columns_with_long_names_and_exits() -> None:
    """Long application, worker and last-exit texts are cut to fit a terminal."""
    long_exit = "killed by SIGSEGV (core dumped) after writing a very long message"
    table = status_table(
        status(
            "a-very-long-application-name",
            "a-worker-with-an-extremely-long-name",
            3,
            instance(1, last_exit=long_exit, restarts=123_456),
            instance(2, state="backoff", next_try_in=59.5, pid=None, last_exit=long_exit),
            instance(3, state="stopping", pid=4_194_304, memory_bytes=10**13, cpu_seconds=1e8),
        ),
        now=NOW,
    )
    assert max(len(line) for line in table.splitlines()) <= WIDTH
    assert "killed b…" in table


def test_a_cut_instance_name_keeps_its_number() -> None:
    """With a long worker name, web.1 and web.2 rows still say which instance they are."""
    worker = "a-worker-with-an-extremely-long-name-that-will-not-fit"
    long_exit = "killed by SIGSEGV (core dumped) after writing a very long message"
    table = status_table(
        status("myapp", worker, 2, instance(1, last_exit=long_exit), instance(2)), now=NOW
    )
    first, second = (line.split()[0] for line in table.splitlines()[2:4])
    assert first.endswith(".1")
    assert second.endswith(".2")


def test_a_cut_worker_line_keeps_its_running_over_desired_count() -> None:
    """A worker line too long for 80 columns shortens the name, not the count."""
    table = status_table(
        status(
            "a-very-long-application-name-indeed", "a-worker-with-an-extremely-long-name-too", 1
        ),
        now=NOW,
    )
    header = table.splitlines()[1]
    assert len(header) <= WIDTH
    assert header.endswith("(0/1)")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0s"),
        (4.25, "4.2s"),
        (42.0, "42s"),
        (192.0, "3m12s"),
        (5 * 3600 + 3 * 60, "5h03m"),
        (2 * 86400 + 4 * 3600, "2d04h"),
        (-5.0, "0.0s"),
    ],
)
def test_duration_is_short_enough_for_a_cell(seconds: float, text: str) -> None:
    """Durations read 4.2s, 42s, 3m12s, 5h03m, 2d04h; a negative one is zero."""
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (52_428_800, "50.0M"),
        (3 * 1024**3, "3.0G"),
        (2 * 1024**4, "2.0T"),
    ],
)
def test_size_uses_binary_units(value: int | None, text: str) -> None:
    """Sizes read in B, K, M, G and T of 1024; unknown is a dash."""
    assert size(value) == text


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def coloured_table() -> str:
    return status_table(
        status(
            "myapp",
            "web",
            4,
            instance(1),
            instance(2, state="backoff", pid=None, started_at=None, next_try_in=4.0),
            instance(3, state="starting", pid=None, started_at=None),
            instance(4, state="stopped", pid=None, started_at=None),
        ),
        now=NOW,
        color=True,
    )


def test_states_are_coloured_green_red_yellow_when_asked() -> None:
    """running is green, backoff red and starting yellow; stopped stays plain."""
    rows = coloured_table().splitlines()
    assert "\x1b[32mrunning\x1b[0m" in rows[2]
    assert "\x1b[31mbackoff 4.0s\x1b[0m" in rows[3]
    assert "\x1b[33mstarting\x1b[0m" in rows[4]
    assert "\x1b" not in rows[5]
    assert "\x1b" not in rows[0]  # the header's STATE is not a state


def test_colour_does_not_move_the_columns() -> None:
    """Without its escapes, the coloured table is the plain one, character for character."""
    plain = status_table(
        status(
            "myapp",
            "web",
            4,
            instance(1),
            instance(2, state="backoff", pid=None, started_at=None, next_try_in=4.0),
            instance(3, state="starting", pid=None, started_at=None),
            instance(4, state="stopped", pid=None, started_at=None),
        ),
        now=NOW,
    )
    assert ANSI.sub("", coloured_table()) == plain


def test_the_table_has_no_escapes_by_default() -> None:
    """Without `color`, nothing but text: what a pipe or a log file gets."""
    table = status_table(status("myapp", "web", 1, instance(1, state="failed")), now=NOW)
    assert "\x1b" not in table


@pytest.mark.parametrize(
    ("state", "colour"),
    [("running", "green"), ("backoff", "red"), ("failed", "red"), ("stopping", "yellow")],
)
def test_each_state_has_its_colour(state: str, colour: str) -> None:
    """The DESIGN's states map to the colours operators expect from systemctl and top."""
    assert STATE_COLORS[state] == colour
