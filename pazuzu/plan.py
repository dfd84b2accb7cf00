"""The reconcile decision: desired formation + observed instances -> actions. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pazuzu.config import instance_specs
from pazuzu.model import (
    Config,
    Formation,
    InstanceId,
    InstanceSpec,
    InstanceState,
    ObservedInstance,
)

# States in which an instance is not running and will not run unless someone starts it.
_DOWN = frozenset({InstanceState.STOPPED, InstanceState.FAILED})


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do to bring the observed instances to the formation.

    `stops` are ordered highest number first (scale down stops the newest first); `starts`
    lowest number first; `replaces` are instances whose definition changed, to be restarted
    one at a time per worker so that a worker never loses all of its instances at once.
    """

    starts: tuple[InstanceSpec, ...] = ()
    stops: tuple[InstanceId, ...] = ()
    replaces: tuple[InstanceSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.starts or self.stops or self.replaces)


def desired_instances(config: Config, formation: Formation) -> dict[InstanceId, InstanceSpec]:
    """Every instance the formation says should run, with its full definition."""
    desired: dict[InstanceId, InstanceSpec] = {}
    for app in config.applications:
        for worker in app.workers:
            wanted = formation.get((app.name, worker.name))
            if wanted is None:
                continue
            for spec in instance_specs(app, worker, wanted.running_numbers()):
                desired[spec.id] = spec
    return desired


def plan(
    desired: Mapping[InstanceId, InstanceSpec],
    observed: Mapping[InstanceId, ObservedInstance],
    held: frozenset[InstanceId] = frozenset(),
) -> Plan:
    """Decide the actions that drive `observed` toward `desired`.

    `held` names instances that must not be touched now: one waiting out a crash-loop backoff
    (the daemon has a timer for it) or one with an action already under way.
    """
    starts: list[InstanceSpec] = []
    replaces: list[InstanceSpec] = []
    for instance_id, spec in desired.items():
        if instance_id in held:
            continue
        current = observed.get(instance_id)
        if current is None or current.state in _DOWN:
            starts.append(spec)
        elif current.state is not InstanceState.STOPPING and (
            current.fingerprint != spec.fingerprint
        ):
            replaces.append(spec)
    stops = [
        instance_id
        for instance_id, current in observed.items()
        if instance_id not in desired
        and instance_id not in held
        and current.state is not InstanceState.STOPPED
    ]
    return Plan(
        starts=tuple(sorted(starts, key=lambda s: s.id)),
        stops=tuple(sorted(stops, key=_newest_first)),
        replaces=tuple(sorted(replaces, key=lambda s: s.id)),
    )


def _newest_first(instance_id: InstanceId) -> tuple[str, str, int]:
    return (instance_id.app, instance_id.worker, -instance_id.number)
