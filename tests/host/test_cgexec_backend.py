"""The libcgroup backend on this host's real cgroups: what runs where, and what survives what.

Every assertion that matters is checked against the kernel (`/proc`, `cgroup.procs`, the
cgroup directories), not only against what the backend says.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pazuzu.backends.cgexec import LOG_CGROUP, SANE_PATH, CgexecBackend, is_available
from pazuzu.errors import BackendError
from pazuzu.model import CgroupsConfig, Exit, InstanceId, InstanceState
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
        for subsystem in [*mounted, "freezer", "pids"]:
            assert pid in procs(FS_ROOT / subsystem / root / "app" / "web" / "1"), subsystem
        listed = await backend.list_instances()
        assert listed[WEB_1].state is InstanceState.RUNNING
        assert listed[WEB_1].fingerprint == host.spec(SLEEP).fingerprint

    host.run(scenario)


def test_what_a_worker_forks_at_once_starts_inside_its_cgroups(host: Host) -> None:
    """A child forked by the command's first line is in the instance's cgroups from birth.

    The worker's shell is held until the daemon has put it in its cgroups, so no process of
    an instance can escape a stop by starting before the move. libcgroup's own `lscgroup`
    lists the groups the backend made.
    """

    async def scenario() -> None:
        backend, _ = await host.open()
        await backend.start(host.spec("sleep 1001 & exec sleep 1000"), restart_delay=0.0)
        dirs = instance_dirs(backend)
        pid = main_pid(backend)
        assert pid is not None
        # No wait: start() returns with the main process in every hierarchy.
        assert all(pid in procs(d) for d in dirs), [str(d) for d in dirs if pid not in procs(d)]

        def forked() -> set[int]:
            return {
                int(p.name)
                for p in Path("/proc").iterdir()
                if p.name.isdigit() and _comm_and_ppid(p) == ("sleep", pid)
            }

        await wait_for(lambda: bool(forked()), what="the background sleep")
        (child,) = forked()
        assert all(child in procs(d) for d in dirs)
        listed = subprocess.run(
            ["lscgroup", f"memory:/{host.cgroups.hierarchy_root}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert f"memory:/{host.cgroups.hierarchy_root}/app/web/1" in listed

    host.run(scenario)


def _comm_and_ppid(proc: Path) -> tuple[str, int] | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    return comm, int(stat[stat.rindex(")") + 2 :].split()[1])


def test_a_cpuset_group_gets_its_parents_cpus_and_memory_nodes(host: Host) -> None:
    """With `cpuset` configured, the new groups inherit the CPUs and nodes a worker needs."""
    if not (FS_ROOT / "cpuset" / "cpuset.cpus").exists():
        pytest.skip("no v1 cpuset hierarchy on this host")
    host.cgroups = CgroupsConfig(
        hierarchy_root=host.cgroups.hierarchy_root, subsystems=("memory", "cpuset")
    )

    async def scenario() -> None:
        backend, _ = await host.open()
        await backend.start(host.spec(SLEEP), restart_delay=0.0)
        pid = await observed_pid(backend)
        group = FS_ROOT / "cpuset" / host.cgroups.hierarchy_root / "app" / "web" / "1"
        assert pid in procs(group)
        top = (FS_ROOT / "cpuset" / "cpuset.cpus").read_text().strip()
        assert (group / "cpuset.cpus").read_text().strip() == top
        assert (group / LOG_CGROUP / "cpuset.mems").read_text().strip()

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
        await backend.start(host.spec("echo run; sleep 1000"), restart_delay=0.0)
        first = await observed_pid(backend)
        logger = procs(instance_dirs(backend)[0] / LOG_CGROUP)
        leftover = await wait_for(
            lambda: procs(instance_dirs(backend)[0]) - {first},
            what="the shell's child in the cgroup too",
        )
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
        assert procs(instance_dirs(backend)[0] / LOG_CGROUP) == logger, "the same logger"
        current = backend.log_directory(WEB_1) / "current"
        await wait_for(
            lambda: current.exists() and current.read_text().count(" run\n") == 2,
            what="both runs' output in one log",
        )

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


def test_start_during_backoff_runs_at_once_and_stop_cancels_the_respawn(host: Host) -> None:
    """A crashed instance waiting 60 s is started now by start(); stop() cancels its respawn."""

    async def scenario() -> None:
        backend, events = await host.open()
        await backend.start(host.spec(SLEEP), restart_delay=60.0)
        first = await observed_pid(backend)
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: events.exits, what="the exit report")
        await backend.start(host.spec(SLEEP), restart_delay=60.0)
        second = await observed_pid(backend)
        assert second != first
        assert second in procs(instance_dirs(backend)[0])

        os.kill(second, signal.SIGKILL)
        await wait_for(lambda: len(events.exits) == 2, what="the second exit report")
        assert (await backend.list_instances())[WEB_1].state is InstanceState.BACKOFF
        await backend.stop(WEB_1, timeout=1.0)
        assert WEB_1 not in await backend.list_instances()
        assert not backend._instances, "no respawn is pending"
        assert not [path for path in instance_dirs(backend) if path.exists()]

    host.run(scenario)


# A worker whose every process ignores SIGTERM, one of them a grandchild whose parent exited
# (a double fork: it is no longer our descendant, only a member of the cgroup).
STUBBORN = (
    "trap '' TERM; "
    "(trap '' TERM; sh -c \"trap '' TERM; echo \\$\\$ > orphan.pid; exec sleep 1000\" &); "
    "sleep 1000 & exec sleep 1000"
)


def test_stop_kills_a_tree_that_ignores_sigterm_and_double_forks(host: Host) -> None:
    """Stopping leaves no process of the instance alive, and no cgroup or metadata behind."""

    async def scenario() -> None:
        backend, events = await host.open()
        await backend.start(host.spec(STUBBORN), restart_delay=0.0)
        dirs = instance_dirs(backend)
        orphan_file = host.workdir / "orphan.pid"
        await wait_for(lambda: orphan_file.exists() and orphan_file.read_text().strip())
        orphan = int(orphan_file.read_text())

        def tree() -> set[int] | None:
            members = procs(dirs[0])
            return members if len(members) >= 3 else None

        members = await wait_for(tree, what="the main process, its child and the orphan")
        assert orphan in members
        logger = procs(dirs[0] / LOG_CGROUP)
        assert logger
        started = time.monotonic()
        await backend.stop(WEB_1, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 3.0
        assert not [pid for pid in members | logger if alive(pid)]
        assert not [path for path in dirs if path.exists()]
        assert not (FS_ROOT / "freezer" / host.cgroups.hierarchy_root / "app").exists()
        assert not backend.metadata_path(WEB_1).exists()
        assert WEB_1 not in await backend.list_instances()
        assert events.exits == [], "a stop is not a crash"

    host.run(scenario)


def test_stopping_an_instance_that_does_not_exist_does_nothing(host: Host) -> None:
    """stop() of an unknown instance returns at once, without error."""

    async def scenario() -> None:
        backend, events = await host.open()
        await backend.stop(InstanceId("app", "nope", 7), timeout=1.0)
        assert events.changes == []

    host.run(scenario)


def test_a_new_backend_adopts_running_instances_and_respawns_them(host: Host) -> None:
    """After a daemon restart the instance keeps its pid; its later death is seen and healed."""

    async def scenario() -> None:
        first, _ = await host.open()
        spec = host.spec(SLEEP)
        await first.start(spec, restart_delay=0.0)
        pid = await observed_pid(first)
        await first.close()
        members = procs(instance_dirs(first)[0]) | procs(instance_dirs(first)[0] / LOG_CGROUP)

        second, events = await host.open()
        seen = (await second.list_instances(details=True))[WEB_1]
        assert (seen.state, seen.pid, seen.fingerprint) == (
            InstanceState.RUNNING,
            pid,
            spec.fingerprint,
        )
        dirs = instance_dirs(second)
        assert procs(dirs[0]) | procs(dirs[0] / LOG_CGROUP) == members, "nothing new started"
        await second.start(spec, restart_delay=0.0)  # the daemon's reconcile may ask again
        assert procs(dirs[0]) == {pid}, "no duplicate"

        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # the dead daemon's child: reaped here, as init would
        respawned = await wait_for(
            lambda: main_pid(second) not in (None, pid) and main_pid(second), timeout=2.0
        )
        await wait_for(lambda: respawned in procs(dirs[0]), timeout=2.0)
        assert [e.exit for e in events.exits] == [Exit()], "a non-child's status is unknown"
        assert str(events.exits[0].exit) == "unknown"

    host.run(scenario)


def test_a_recorded_pid_outside_the_cgroup_is_not_trusted(host: Host) -> None:
    """Metadata naming a live process that is not in the instance's cgroup is ignored."""

    async def scenario() -> None:
        first, _ = await host.open()
        await first.start(host.spec(SLEEP), restart_delay=0.0)
        pid = await observed_pid(first)
        await first.close()
        with subprocess.Popen(["sleep", "1000"]) as decoy:
            try:
                path = first.metadata_path(WEB_1)
                metadata = json.loads(path.read_text())
                stat = Path(f"/proc/{decoy.pid}/stat").read_text()
                metadata["main_pid"] = decoy.pid
                metadata["main_start"] = int(stat[stat.rindex(")") + 2 :].split()[19])
                path.write_text(json.dumps(metadata))

                second, _ = await host.open()
                assert await observed_pid(second) == pid
            finally:
                decoy.kill()

    host.run(scenario)


