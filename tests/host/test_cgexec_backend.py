"""The libcgroup backend on this host's real cgroups: what runs where, and what survives what.

Every assertion that matters is checked against the kernel (`/proc`, `cgroup.procs`, the
cgroup directories), not only against what the backend says.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pazuzu.backends.cgexec import LOG_CGROUP, SANE_PATH, CgexecBackend
from pazuzu.model import Exit, InstanceId, InstanceState
from tests.host.conftest import FS_ROOT, Host, alive, procs, wait_for

WEB_1 = InstanceId("app", "web", 1)
SLEEP = "exec sleep 1000"


def main_pid(backend: CgexecBackend, instance: InstanceId = WEB_1) -> int | None:
    """The main pid the backend reports, for a synchronous poll."""
    record = backend._instances.get(instance)
    return record.main_pid if record is not None else None


async def observed_pid(backend: CgexecBackend, instance: InstanceId = WEB_1) -> int:
    seen = (await backend.list_instances(details=True))[instance]
    assert seen.pid is not None
    return seen.pid


async def running_command(pid: int, name: str = "sleep") -> int:
    """Wait until `pid` has exec'd `name` (past cgexec, setpriv and the shell)."""

    def command() -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == name
        except OSError:
            return False

    await wait_for(command, what=f"pid {pid} to run {name}")
    return pid


def instance_dirs(backend: CgexecBackend, instance: InstanceId = WEB_1) -> list[Path]:
    return backend.cgroup_dirs(instance)


def test_start_puts_the_main_process_in_every_mounted_subsystem(host: Host) -> None:
    """A started instance's main process is in its cgroup of each configured subsystem."""

    async def scenario() -> None:
        backend, _ = await host.open()
        await backend.start(host.spec(SLEEP), restart_delay=0.0)
        pid = await observed_pid(backend)
        root = host.cgroups.hierarchy_root
        mounted = [s for s in host.cgroups.subsystems if (FS_ROOT / s / "cgroup.procs").exists()]
        assert mounted, "no configured subsystem is mounted on this host"
        for subsystem in [*mounted, "freezer"]:
            assert pid in procs(FS_ROOT / subsystem / root / "app" / "web" / "1"), subsystem
        listed = await backend.list_instances()
        assert listed[WEB_1].state is InstanceState.RUNNING
        assert listed[WEB_1].fingerprint == host.spec(SLEEP).fingerprint

    host.run(scenario)


def test_environment_and_directory_are_exactly_the_specs(host: Host) -> None:
    """The command sees the spec's environment plus PATH, and runs in the spec's directory.

    (`/bin/sh -c` itself adds PWD, as it does under systemd.)
    """

    async def scenario() -> None:
        backend, _ = await host.open()
        spec = host.spec(SLEEP, environment=(("FOO", "bar baz"), ("PORT", "5000")))
        await backend.start(spec, restart_delay=0.0)
        pid = await running_command(await observed_pid(backend))
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environment = dict(item.decode().split("=", 1) for item in raw if item)
        assert environment.pop("PWD") == str(host.workdir)
        assert environment == {"FOO": "bar baz", "PORT": "5000", "PATH": SANE_PATH}
        assert os.readlink(f"/proc/{pid}/cwd") == str(host.workdir)
        assert os.getsid(pid) == pid  # its own session: no terminal, no daemon's signals

    host.run(scenario)


def test_runs_as_the_specs_user(host: Host) -> None:
    """With `user: nobody` the command's real and effective ids are nobody's."""

    async def scenario() -> None:
        backend, _ = await host.open()
        await backend.start(host.spec(SLEEP, user="nobody"), restart_delay=0.0)
        pid = await running_command(await observed_pid(backend))
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert uids == ["65534"] * 4

    host.run(scenario)


def test_output_lands_in_the_instance_log(host: Host) -> None:
    """stdout and stderr of an instance are written to its log's `current` file."""

    async def scenario() -> None:
        backend, _ = await host.open()
        await backend.start(
            host.spec(f"echo to-stdout; echo to-stderr >&2; {SLEEP}"), restart_delay=0.0
        )
        source = backend.log_source([WEB_1])
        assert source.files == (str(host.log_dir / "app" / "web.1" / "current"),)
        current = Path(source.files[0])

        def logged() -> bool:
            text = current.read_text() if current.exists() else ""
            return "to-stdout" in text and "to-stderr" in text

        await wait_for(logged, what="both lines in the log")
        logger = procs(instance_dirs(backend)[0] / LOG_CGROUP)
        assert len(logger) == 1, "one logger, in the instance's log cgroup"
        assert os.getppid() not in logger

    host.run(scenario)


def test_sigkill_of_the_main_process_is_reported_and_respawned_at_once(host: Host) -> None:
    """A main process killed by SIGKILL: on_exit says so, and a new one runs within 100 ms."""

    async def scenario() -> None:
        backend, events = await host.open()
        # Not `exec`: dash forks `sleep`, which must die with the rest of the cgroup.
        await backend.start(host.spec("sleep 1000"), restart_delay=0.0)
        first = await observed_pid(backend)
        leftover = procs(instance_dirs(backend)[0]) - {first}
        assert leftover, "the shell's child is in the cgroup too"
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)

        def respawned() -> int | None:
            pid = main_pid(backend)
            if pid in (None, first) or pid not in procs(instance_dirs(backend)[0]):
                return None
            return pid

        second = await wait_for(respawned, timeout=2.0, what="a new main process")
        elapsed = time.monotonic() - killed_at
        assert elapsed < 0.1, f"respawn took {elapsed * 1000:.0f} ms"
        assert [str(e.exit) for e in events.exits] == ["killed by SIGKILL"]
        assert events.exits[0].instance == WEB_1
        assert WEB_1 in events.changes
        assert not any(alive(pid) for pid in leftover), "the rest of the old run was stopped"
        seen = (await backend.list_instances(details=True))[WEB_1]
        assert (seen.pid, seen.restarts, seen.last_exit) == (second, 1, Exit(signal=9))

    host.run(scenario)


def test_restart_delay_is_respected(host: Host) -> None:
    """With restart_delay 0.5 the instance is in backoff, with no process, for 0.5 s."""

    async def scenario() -> None:
        backend, events = await host.open()
        await backend.start(host.spec(SLEEP), restart_delay=0.5)
        first = await observed_pid(backend)
        os.kill(first, signal.SIGTERM)
        killed_at = time.monotonic()
        await wait_for(lambda: events.exits, what="the exit report")
        assert (await backend.list_instances())[WEB_1].state is InstanceState.BACKOFF
        assert not procs(instance_dirs(backend)[0])
        await wait_for(
            lambda: main_pid(backend) not in (None, first), timeout=3.0, what="the respawn"
        )
        assert time.monotonic() - killed_at >= 0.5
        assert str(events.exits[0].exit) == "killed by SIGTERM"
        assert (await backend.list_instances())[WEB_1].state is InstanceState.RUNNING

    host.run(scenario)
