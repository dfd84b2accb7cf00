"""Turns status results into text for people. Pure: values in, strings out."""

from __future__ import annotations

import time
from typing import Any

WIDTH = 80
_HEADERS = ("INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "MEMORY", "CPU")


def status_table(status: dict[str, Any], now: float | None = None) -> str:
    """The `pazuzu status` table: one row per instance, a header row per worker."""
    now = time.time() if now is None else now
    rows: list[tuple[str, ...]] = []
    for app in status["applications"]:
        for worker in app["workers"]:
            running = sum(1 for i in worker["instances"] if i["state"] == "running")
            count = f" ({running}/{worker['desired']})"
            rows.append((_shorten(f"{app['name']}.{worker['name']}", WIDTH - len(count)) + count,))
            for instance in worker["instances"]:
                rows.append(_instance_row(app["name"], worker["name"], instance, now))
    if not rows:
        return "no applications configured"
    return _layout(rows)


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


def _layout(rows: list[tuple[str, ...]]) -> str:
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
            lines.append(_line((first, *row[1:]), widths))
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    parts = []
    for cell, width in zip(cells, widths, strict=True):
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        parts.append(text.ljust(width))
    return " ".join(parts).rstrip()


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
