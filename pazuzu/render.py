"""Turns status results into text for people. Pure: values in, strings out."""

from __future__ import annotations

import time

TYPE_CHECKING = False  # `pazuzu status` imports this module: typing costs it 10 ms
if TYPE_CHECKING:
    from typing import Any

WIDTH = 80
_HEADERS = ("INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "MEMORY", "CPU")
_STATE_COLUMN = 1
# The colour of each state on a terminal: green is well, red needs attention, yellow is on
# its way. `stopped` is meant to be so and stays plain.
STATE_COLORS = {
    "running": "green",
    "backoff": "red",
    "failed": "red",
    "starting": "yellow",
    "stopping": "yellow",
}


def status_table(status: dict[str, Any], now: float | None = None, *, color: bool = False) -> str:
    """The `pazuzu status` table: one row per instance, a header row per worker.

    With `color`, states are coloured with ANSI escapes (for a terminal); the columns line up
    either way.
    """
    now = time.time() if now is None else now
    rows: list[tuple[str, ...]] = []
    for app in status["applications"]:
        for worker in app["workers"]:
            running = sum(1 for i in worker["instances"] if i["state"] == "running")
            count = f" ({running}/{worker['desired']})" + _limits_text(worker.get("limits"))
            rows.append((_shorten(f"{app['name']}.{worker['name']}", WIDTH - len(count)) + count,))
            for instance in worker["instances"]:
                rows.append(_instance_row(app["name"], worker["name"], instance, now))
    if not rows:
        return "no applications configured"
    return _layout(rows, color=color)


def _limits_text(limits: dict[str, Any] | None) -> str:
    """` limits: memory 512.0M, cpu 50%, tasks 100` per instance, or nothing."""
    if not limits:
        return ""
    parts = []
    if limits.get("memory_bytes") is not None:
        parts.append(f"memory {size(limits['memory_bytes'])}")
    if limits.get("cpu_percent") is not None:
        parts.append(f"cpu {limits['cpu_percent']:g}%")
    if limits.get("tasks") is not None:
        parts.append(f"tasks {limits['tasks']}")
    return f" limits: {', '.join(parts)}" if parts else ""


def _instance_row(app: str, worker: str, instance: dict[str, Any], now: float) -> tuple[str, ...]:
    state = instance["state"]
    if state == "backoff" and instance.get("next_try_in") is not None:
        state = f"backoff {duration(instance['next_try_in'])}"
    started = instance.get("started_at")
    uptime = duration(now - started) if started and instance["state"] == "running" else "-"
    return (
        f"  {worker}.{instance['number']}",
        state,
        str(instance["pid"] or "-"),
        uptime,
        str(instance["restarts"]),
        instance["last_exit"] or "-",
        size(instance["memory_bytes"]),
        "-" if instance["cpu_seconds"] is None else duration(instance["cpu_seconds"]),
    )


def _layout(rows: list[tuple[str, ...]], *, color: bool) -> str:
    full = [r for r in rows if len(r) == len(_HEADERS)]
    widths = [max([len(h)] + [len(r[i]) for r in full]) for i, h in enumerate(_HEADERS)]
    # Give way on LAST EXIT first, then INSTANCE, to fit the terminal's 80 columns.
    for column, floor in ((5, 9), (0, 10)):
        excess = sum(widths) + len(widths) - 1 - WIDTH
        if excess > 0:
            widths[column] = max(floor, widths[column] - excess)
    lines = [_line(_HEADERS, widths)]
    for row in rows:
        if len(row) == 1:
            lines.append(row[0])
        else:
            # The instance number must survive a cut: shorten the worker name before it.
            name, dot, number = row[0].rpartition(".")
            first = _shorten(name, widths[0] - len(dot + number)) + dot + number
            lines.append(_line((first, *row[1:]), widths, color=color))
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _line(cells: tuple[str, ...], widths: list[int], *, color: bool = False) -> str:
    parts = []
    for column, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        text = (cell if len(cell) <= width else cell[: width - 1] + "…").ljust(width)
        if color and column == _STATE_COLUMN:
            # Padded first, styled second: escapes must not count towards the width.
            text = paint_state(cell.split(" ", 1)[0], text)
        parts.append(text)
    return " ".join(parts).rstrip()


def paint_state(state: str, text: str) -> str:
    """`text` in the colour of `state` (ANSI escapes); unchanged for an uncoloured state."""
    colour = STATE_COLORS.get(state)
    if colour is None:
        return text
    import click  # only a terminal needs it

    # The padding stays outside the escapes, so that `rstrip` still trims the line.
    stripped = text.rstrip()
    return click.style(stripped, fg=colour) + text[len(stripped) :]


def duration(seconds: float) -> str:
    """`42s`, `3m12s`, `5h03m`, `2d04h`: short enough for a table cell."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "K", "M", "G"):
        if amount < 1024:
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}T"
