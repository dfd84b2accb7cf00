"""The daemon's Supervisor against an in-memory backend: reconcile, requests, crashes, reload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pazuzu.config import load_config
from pazuzu.daemon import Supervisor
from pazuzu.errors import ConfigError, SpecError
from pazuzu.model import Exit, InstanceId, InstanceState, Limits, ObservedInstance
from pazuzu.plan import desired_instances
from tests.unit.fakes import Call, FakeBackend

T = TypeVar("T")

DEADLINE = 5.0  # seconds a wait for a condition may take before the test fails

WEB_1 = InstanceId("myapp", "web", 1)
WEB_2 = InstanceId("myapp", "web", 2)
QUEUE_1 = InstanceId("myapp", "queue", 1)
CLOCK_1 = InstanceId("other", "clock", 1)
EVERYTHING = ["myapp.queue.1", "myapp.web.1", "myapp.web.2", "other.clock.1"]

PROCFILE = "web: python -m http.server $PORT\nqueue: python worker.py\n"
CONFIG = """\
state_path: state.json
applications:
  myapp:
    procfile: myapp
    workers:
      web:
        num_instances: {web_instances}
  other:
    procfile: other
"""


@pytest.fixture(autouse=True)
def _no_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Supervisor must not talk to a real service manager while under test."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)


def write_config(
    directory: Path, *, web_instances: int = 2, procfile: str = PROCFILE, extra: str = ""
) -> Path:
    """Two applications: myapp (web x web_instances, queue x 1) and other (clock x 1)."""
    (directory / "myapp").mkdir(exist_ok=True)
    (directory / "myapp" / "Procfile").write_text(procfile)
    (directory / "other").mkdir(exist_ok=True)
    (directory / "other" / "Procfile").write_text("clock: python clock.py\n")
    path = directory / "pazuzu.conf"
    path.write_text(CONFIG.format(web_instances=web_instances) + extra)
    return path


async def supervising(config_path: Path, backend: FakeBackend) -> Supervisor:
    """A Supervisor set up as `run()` sets it up, without signals or a socket."""
    supervisor = Supervisor(config_path, load_config(config_path), backend)
    supervisor.formation = supervisor._initial_formation()
    await backend.open(supervisor._on_change, supervisor._on_exit)
    return supervisor


async def running(config_path: Path, backend: FakeBackend) -> Supervisor:
    """A Supervisor whose first reconcile is done, with the backend's calls cleared."""
    supervisor = await supervising(config_path, backend)
    await supervisor.reconcile(wait=True)
    backend.calls.clear()
    return supervisor


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one test scenario in a fresh event loop."""
    return asyncio.run(scenario())


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, deadline: float = DEADLINE
) -> None:
    """Wait until `condition` holds, failing after `deadline` seconds."""
    try:
        async with asyncio.timeout(deadline):
            while not await condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {deadline} s: {what}")


async def instance_status(supervisor: Supervisor, spec: str) -> dict[str, Any]:
    """The status entry of the one instance `spec` names."""
    result = await supervisor.status([spec])
    ((instance,),) = [w["instances"] for a in result["applications"] for w in a["workers"]]
    found: dict[str, Any] = instance
    return found


async def worker_status(supervisor: Supervisor, spec: str) -> dict[str, Any]:
    """The status entry of the one worker `spec` names."""
    result = await supervisor.status([spec])
    ((worker,),) = [a["workers"] for a in result["applications"]]
    found: dict[str, Any] = worker
    return found


def observed(supervisor: Supervisor, *instances: InstanceId) -> list[ObservedInstance]:
    """Instances as a backend reports them when they run the current configuration."""
    desired = desired_instances(supervisor.config, supervisor.formation)
    return [
        ObservedInstance(
            id=i, state=InstanceState.RUNNING, fingerprint=desired[i].fingerprint, pid=100 + n
        )
        for n, i in enumerate(instances)
    ]


# First reconcile, scale


def test_the_first_reconcile_starts_the_formation(tmp_path: Path) -> None:
    """With nothing running, every configured instance is started, with no restart delay."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await supervising(write_config(tmp_path), backend)
        await supervisor.reconcile(wait=True)

    run(scenario)
    assert backend.actions("start") == EVERYTHING
    assert backend.actions("stop") == []
    assert {call.restart_delay for call in backend.calls} == {0.0}


