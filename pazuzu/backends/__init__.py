"""Process backends: where instances really run (systemd units, libcgroup cgroups)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pazuzu.model import Exit, InstanceId, InstanceSpec, Limits, ObservedInstance


@dataclass(frozen=True, slots=True)
class RunEnded:
    """An instance's process tree ended; the backend may already be respawning it."""

    instance: InstanceId
    exit: Exit
    run_seconds: float


@dataclass(frozen=True, slots=True)
class LogSource:
    """Where the output of instances can be read: journal identifiers, or files."""

    journal_identifiers: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


def systemd_booted() -> bool:
    """Whether this host was booted with systemd (sd_booted(3)'s test); imports nothing."""
    return Path("/run/systemd/system").is_dir()


ChangeCallback = Callable[[InstanceId], None]
ExitCallback = Callable[[RunEnded], None]
# Which instances `list_instances` adds details to: all (True), none (False), or those chosen.
Details = bool | Callable[[InstanceId], bool]


class Backend(Protocol):
    """The seam between the daemon and the processes it supervises."""

    name: str

    async def open(self, on_change: ChangeCallback, on_exit: ExitCallback) -> None:
        """Connect, and report every later change of an instance through the callbacks."""

    async def close(self) -> None:
        """Disconnect; never stops an instance."""

    async def list_instances(
        self, *, details: Details = False
    ) -> dict[InstanceId, ObservedInstance]:
        """Every instance that exists, running or not; `details` adds pid, memory, cpu.

        `details` is True for every instance, or a predicate choosing those that get them.
        """

    async def start(self, spec: InstanceSpec, restart_delay: float) -> None:
        """Start an instance; the backend respawns it by itself `restart_delay` after a crash."""

    async def stop(self, instance: InstanceId, timeout: float) -> None:
        """Stop an instance's whole process tree: SIGTERM, SIGKILL after `timeout`."""

    def log_source(self, instances: list[InstanceId]) -> LogSource:
        """Where to read the output of these instances."""

    async def set_limits(
        self, app: str, app_limits: Limits, instances: Mapping[InstanceId, Limits]
    ) -> None:
        """Apply limits now, without a restart: to the application and to these instances."""