def test_metadata_is_private(host: Host) -> None:
    """The metadata holds the environment: mode 0600, in the run directory."""

    async def scenario() -> None:
        backend, _ = await host.open()
        spec = host.spec(SLEEP, environment=(("SECRET", "s3cr3t"),))
        await backend.start(spec, restart_delay=0.25)
        path = backend.metadata_path(WEB_1)
        assert path == host.run_dir / "app" / "web" / "1.json"
        assert path.stat().st_mode & 0o777 == 0o600
        saved = json.loads(path.read_text())
        assert saved["fingerprint"] == spec.fingerprint
        assert saved["restart_delay"] == 0.25
        assert saved["spec"]["environment"] == [["SECRET", "s3cr3t"]]

    host.run(scenario)


FLOOD = "while :; do echo 'a line of output that floods the log, again and again'; done"


def test_a_flooding_worker_costs_bounded_disk_and_keeps_running(host: Host) -> None:
    """svlogd rotates at max_bytes and keeps `keep` old files; the worker is never blocked."""

    max_bytes, keep = 8192, 3

    async def scenario() -> None:
        backend, _ = await host.open(log_max_bytes=max_bytes, log_keep=keep)
        await backend.start(host.spec(FLOOD), restart_delay=0.0)
        pid = await observed_pid(backend)
        directory = backend.log_directory(WEB_1)

        def rotated() -> list[Path]:
            return sorted(directory.glob("@*"))

        await wait_for(lambda: len(rotated()) >= keep, timeout=10.0, what="rotated files")
        # Keep flooding for a while longer, past many more rotations.
        first_rotated = rotated()[0]
        await wait_for(lambda: not first_rotated.exists(), timeout=10.0, what="old files pruned")
        files = [directory / "current", *rotated()]
        total = sum(path.stat().st_size for path in files if path.exists())
        # While svlogd rotates, the renamed file may briefly sit beside `keep` old ones.
        assert len(rotated()) <= keep + 1
        assert total <= (keep + 1) * max_bytes + 2048
        assert alive(pid)
        assert main_pid(backend) == pid, "never restarted"

    host.run(scenario)