def test_a_second_reconcile_changes_nothing(tmp_path: Path) -> None:
    """Once the formation runs, reconciling again calls the backend for nothing."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.reconcile(wait=True)

    run(scenario)
    assert backend.calls == []


def test_scale_up_starts_the_missing_numbers(tmp_path: Path) -> None:
    """myapp.web from 2 to 4 starts web.3 and web.4 and reports the new formation."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.scale(["myapp.web=4"])

    result = run(scenario)
    assert backend.actions("start") == ["myapp.web.3", "myapp.web.4"]
    assert backend.actions("stop") == []
    assert result == {
        "formation": {"myapp.queue": 1, "myapp.web": 4, "other.clock": 1},
    }


def test_scale_down_stops_highest_numbers_first(tmp_path: Path) -> None:
    """Scaling web from 4 to 1 stops web.4, then web.3, then web.2."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.scale(["myapp.web+2"])
        backend.calls.clear()
        await supervisor.scale(["myapp.web-3"])

    run(scenario)
    assert backend.actions("stop") == ["myapp.web.4", "myapp.web.3", "myapp.web.2"]
    assert backend.actions("start") == []
    assert sorted(str(i) for i in backend.instances) == [
        "myapp.queue.1",
        "myapp.web.1",
        "other.clock.1",
    ]


def test_scale_of_an_unknown_worker_raises_and_changes_nothing(tmp_path: Path) -> None:
    """`myapp.web=3 myapp.nope=1` is refused whole: web stays at 2."""
    backend = FakeBackend()

    async def scenario() -> Supervisor:
        supervisor = await running(write_config(tmp_path), backend)
        with pytest.raises(SpecError, match=r"no worker myapp\.nope in the configuration"):
            await supervisor.scale(["myapp.web=3", "myapp.nope=1"])
        return supervisor

    supervisor = run(scenario)
    assert backend.calls == []
    assert supervisor.formation[("myapp", "web")].count == 2


# Stop and start


def test_stop_of_an_application_stops_all_its_instances(tmp_path: Path) -> None:
    """`stop other` stops other.clock.1 and nothing of myapp."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        result = await supervisor.stop(["other"])
        return result, await instance_status(supervisor, "other.clock.1")

    result, clock = run(scenario)
    assert result == {"stopped": ["other.clock.1"]}
    assert backend.calls == [Call("stop", CLOCK_1)]
    assert clock["state"] == "stopped"


def test_stop_of_a_worker_stops_its_instances_newest_first(tmp_path: Path) -> None:
    """`stop myapp.web` stops web.2 then web.1; queue keeps running."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.stop(["myapp.web"])

    assert run(scenario) == {"stopped": ["myapp.web.1", "myapp.web.2"]}
    assert backend.actions("stop") == ["myapp.web.2", "myapp.web.1"]
    assert QUEUE_1 in backend.instances


def test_stop_of_an_instance_stops_only_that_instance(tmp_path: Path) -> None:
    """`stop myapp.web.1` leaves web.2 running; web's desired count drops to 1."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.stop(["myapp.web.1"])
        return await worker_status(supervisor, "myapp.web")

    web = run(scenario)
    assert backend.calls == [Call("stop", WEB_1)]
    assert web["desired"] == 1
    assert [(i["number"], i["state"]) for i in web["instances"]] == [
        (1, "stopped"),
        (2, "running"),
    ]


