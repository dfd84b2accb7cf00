"""The reconcile decision: which instances to start, stop and replace."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pazuzu.config import instance_spec
from pazuzu.model import (
    AppConfig,
    Config,
    InstanceId,
    InstanceSpec,
    InstanceState,
    ObservedInstance,
    WorkerConfig,
    WorkerFormation,
)
from pazuzu.plan import Plan, desired_instances, plan

WEB = WorkerConfig(name="web", command_line="python -m http.server", num_instances=2, index=0)
QUEUE = WorkerConfig(name="queue", command_line="python worker.py", num_instances=1, index=1)
MYAPP = AppConfig(name="myapp", procfile=Path("/srv/myapp/Procfile"), workers=(WEB, QUEUE))
CONFIG = Config(applications=(MYAPP,))


def web(number: int) -> InstanceId:
    return InstanceId("myapp", "web", number)


def web_spec(number: int) -> InstanceSpec:
    return instance_spec(MYAPP, WEB, number)


def running(spec: InstanceSpec, state: InstanceState = InstanceState.RUNNING) -> ObservedInstance:
    """What the backend reports for an instance started from `spec`."""
    return ObservedInstance(id=spec.id, state=state, fingerprint=spec.fingerprint)


def web_instances(*numbers: int) -> dict[InstanceId, InstanceSpec]:
    return {web(n): web_spec(n) for n in numbers}


def observed_web(*numbers: int) -> dict[InstanceId, ObservedInstance]:
    return {web(n): running(web_spec(n)) for n in numbers}


# desired_instances


def test_desired_instances_follow_the_formation_counts() -> None:
    """Two web and one queue in the formation are web.1, web.2 and queue.1."""
    formation = {
        ("myapp", "web"): WorkerFormation(count=2, configured=2),
        ("myapp", "queue"): WorkerFormation(count=1, configured=1),
    }
    assert sorted(desired_instances(CONFIG, formation)) == [
        InstanceId("myapp", "queue", 1),
        web(1),
        web(2),
    ]


def test_stopped_numbers_are_not_desired() -> None:
    """web.2 stopped with `pazuzu stop` is left out of web=3."""
    formation = {("myapp", "web"): WorkerFormation(3, 3, stopped=frozenset({2}))}
    assert sorted(desired_instances(CONFIG, formation)) == [web(1), web(3)]


def test_a_worker_missing_from_the_formation_has_no_desired_instances() -> None:
    """Only workers the formation names are desired."""
    formation = {("myapp", "queue"): WorkerFormation(1, 1)}
    assert list(desired_instances(CONFIG, formation)) == [InstanceId("myapp", "queue", 1)]


def test_desired_instances_carry_their_full_definition() -> None:
    """Each desired instance comes with the spec a backend needs: command, PORT, DYNO."""
    spec = desired_instances(CONFIG, {("myapp", "web"): WorkerFormation(2, 2)})[web(2)]
    assert spec.command_line == "python -m http.server"
    assert spec.directory == Path("/srv/myapp")
    assert ("PORT", "5001") in spec.environment
    assert ("DYNO", "web.2") in spec.environment


# plan


def test_an_empty_plan_is_falsy() -> None:
    """Nothing to do is a Plan that tests false; any action makes it true."""
    assert not Plan()
    assert Plan(stops=(web(1),))


def test_nothing_to_do_when_observed_matches_desired() -> None:
    """Running instances with the desired fingerprint are left alone."""
    assert not plan(web_instances(1, 2), observed_web(1, 2))


def test_scale_up_starts_the_missing_numbers_lowest_first() -> None:
    """web.1 running and web=4 wanted: start web.2, web.3, web.4 in that order."""
    actions = plan(web_instances(4, 2, 3, 1), observed_web(1))
    assert [spec.id for spec in actions.starts] == [web(2), web(3), web(4)]
    assert actions.stops == ()
    assert actions.replaces == ()


def test_scale_down_stops_highest_numbers_first() -> None:
    """Scaling web from 3 to 1 stops web.3, then web.2."""
    actions = plan(web_instances(1), observed_web(1, 2, 3))
    assert actions.stops == (web(3), web(2))
    assert actions.starts == ()


def test_a_changed_fingerprint_replaces_the_instance() -> None:
    """An instance started from an older definition is replaced, not started again."""
    observed = {web(1): ObservedInstance(web(1), InstanceState.RUNNING, fingerprint="0123456789ab")}
    actions = plan(web_instances(1), observed)
    assert actions.replaces == (web_spec(1),)
    assert actions.starts == ()
    assert actions.stops == ()


def test_a_changed_command_line_changes_the_fingerprint() -> None:
    """Editing a worker's command line is a change of definition."""
    edited = replace(WEB, command_line="gunicorn app:app")
    assert instance_spec(MYAPP, edited, 1).fingerprint != web_spec(1).fingerprint