def test_details_come_from_the_cgroups_accounting(host: Host) -> None:
    """Memory and CPU of an instance are its cgroup's, pid is the main pid, start is now."""

    async def scenario() -> None:
        backend, _ = await host.open()
        before = time.time()
        busy = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 1000"
        await backend.start(host.spec(busy), restart_delay=0.0)
        pid = await observed_pid(backend)
        await running_command(pid)
        seen = (await backend.list_instances(details=True))[WEB_1]
        rel = backend.cgroup_path(WEB_1)
        usage_ns = int((FS_ROOT / "cpuacct" / rel / "cpuacct.usage").read_text())
        assert seen.cpu_seconds is not None
        assert 0 < seen.cpu_seconds <= usage_ns / 1e9
        assert seen.memory_bytes is not None
        assert seen.memory_bytes > 0
        assert (FS_ROOT / "memory" / rel / "memory.usage_in_bytes").exists()
        assert seen.pid == pid
        assert seen.started_at is not None
        assert before <= seen.started_at <= time.time()
        assert (seen.restarts, seen.last_exit) == (0, None)

    host.run(scenario)


def test_cgroup2_instances_start_crash_respawn_and_stop(unified_host: Host) -> None:
    """On a cgroup2 hierarchy the same tree is made, joined, frozen and removed."""
    host = unified_host

    async def scenario() -> None:
        backend, events = await host.open()
        await backend.start(host.spec("sleep 1000"), restart_delay=0.0)
        pid = await observed_pid(backend)
        (directory,) = instance_dirs(backend)
        assert directory == host.cgroups.fs_root / backend.cgroup_path(WEB_1)
        assert pid in procs(directory)
        assert procs(directory / LOG_CGROUP)
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: main_pid(backend) not in (None, pid), timeout=2.0)
        assert [str(e.exit) for e in events.exits] == ["killed by SIGKILL"]
        members = await wait_for(lambda: procs(directory))
        seen = (await backend.list_instances(details=True))[WEB_1]
        assert seen.cpu_seconds is not None
        await backend.stop(WEB_1, timeout=1.0)
        assert not [p for p in members if alive(p)]
        assert not (host.cgroups.fs_root / host.cgroups.hierarchy_root / "app").exists()

    host.run(scenario)


