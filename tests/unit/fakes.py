"""A Backend that keeps its instances in memory, for testing the daemon without systemd."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pazuzu.backends import ChangeCallback, Details, ExitCallback, LogSource, RunEnded
from pazuzu.model import Exit, InstanceId, InstanceSpec, InstanceState, Limits, ObservedInstance


@dataclass(frozen=True, slots=True)
class Call:
    """One action the daemon asked of the backend: `start` or `stop` of an instance."""

    action: str
    instance: InstanceId
    restart_delay: float | None = None  # what a start asked the backend to wait after a crash


class FakeBackend:
    """Implements the Backend protocol in memory and records every start and stop.

    A started instance is RUNNING with the spec's fingerprint; a stopped one disappears, as a
    systemd unit does once stopped and reset. `crash` plays the backend reporting a death.
    """

    def __init__(self, instances: list[ObservedInstance] | None = None) -> None:
        self.name = "fake"
        self.instances: dict[InstanceId, ObservedInstance] = {i.id: i for i in instances or []}
        self.calls: list[Call] = []
        self.limits_set: list[tuple[str, Limits, dict[InstanceId, Limits]]] = []
        self.opened = False
        self._on_change: ChangeCallback | None = None
        self._on_exit: ExitCallback | None = None
        self._pids = itertools.count(4711)

    # -- the Backend protocol --------------------------------------------------------------

    async def open(self, on_change: ChangeCallback, on_exit: ExitCallback) -> None:
        self._on_change = on_change
        self._on_exit = on_exit
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    async def list_instances(
        self, *, details: Details = False
    ) -> dict[InstanceId, ObservedInstance]:
        await asyncio.sleep(0)
        return dict(self.instances)

    async def start(self, spec: InstanceSpec, restart_delay: float) -> None:
        self.calls.append(Call("start", spec.id, restart_delay))
        await asyncio.sleep(0)  # let other tasks run, as a D-Bus round trip would
        self.instances[spec.id] = ObservedInstance(
            id=spec.id,
            state=InstanceState.RUNNING,
            fingerprint=spec.fingerprint,
            pid=next(self._pids),
            started_at=1_700_000_000.0,
            restart_delay=restart_delay,
        )
        self._changed(spec.id)

    async def stop(self, instance: InstanceId, timeout: float) -> None:
        self.calls.append(Call("stop", instance))
        await asyncio.sleep(0)
        self.instances.pop(instance, None)
        self._changed(instance)

    def log_source(self, instances: list[InstanceId]) -> LogSource:
        return LogSource(journal_identifiers=tuple(str(i) for i in instances))

    async def set_limits(
        self, app: str, app_limits: Limits, instances: Mapping[InstanceId, Limits]
    ) -> None:
        self.limits_set.append((app, app_limits, dict(instances)))

    # -- for tests -------------------------------------------------------------------------

    def crash(self, instance: InstanceId, exit: Exit, run_seconds: float) -> None:
        """Report that `instance` died after `run_seconds`; a known one is respawned at once."""
        assert self._on_exit is not None, "open() was not called"
        current = self.instances.get(instance)
        if current is not None:
            self.instances[instance] = replace(
                current, restarts=current.restarts + 1, last_exit=exit, pid=next(self._pids)
            )
        self._on_exit(RunEnded(instance, exit, run_seconds))

    def actions(self, action: str) -> list[str]:
        """The instances, as `app.worker.n`, that were given `action`, in call order."""
        return [str(call.instance) for call in self.calls if call.action == action]

    def _changed(self, instance: InstanceId) -> None:
        if self._on_change is not None:
            self._on_change(instance)
