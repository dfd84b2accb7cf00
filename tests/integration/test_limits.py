"""Resource limits from the configuration, on both backends: applied, changed live, enforced.

Ground truth is systemd's unit properties on the systemd backend, and the cgroup files with
libcgroup. Inside the test container the cgroup v1 controllers are read-only, so systemd's
enforcement of a limit is only checked on the host (libcgroup), where the kernel enforces it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.container import wait_until
from tests.integration.deployment import Deployment, Target
from tests.integration.host import FS_ROOT, HostDeployment
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends

UNLIMITED = 2**64 - 1


def limited_config(deployment: Target, *, memory: str, tasks: int, app_memory: str) -> None:
    deployment.write_config(
        f"applications:\n  lim:\n    procfile: {deployment.app_dir('lim')}\n"
        f"    limits:\n      memory: {app_memory}\n"
        "    workers:\n      web:\n        num_instances: 2\n"
        f"        limits:\n          memory: {memory}\n          cpu: 50%\n"
        f"          tasks: {tasks}\n"
    )


def limits_of(deployment: Target, path: tuple[str, ...]) -> dict[str, int]:
    """memory, cpu (µs of CPU per second) and tasks limits of an app (`lim`) or an instance."""
    if isinstance(deployment, Deployment):
        if len(path) == 1:
            unit = f"pazuzu-{path[0]}.slice"
        else:
            unit = f"pazuzu-{path[0]}-{path[1]}@{path[2]}.service"
        out = deployment.sh(
            f"systemctl show -p MemoryMax -p CPUQuotaPerSecUSec -p TasksMax '{unit}'"
        ).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

        def number(text: str) -> int:
            return UNLIMITED if text == "infinity" else int(text)

        return {
            "memory": number(values["MemoryMax"]),
            "cpu": _microseconds(values.get("CPUQuotaPerSecUSec", "infinity")),
            "tasks": number(values["TasksMax"]),
        }
    assert isinstance(deployment, HostDeployment)
    rel = Path(deployment.hierarchy, *path)
    quota = int((FS_ROOT / "cpu" / rel / "cpu.cfs_quota_us").read_text())
    period = int((FS_ROOT / "cpu" / rel / "cpu.cfs_period_us").read_text())
    tasks = (FS_ROOT / "pids" / rel / "pids.max").read_text().strip()
    return {
        "memory": int((FS_ROOT / "memory" / rel / "memory.limit_in_bytes").read_text()),
        "cpu": UNLIMITED if quota < 0 else quota * 1_000_000 // period,
        "tasks": UNLIMITED if tasks == "max" else int(tasks),
    }


def _microseconds(text: str) -> int:
    """systemctl's time spans (`500ms`, `1s`, `infinity`) in microseconds."""
    if text == "infinity":
        return UNLIMITED
    for suffix, factor in (("us", 1), ("ms", 1_000), ("s", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(text)


def test_limits_are_applied_and_a_reload_changes_them_without_a_restart(
    deployment: Target,
) -> None:
    """Worker limits land on each instance, app limits on the app; reload changes them live."""
    deployment.write_procfile("lim", "web: exec sleep 1000\n")
    limited_config(deployment, memory="64M", tasks=50, app_memory="1G")
    deployment.start_daemon()
    first = {n: deployment.pid_of(f"lim.web.{n}") for n in (1, 2)}
    assert limits_of(deployment, ("lim", "web", "1")) == {
        "memory": 64 * 1024**2,
        "cpu": 500_000,
        "tasks": 50,
    }
    assert limits_of(deployment, ("lim",))["memory"] == 1024**3
    worker = deployment.status("lim")["applications"][0]["workers"][0]
    assert worker["limits"] == {"memory_bytes": 64 * 1024**2, "cpu_percent": 50.0, "tasks": 50}

    limited_config(deployment, memory="128M", tasks=80, app_memory="2G")
    deployment.cli("reload")
    for number in ("1", "2"):
        instance = ("lim", "web", number)

        def changed(instance: tuple[str, ...] = instance) -> bool:
            return limits_of(deployment, instance)["tasks"] == 80

        wait_until(changed, timeout=10, message="the new task limit")
        assert limits_of(deployment, instance)["memory"] == 128 * 1024**2
    assert limits_of(deployment, ("lim",))["memory"] == 2 * 1024**3
    assert {n: deployment.pid_of(f"lim.web.{n}") for n in (1, 2)} == first


def test_a_fork_bomb_is_held_by_the_task_limit(deployment: Target) -> None:
    """A worker forking 200 sleepers under `tasks: 20` never has more than 20 processes."""
    deployment.write_procfile(
        "bomb", "web: for i in $(seq 200); do sleep 1000 & done; wait\nok: exec sleep 1000\n"
    )
    deployment.write_config(
        f"applications:\n  bomb:\n    procfile: {deployment.app_dir('bomb')}\n"
        "    workers:\n      web:\n        limits:\n          tasks: 20\n"
    )
    deployment.start_daemon()
    if isinstance(deployment, Deployment):
        # In the container systemd accepts TasksMax= but cannot enforce it (read-only pids
        # controller): check that it was set, and the daemon and its other worker are fine.
        assert limits_of(deployment, ("bomb", "web", "1"))["tasks"] == 20
    else:
        assert isinstance(deployment, HostDeployment)
        events = FS_ROOT / "pids" / deployment.hierarchy / "bomb" / "web" / "1" / "pids.events"

        def refused_forks() -> int:
            """The kernel's own count of forks it refused at the limit."""
            try:
                return int(events.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                return 0

        wait_until(refused_forks, timeout=10, message="the kernel to refuse a fork of the bomb")
        assert len(deployment.instance_pids().get("bomb.web.1", set())) <= 20
    assert "bomb.ok.1" in deployment.running()
    assert deployment.cli("status", "bomb.ok").returncode == 0


@pytest.mark.cgexec
def test_an_instance_killed_over_its_memory_limit_says_out_of_memory(
    host: HostDeployment,
) -> None:
    """A worker that outgrows `limits.memory` is OOM-killed; status says so in words."""
    host.write_procfile("oom", "web: exec python3 -c 'b = bytearray(512 * 1024 * 1024)'\n")
    host.write_config(
        f"applications:\n  oom:\n    procfile: {host.app_dir('oom')}\n"
        "    workers:\n      web:\n        limits: {memory: 64M}\n"
    )
    host.start_daemon()

    def last_exit() -> str | None:
        instance = host.status("oom")["applications"][0]["workers"][0]["instances"][0]
        text: str | None = instance["last_exit"]
        return text

    wait_until(last_exit, timeout=20, message="the first out-of-memory kill")
    assert last_exit() == "killed by SIGKILL (out of memory)"