def test_unmounted_subsystems_are_skipped_with_one_log_line(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    """A configured subsystem that is not mounted is named once in the log, and skipped."""
    host.cgroups = CgroupsConfig(
        hierarchy_root=host.cgroups.hierarchy_root, subsystems=("memory", "nosuchsubsystem")
    )

    async def scenario() -> None:
        with caplog.at_level(logging.INFO, logger="pazuzu.backends.cgexec"):
            backend, _ = await host.open()
        skipped = [r.getMessage() for r in caplog.records if "not mounted" in r.getMessage()]
        assert len(skipped) == 1
        assert "nosuchsubsystem" in skipped[0]
        await backend.start(host.spec(SLEEP), restart_delay=0.0)
        pid = await observed_pid(backend)
        assert [d.parts[4] for d in instance_dirs(backend)] == ["memory", "freezer", "pids"]
        assert all(pid in procs(d) for d in instance_dirs(backend))

    host.run(scenario)


def test_a_start_that_fails_leaves_nothing_behind(host: Host) -> None:
    """A missing working directory is a BackendError, with no process or cgroup left."""

    async def scenario() -> None:
        backend, _ = await host.open()
        spec = host.spec(SLEEP)
        host.workdir.rmdir()
        with pytest.raises(BackendError, match=r"cannot start app\.web\.1"):
            await backend.start(spec, restart_delay=0.0)
        assert not [path for path in instance_dirs(backend) if path.exists()]
        assert WEB_1 not in await backend.list_instances()
        assert not backend.fifo_path(WEB_1).exists()

    host.run(scenario)


def test_an_instance_that_died_while_no_daemon_watched_is_cleaned_up(host: Host) -> None:
    """On open, a cgroup whose processes are all gone is removed, its logger stopped."""

    async def scenario() -> None:
        first, _ = await host.open()
        await first.start(host.spec(SLEEP), restart_delay=0.0)
        pid = await observed_pid(first)
        dirs = instance_dirs(first)
        logger = procs(dirs[0] / LOG_CGROUP)
        await first.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

        second, events = await host.open()
        assert WEB_1 not in await second.list_instances()
        assert not [p for p in logger if alive(p)]
        assert not [path for path in dirs if path.exists()]
        assert not second.metadata_path(WEB_1).exists()
        assert events.exits == []

    host.run(scenario)


def test_is_available_explains_a_missing_cgroup_filesystem(tmp_path: Path) -> None:
    """Without cgroups at fs_root the reason names the directory and the setting."""
    if os.geteuid() != 0:
        pytest.skip("is_available() first checks for root")
    reason = is_available(CgroupsConfig(fs_root=tmp_path))
    assert reason is not None
    assert str(tmp_path) in reason
    assert "cgroups.fs_root" in reason