def test_start_brings_a_stopped_instance_back(tmp_path: Path) -> None:
    """`start myapp.web.1` after a stop starts web.1 again, and only it."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.stop(["myapp.web"])
        backend.calls.clear()
        return await supervisor.start(["myapp.web.1"])

    assert run(scenario) == {"started": ["myapp.web.1"]}
    assert backend.calls == [Call("start", WEB_1, 0.0)]


def test_start_of_an_application_starts_what_was_stopped(tmp_path: Path) -> None:
    """`start other` after `stop other` starts other.clock.1."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.stop(["other"])
        await supervisor.start(["other"])

    run(scenario)
    assert backend.actions("stop") == ["other.clock.1"]
    assert backend.actions("start") == ["other.clock.1"]


def test_restart_rolling_replaces_instances_one_at_a_time(tmp_path: Path) -> None:
    """`restart --rolling myapp.web` stops and starts web.1 before it touches web.2."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.restart(["myapp.web"], rolling=True)

    assert run(scenario) == {"restarted": ["myapp.web.1", "myapp.web.2"]}
    assert backend.calls == [
        Call("stop", WEB_1),
        Call("start", WEB_1, 0.0),
        Call("stop", WEB_2),
        Call("start", WEB_2, 0.0),
    ]


@pytest.mark.parametrize(
    "spec", ["nope", "myapp.nope", "myapp.web.9", "other.clock.2", "nope.web.1"]
)
@pytest.mark.parametrize("command", ["stop", "start", "restart"])
def test_a_spec_naming_nothing_raises_spec_error(tmp_path: Path, command: str, spec: str) -> None:
    """An exact spec naming no configured app, worker or instance refuses the whole request."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        before = dict(supervisor.formation)
        requests = {
            "stop": lambda: supervisor.stop(["myapp.queue", spec]),
            "start": lambda: supervisor.start(["myapp.queue", spec]),
            "restart": lambda: supervisor.restart(["myapp.queue", spec], rolling=False),
        }
        with pytest.raises(SpecError, match="nothing matches"):
            await requests[command]()
        assert supervisor.formation == before

    run(scenario)
    assert backend.calls == []


def test_a_glob_naming_nothing_is_not_an_error(tmp_path: Path) -> None:
    """`stop 'nope*'` matches nothing and does nothing."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.stop(["nope*"])

    assert run(scenario) == {"stopped": []}
    assert backend.calls == []


# Persistence of the formation


def test_a_runtime_scale_survives_a_daemon_restart(tmp_path: Path) -> None:
    """A new Supervisor on the same state file keeps web=3 and starts nothing new."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> Any:
        first = await running(config_path, backend)
        await first.scale(["myapp.web=3"])
        backend.calls.clear()
        second = await supervising(config_path, backend)
        await second.reconcile(wait=True)
        return await worker_status(second, "myapp.web")

    web = run(scenario)
    assert backend.calls == []
    assert web["desired"] == 3
    saved = json.loads((tmp_path / "state.json").read_text())
    assert {"app": "myapp", "worker": "web", "count": 3, "configured": 2, "stopped": []} in saved[
        "workers"
    ]


def test_a_stopped_instance_stays_stopped_across_a_daemon_restart(tmp_path: Path) -> None:
    """After `stop myapp.web.1`, a new daemon on an empty host starts all but web.1."""
    config_path = write_config(tmp_path)

    async def scenario() -> FakeBackend:
        await (await running(config_path, FakeBackend())).stop(["myapp.web.1"])
        fresh = FakeBackend()
        await (await supervising(config_path, fresh)).reconcile(wait=True)
        return fresh

    fresh = run(scenario)
    assert fresh.actions("start") == ["myapp.queue.1", "myapp.web.2", "other.clock.1"]


