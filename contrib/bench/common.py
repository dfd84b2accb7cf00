"""What the benchmark's parts share: options, the workload, and kernel-view measurements."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procwatch import ProcWatch, pids_matching
from .stats import Results

CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Each supervisor runs `/bin/sleep <marker>`: the marker tells their workers apart in /proc.
MARK_PAZUZU_SYSTEMD = "86401"
MARK_RAW_SYSTEMD = "86402"
MARK_SUPERVISORD = "86403"
MARK_CIRCUS = "86404"
MARK_PAZUZU_LIBCG = "86405"
MARKERS = (
    MARK_PAZUZU_SYSTEMD,
    MARK_RAW_SYSTEMD,
    MARK_SUPERVISORD,
    MARK_CIRCUS,
    MARK_PAZUZU_LIBCG,
)

# The "chatty" variant writes a line every 10 ms; "flood" writes 10 MB/s (100 kB per 10 ms).
CHATTY = (
    "exec /usr/bin/perl -e '$|=1; "
    'while (1) { print "tick $$\\n"; select(undef, undef, undef, 0.01) }\''
)
FLOOD = (
    'exec /usr/bin/perl -e \'$|=1; $l = ("x" x 99) . "\\n"; $b = $l x 1000; '
    "while (1) { print $b; select(undef, undef, undef, 0.01) }'"
)


def procfile(marker: str) -> str:
    return f"web: exec /bin/sleep {marker}\nchatty: {CHATTY}\nflood: {FLOOD}\n"


def app_config(directory: Path) -> str:
    return (
        "applications:\n"
        "  bench:\n"
        f"    procfile: {directory}\n"
        "    stop_timeout: 5\n"
        "    workers:\n"
        "      web: {num_instances: 0}\n"
        "      chatty: {num_instances: 0}\n"
        "      flood: {num_instances: 0}\n"
    )


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    reps: int  # repetitions of the start/stop figures
    big: int  # the large formation: 500, or 100 with --quick
    kills: int  # respawn samples per supervisor
    idle_window: float  # seconds of the idle CPU figure
    cpu_window: float  # seconds of the output CPU figures
    sizes: tuple[int, ...]  # formations of the cold-start figure


def succeeded(timed: dict[str, Any], what: str) -> list[float]:
    """The seconds of a `time_cmd` result, each of a run that exited 0: a command that failed
    (say, could not reach its daemon) measured nothing."""
    if any(timed["codes"]):
        raise RuntimeError(f"{what} exited {timed['codes']}")
    seconds: list[float] = timed["seconds"]
    return seconds


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Bounded wait on a condition; raises TimeoutError naming it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def measure_respawn(
    watch: ProcWatch,
    results: Results,
    key: str,
    marker: str,
    kills: int,
    *,
    settle: float = 0.2,
    min_age: float = 0.0,
) -> None:
    """SIGKILL `kills` distinct workers; each sample is exit -> first exec of a new worker pid,
    both stamped by the kernel. Distinct workers: a second kill of the same one would measure
    the supervisor's crash-loop backoff instead."""
    touched: set[int] = set()
    for _ in range(kills):
        candidates = sorted(pids_matching(marker) - touched)
        candidates = [p for p in candidates if _age(p) >= min_age]
        if not candidates:
            results.notes.append(f"{key}: ran out of workers to kill")
            return
        victim = candidates[0]
        mark = watch.mark()
        touched.add(victim)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        died = watch.exit_of(victim, timeout=5)
        born = watch.new_pids(marker, mark, 1, timeout=10)
        if died is None or not born:
            results.notes.append(f"{key}: no respawn seen within 10 s of killing pid {victim}")
            continue
        pid, ns = min(born.items(), key=lambda item: item[1])
        touched.add(pid)
        results.add(key, "ms", (ns - died) / 1e6)
        time.sleep(settle)


def _age(pid: int) -> float:
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - ticks / CLOCK_TICK


def cpu_seconds(proc_dir: Path) -> float:
    """CPU time of a process, all live threads: the scheduler's nanoseconds (schedstat) where
    the kernel keeps them, else utime + stime in clock ticks."""
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in (proc_dir / "task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = (proc_dir / "stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_mib(proc_dir: Path) -> float:
    for line in (proc_dir / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS in {proc_dir}/status")


def cpu_over(proc_dir: Path, window: float) -> float:
    """CPU seconds a process used during the next `window` seconds."""
    before = cpu_seconds(proc_dir)
    time.sleep(window)
    return cpu_seconds(proc_dir) - before