def test_a_removed_worker_has_its_instances_stopped() -> None:
    """queue.1 and queue.2 running, queue no longer configured: both stop."""
    queue_1 = InstanceId("myapp", "queue", 1)
    queue_2 = InstanceId("myapp", "queue", 2)
    observed = {
        **observed_web(1),
        queue_1: ObservedInstance(queue_1, InstanceState.RUNNING, fingerprint="0123456789ab"),
        queue_2: ObservedInstance(queue_2, InstanceState.RUNNING, fingerprint="0123456789ab"),
    }
    actions = plan(web_instances(1), observed)
    assert actions.stops == (queue_2, queue_1)
    assert not actions.starts
    assert not actions.replaces


def test_a_failed_desired_instance_is_started() -> None:
    """web.1 observed failed is started again."""
    observed = {web(1): running(web_spec(1), InstanceState.FAILED)}
    assert plan(web_instances(1), observed).starts == (web_spec(1),)


def test_a_stopped_desired_instance_is_started() -> None:
    """web.1 observed stopped is started again."""
    observed = {web(1): running(web_spec(1), InstanceState.STOPPED)}
    assert plan(web_instances(1), observed).starts == (web_spec(1),)


def test_an_undesired_stopped_instance_is_not_stopped_again() -> None:
    """web.2 already stopped and not wanted needs no action."""
    observed = {**observed_web(1), web(2): running(web_spec(2), InstanceState.STOPPED)}
    assert not plan(web_instances(1), observed)


def test_an_undesired_failed_instance_is_stopped() -> None:
    """web.2 failed and not wanted is stopped, which clears it from the backend."""
    observed = {**observed_web(1), web(2): running(web_spec(2), InstanceState.FAILED)}
    assert plan(web_instances(1), observed).stops == (web(2),)


def test_instances_in_backoff_or_starting_are_not_started_twice() -> None:
    """The backend is already bringing web.1 and web.2 up: no start for them."""
    observed = {
        web(1): running(web_spec(1), InstanceState.BACKOFF),
        web(2): running(web_spec(2), InstanceState.STARTING),
    }
    assert not plan(web_instances(1, 2), observed)


def test_a_stopping_instance_is_not_replaced() -> None:
    """An instance on its way down with an old fingerprint is neither replaced nor started."""
    observed = {
        web(1): ObservedInstance(web(1), InstanceState.STOPPING, fingerprint="0123456789ab")
    }
    assert not plan(web_instances(1), observed)


def test_a_held_instance_is_not_started() -> None:
    """web.2 missing but held (waiting out a backoff) is not started."""
    actions = plan(web_instances(1, 2), observed_web(1), held=frozenset({web(2)}))
    assert not actions


def test_a_held_instance_is_not_stopped() -> None:
    """web.3 not wanted but held (an action under way) is not stopped."""
    actions = plan(web_instances(1), observed_web(1, 2, 3), held=frozenset({web(3)}))
    assert actions.stops == (web(2),)


def test_a_held_instance_is_not_replaced() -> None:
    """web.1 with an old fingerprint but held is not replaced; web.2 is."""
    observed = {
        web(1): ObservedInstance(web(1), InstanceState.RUNNING, fingerprint="0123456789ab"),
        web(2): ObservedInstance(web(2), InstanceState.RUNNING, fingerprint="0123456789ab"),
    }
    actions = plan(web_instances(1, 2), observed, held=frozenset({web(1)}))
    assert actions.replaces == (web_spec(2),)


def test_stops_of_several_workers_go_newest_first_within_each_worker() -> None:
    """Stops are grouped by app and worker, highest number first in each."""
    queue_1 = InstanceId("myapp", "queue", 1)
    queue_2 = InstanceId("myapp", "queue", 2)
    observed = {
        web(1): running(web_spec(1)),
        queue_1: ObservedInstance(queue_1, InstanceState.RUNNING),
        web(2): running(web_spec(2)),
        queue_2: ObservedInstance(queue_2, InstanceState.RUNNING),
    }
    assert plan({}, observed).stops == (queue_2, queue_1, web(2), web(1))