def test_a_changed_num_instances_overrides_the_runtime_scale(tmp_path: Path) -> None:
    """web scaled to 4 at run time, then configured 3: the new daemon runs 3."""
    backend = FakeBackend()

    async def scenario() -> Any:
        first = await running(write_config(tmp_path), backend)
        await first.scale(["myapp.web=4"])
        backend.calls.clear()
        second = await supervising(write_config(tmp_path, web_instances=3), backend)
        await second.reconcile(wait=True)
        return await worker_status(second, "myapp.web")

    web = run(scenario)
    assert backend.calls == [Call("stop", InstanceId("myapp", "web", 4))]
    assert web["desired"] == 3


# Reload


def test_reload_with_a_changed_command_replaces_only_that_worker(tmp_path: Path) -> None:
    """web's new command line restarts web.1 then web.2; queue and clock are not touched."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(config_path, backend)
        write_config(tmp_path, procfile="web: gunicorn app:app\nqueue: python worker.py\n")
        await supervisor.reload()

    run(scenario)
    assert backend.calls == [
        Call("stop", WEB_1),
        Call("start", WEB_1, 0.0),
        Call("stop", WEB_2),
        Call("start", WEB_2, 0.0),
    ]


def test_reload_leaves_untouched_instances_running_with_the_same_pid(tmp_path: Path) -> None:
    """Reloading an unchanged configuration keeps every instance and its pid."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(config_path, backend)
        before = {i: o.pid for i, o in backend.instances.items()}
        result = await supervisor.reload()
        return before, result

    before, result = run(scenario)
    assert backend.calls == []
    assert {i: o.pid for i, o in backend.instances.items()} == before
    assert result == {"formation": {"myapp.queue": 1, "myapp.web": 2, "other.clock": 1}}


def test_reload_starts_new_workers_and_stops_removed_ones(tmp_path: Path) -> None:
    """queue removed and mailer added to the Procfile: queue.1 stops, mailer.1 starts."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(config_path, backend)
        procfile = "web: python -m http.server $PORT\nmailer: python mailer.py\n"
        write_config(tmp_path, procfile=procfile)
        await supervisor.reload()

    run(scenario)
    assert backend.actions("stop") == ["myapp.queue.1"]
    assert backend.actions("start") == ["myapp.mailer.1"]


def test_reload_keeps_a_runtime_scale_and_stop(tmp_path: Path) -> None:
    """web=3 and a stopped clock set at run time survive a reload of the same configuration."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(config_path, backend)
        await supervisor.scale(["myapp.web=3"])
        await supervisor.stop(["other"])
        backend.calls.clear()
        return await supervisor.reload()

    assert run(scenario) == {"formation": {"myapp.queue": 1, "myapp.web": 3, "other.clock": 0}}
    assert backend.calls == []


def test_reload_of_an_invalid_configuration_raises_and_changes_nothing(tmp_path: Path) -> None:
    """A typo in the new file is reported; the old configuration and formation stay."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(config_path, backend)
        config, formation = supervisor.config, dict(supervisor.formation)
        write_config(tmp_path, web_instances=5, extra="log_pth: /tmp/x.log\n")
        with pytest.raises(ConfigError, match="log_pth: unknown key"):
            await supervisor.reload()
        assert supervisor.config is config
        assert supervisor.formation == formation

    run(scenario)
    assert backend.calls == []


# Re-attach


def test_instances_already_running_are_adopted_without_a_start(tmp_path: Path) -> None:
    """A new daemon finds the whole formation running and starts no duplicate."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await supervising(write_config(tmp_path), backend)
        for instance in observed(supervisor, WEB_1, WEB_2, QUEUE_1, CLOCK_1):
            backend.instances[instance.id] = instance
        await supervisor.reconcile(wait=True)
        return await instance_status(supervisor, "myapp.web.2")

    web_2 = run(scenario)
    assert backend.calls == []
    assert web_2["state"] == "running"
    assert web_2["pid"] == 101


def test_a_partly_running_formation_gets_only_the_missing_instances(tmp_path: Path) -> None:
    """web.1 and clock.1 already run: only web.2 and queue.1 are started."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await supervising(write_config(tmp_path), backend)
        for instance in observed(supervisor, WEB_1, CLOCK_1):
            backend.instances[instance.id] = instance
        await supervisor.reconcile(wait=True)

    run(scenario)
    assert backend.actions("start") == ["myapp.queue.1", "myapp.web.2"]
    assert backend.actions("stop") == []


def test_instances_no_longer_configured_are_stopped_on_attach(tmp_path: Path) -> None:
    """An instance of a removed application and one beyond web's count are stopped."""
    backend = FakeBackend()
    gone = InstanceId("gone", "web", 1)
    web_3 = InstanceId("myapp", "web", 3)

    async def scenario() -> None:
        supervisor = await supervising(write_config(tmp_path), backend)
        for instance in observed(supervisor, WEB_1, WEB_2, QUEUE_1, CLOCK_1):
            backend.instances[instance.id] = instance
        for extra in (gone, web_3):
            backend.instances[extra] = ObservedInstance(
                extra, InstanceState.RUNNING, fingerprint="0123456789ab"
            )
        await supervisor.reconcile(wait=True)

    run(scenario)
    assert backend.actions("stop") == ["gone.web.1", "myapp.web.3"]
    assert backend.actions("start") == []


def test_an_adopted_instance_with_an_old_definition_is_replaced(tmp_path: Path) -> None:
    """web.1 started from another command line before the daemon restarted is replaced."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await supervising(write_config(tmp_path), backend)
        for instance in observed(supervisor, WEB_2, QUEUE_1, CLOCK_1):
            backend.instances[instance.id] = instance
        backend.instances[WEB_1] = ObservedInstance(
            WEB_1, InstanceState.RUNNING, fingerprint="0123456789ab"
        )
        await supervisor.reconcile(wait=True)

    run(scenario)
    assert backend.calls == [Call("stop", WEB_1), Call("start", WEB_1, 0.0)]


# Crashes and backoff


def test_a_single_crash_is_left_to_the_backend_to_respawn(tmp_path: Path) -> None:
    """The first quick exit is respawned at once by the backend: no stop, no hold."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        backend.crash(WEB_1, Exit(status=127), run_seconds=0.1)
        await supervisor.reconcile(wait=True)
        return await instance_status(supervisor, "myapp.web.1")

    web_1 = run(scenario)
    assert backend.calls == []
    assert web_1["state"] == "running"
    assert web_1["restarts"] == 1
    assert web_1["last_exit"] == "exit 127: command not found"


def test_a_crash_loop_backs_off_and_then_starts_again(tmp_path: Path) -> None:
    """Two quick exits: status shows backoff, the backend's respawn is taken over by a stop,
    and the instance is started again with a longer restart delay once the wait is over."""
    backend = FakeBackend()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        supervisor = await running(write_config(tmp_path), backend)
        backend.crash(WEB_1, Exit(status=1), run_seconds=0.1)
        backend.crash(WEB_1, Exit(status=1), run_seconds=0.1)
        during = await instance_status(supervisor, "myapp.web.1")

        async def stopped_for_rearm() -> bool:
            return backend.actions("stop") == ["myapp.web.1"]

        await eventually(stopped_for_rearm, "a stop of web.1 to take over its respawn")
        await supervisor.reconcile(wait=True)
        assert backend.actions("start") == [], "started while still backing off"

        async def backoff_over() -> bool:
            web_1 = await instance_status(supervisor, "myapp.web.1")
            return bool(web_1["state"] != "backoff")

        await eventually(backoff_over, "the end of web.1's backoff")
        await supervisor.reconcile(wait=True)
        return during, await instance_status(supervisor, "myapp.web.1")

    during, after = run(scenario)
    assert during["state"] == "backoff"
    assert 0 < during["next_try_in"] <= 0.5
    assert during["last_exit"] == "exit 1"
    assert during["restarts"] == 2
    assert backend.calls == [Call("stop", WEB_1), Call("start", WEB_1, 1.0)]
    assert after["state"] == "running"


def test_a_long_run_resets_the_backoff(tmp_path: Path) -> None:
    """After a backoff, a crash following a long healthy run is respawned at once,
    and the backend is armed again with the first backoff step."""
    backend = FakeBackend()

    async def scenario() -> dict[str, Any]:
        supervisor = await running(write_config(tmp_path), backend)
        backend.crash(WEB_1, Exit(status=1), run_seconds=0.1)
        backend.crash(WEB_1, Exit(status=1), run_seconds=0.1)

        async def backoff_over() -> bool:
            web_1 = await instance_status(supervisor, "myapp.web.1")
            return bool(web_1["state"] != "backoff")

        await eventually(backoff_over, "the end of web.1's backoff")
        await supervisor.reconcile(wait=True)
        backend.calls.clear()

        backend.crash(WEB_1, Exit(signal=9), run_seconds=3600.0)

        async def stopped_for_rearm() -> bool:
            state = (await instance_status(supervisor, "myapp.web.1"))["state"]
            return backend.actions("stop") == ["myapp.web.1"] and state != "backoff"

        await eventually(stopped_for_rearm, "web.1 taken over for an immediate respawn")
        await supervisor.reconcile(wait=True)
        return await instance_status(supervisor, "myapp.web.1")

    web_1 = run(scenario)
    assert backend.calls == [Call("stop", WEB_1), Call("start", WEB_1, 0.5)]
    assert web_1["state"] == "running"
    assert web_1["last_exit"] == "killed by SIGKILL"


def test_a_deliberate_start_skips_the_backoff_wait(tmp_path: Path) -> None:
    """`start myapp.web.1` during a backoff starts it at once."""
    backend = FakeBackend()

    async def scenario() -> dict[str, Any]:
        supervisor = await running(write_config(tmp_path), backend)
        for _ in range(4):  # the fourth quick exit waits 2 s
            backend.crash(WEB_1, Exit(status=1), run_seconds=0.1)

        async def stopped_for_rearm() -> bool:
            return WEB_1 not in backend.instances

        await eventually(stopped_for_rearm, "web.1 stopped to wait out its backoff")
        await supervisor.start(["myapp.web.1"])
        return await instance_status(supervisor, "myapp.web.1")

    web_1 = run(scenario)
    assert backend.actions("start") == ["myapp.web.1"]
    assert web_1["state"] == "running"


def test_a_crash_of_an_instance_that_is_not_desired_is_ignored(tmp_path: Path) -> None:
    """An exit reported for a stopped instance counts no restart and holds nothing."""
    backend = FakeBackend()

    async def scenario() -> dict[str, Any]:
        supervisor = await running(write_config(tmp_path), backend)
        await supervisor.stop(["myapp.web.2"])
        backend.calls.clear()
        for _ in range(3):
            backend.crash(WEB_2, Exit(status=1), run_seconds=0.1)
        return await instance_status(supervisor, "myapp.web.2")

    web_2 = run(scenario)
    assert backend.calls == []
    assert web_2["state"] == "stopped"
    assert web_2["restarts"] == 0


def test_an_adopted_instance_armed_with_a_long_delay_is_respawned_at_once(
    tmp_path: Path,
) -> None:
    """An instance re-attached with a 60 s restart delay that dies after an hour is taken
    over and started at once, not left to wait out the old delay."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await supervising(write_config(tmp_path), backend)
        for instance in observed(supervisor, WEB_1, WEB_2, QUEUE_1, CLOCK_1):
            backend.instances[instance.id] = instance
        backend.instances[WEB_1] = ObservedInstance(
            WEB_1,
            InstanceState.RUNNING,
            fingerprint=backend.instances[WEB_1].fingerprint,
            restart_delay=60.0,
        )
        await supervisor.reconcile(wait=True)
        backend.crash(WEB_1, Exit(status=1), run_seconds=3600.0)

        async def taken_over() -> bool:
            return backend.actions("stop") == ["myapp.web.1"]

        # The take-over is immediate; half a second is ample and keeps the suite fast.
        await eventually(taken_over, "web.1 taken over from its 60 s restart delay", 0.5)

    run(scenario)


# Status


def test_status_follows_the_documented_schema(tmp_path: Path) -> None:
    """status has daemon{pid,backend,version} and applications[workers[instances[...]]]."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.status([])

    status = run(scenario)
    assert set(status) == {"daemon", "applications"}
    assert set(status["daemon"]) == {"pid", "backend", "version"}
    assert status["daemon"]["backend"] == "fake"
    assert isinstance(status["daemon"]["pid"], int)
    assert isinstance(status["daemon"]["version"], str)
    assert [a["name"] for a in status["applications"]] == ["myapp", "other"]
    myapp = status["applications"][0]
    assert set(myapp) == {"name", "limits", "workers"}
    assert [w["name"] for w in myapp["workers"]] == ["web", "queue"]
    web = myapp["workers"][0]
    assert {"name", "command_line", "desired", "instances"} <= set(web)
    assert web["command_line"] == "python -m http.server $PORT"
    assert web["desired"] == 2
    first = web["instances"][0]
    assert {
        "number",
        "state",
        "pid",
        "started_at",
        "restarts",
        "last_exit",
        "memory_bytes",
        "cpu_seconds",
    } <= set(first)
    assert first["number"] == 1
    assert first["state"] == "running"
    assert isinstance(first["pid"], int)
    assert first["restarts"] == 0
    assert first["last_exit"] is None
    states = {"starting", "running", "stopping", "stopped", "backoff", "failed"}
    every = [i for a in status["applications"] for w in a["workers"] for i in w["instances"]]
    assert {i["state"] for i in every} <= states
    json.dumps(status)  # it goes over the socket as it is


def test_status_of_a_spec_shows_only_what_it_names(tmp_path: Path) -> None:
    """`status myapp.web.2` lists one application, one worker, one instance."""
    backend = FakeBackend()

    async def scenario() -> Any:
        supervisor = await running(write_config(tmp_path), backend)
        return await supervisor.status(["myapp.web.2"])

    status = run(scenario)
    assert [
        (a["name"], w["name"], [i["number"] for i in w["instances"]])
        for a in status["applications"]
        for w in a["workers"]
    ] == [("myapp", "web", [2])]


def test_status_of_an_unknown_application_raises_spec_error(tmp_path: Path) -> None:
    """`status nope` names nothing and says so."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        with pytest.raises(SpecError, match="nothing matches nope"):
            await supervisor.status(["nope"])

    run(scenario)


@pytest.mark.parametrize("spec", ["myapp.nope", "myapp.web.9"])
def test_status_of_an_unknown_worker_or_instance_raises_spec_error(
    tmp_path: Path, spec: str
) -> None:
    """`status myapp.nope` and `status myapp.web.9` name nothing, as stop would say."""
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(write_config(tmp_path), backend)
        with pytest.raises(SpecError, match="nothing matches"):
            await supervisor.status([spec])

    run(scenario)


def test_reload_applies_changed_limits_without_restarting(tmp_path: Path) -> None:
    """New web limits go to web.1 and web.2 live: no stop, no start; unchanged apps untouched."""
    config_path = write_config(tmp_path)
    backend = FakeBackend()

    async def scenario() -> None:
        supervisor = await running(config_path, backend)
        text = config_path.read_text().replace(
            "        num_instances: 2\n",
            "        num_instances: 2\n        limits: {memory: 256M, tasks: 64}\n",
        )
        config_path.write_text(text)
        await supervisor.reload()

    run(scenario)
    assert backend.calls == []
    web = Limits(memory_bytes=256 * 1024**2, tasks=64)
    assert backend.limits_set == [
        ("myapp", Limits(), {WEB_1: web, WEB_2: web, InstanceId("myapp", "queue", 1): Limits()})
    ]
