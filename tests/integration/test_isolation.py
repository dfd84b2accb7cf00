"""What instances get from pazuzud (only their contract), the `systemd:` properties, and the
places output goes to (journald, the libcgroup log directory) becoming unusable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.container import Container, wait_until
from tests.integration.deployment import Deployment, Target
from tests.integration.host import HostDeployment
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends

CONTRACT = {"PORT", "PAZUZU_APP", "PAZUZU_WORKER", "PAZUZU_INSTANCE", "DYNO", "GREETING"}
# What systemd sets for every service, and what /bin/sh exports by itself.
ADDED_BY_SYSTEMD_OR_THE_SHELL = {
    "PATH",
    "PWD",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "LANG",
}
LEAK = "PAZUZU_TEST_DAEMON_ONLY"


def proc_path(deployment: Target, pid: int, name: str) -> Path:
    """`/proc/<pid>/<name>` of a worker, read from the host."""
    if isinstance(deployment, Deployment):
        return deployment.container.host_path(f"/proc/{pid}/{name}")
    return Path(f"/proc/{pid}/{name}")


def environment_of(deployment: Target, pid: int) -> dict[str, str]:
    raw = proc_path(deployment, pid, "environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if item)


def no_new_privs(deployment: Target, pid: int) -> str:
    for line in proc_path(deployment, pid, "status").read_text().splitlines():
        if line.startswith("NoNewPrivs:"):
            return line.split()[1]
    raise AssertionError(f"no NoNewPrivs line in /proc/{pid}/status")


def shop(deployment: Target, web_systemd: str = "") -> None:
    deployment.write_procfile(
        "shop", "web: exec sleep 1000\nqueue: exec sleep 1000\n", env="GREETING=hello\n"
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n"
        "    stop_timeout: 3\n"
        + (f"    workers:\n      web:\n        systemd: {web_systemd}\n" if web_systemd else "")
    )


def test_instances_get_the_contracts_environment_and_no_descriptor_of_the_daemon(
    deployment: Target,
) -> None:
    """A variable of pazuzud's own environment never reaches an instance; fds are 0, 1, 2."""
    shop(deployment)
    deployment.start_daemon(env={LEAK: "secret"})
    assert deployment.running() == {"shop.web.1", "shop.queue.1"}
    daemon = environment_of(deployment, deployment.daemon_pid())
    assert daemon[LEAK] == "secret"  # the daemon has it: the instances must not
    for instance in ("shop.web.1", "shop.queue.1"):
        pid = deployment.pid_of(instance)
        # What the command gets, once its shell has exec'd it (`exec sleep 1000`).
        wait_until(
            lambda: proc_path(deployment, pid, "comm").read_text().strip() == "sleep",  # noqa: B023
            timeout=5,
            message=f"{instance} to run its command",
        )
        environment = environment_of(deployment, pid)
        assert LEAK not in environment
        assert set(environment) >= CONTRACT | {"PATH"}
        assert set(environment) - CONTRACT <= ADDED_BY_SYSTEMD_OR_THE_SHELL, instance
        assert sorted(int(fd) for fd in os.listdir(proc_path(deployment, pid, "fd"))) == [0, 1, 2]


def test_systemd_properties_reach_the_unit_or_are_reported_as_not_applied(
    deployment: Target,
) -> None:
    """systemd: the unit and the kernel show them; libcgroup: one warning, instances run."""
    shop(deployment, web_systemd="{NoNewPrivileges: true, PrivateTmp: true}")
    deployment.start_daemon()
    deployment.cli("scale", "shop.web=2")
    assert deployment.running() == {"shop.web.1", "shop.web.2", "shop.queue.1"}
    web, queue = deployment.pid_of("shop.web.1"), deployment.pid_of("shop.queue.1")
    assert no_new_privs(deployment, queue) == "0"
    if isinstance(deployment, Deployment):
        shown = deployment.sh(
            "systemctl show -p NoNewPrivileges -p PrivateTmp 'pazuzu-shop-web@1.service'"
        ).stdout.split()
        assert sorted(shown) == ["NoNewPrivileges=yes", "PrivateTmp=yes"]
        queue_shown = deployment.sh(
            "systemctl show -p NoNewPrivileges -p PrivateTmp 'pazuzu-shop-queue@1.service'"
        ).stdout.split()
        assert sorted(queue_shown) == ["NoNewPrivileges=no", "PrivateTmp=no"]
        assert no_new_privs(deployment, web) == "1"
    else:
        assert no_new_privs(deployment, web) == "0"
        warnings = [
            line
            for line in deployment.daemon_log().splitlines()
            if "systemd properties do not apply" in line
        ]
        assert len(warnings) == 1, warnings  # one per worker, not one per instance
        assert "shop.web" in warnings[0]
        assert "NoNewPrivileges=, PrivateTmp=" in warnings[0]


def test_changed_systemd_properties_restart_the_instances(deployment: Target) -> None:
    """The properties are part of an instance's definition: a reload replaces it."""
    shop(deployment)
    deployment.start_daemon()
    web, queue = deployment.pid_of("shop.web.1"), deployment.pid_of("shop.queue.1")
    shop(deployment, web_systemd="{NoNewPrivileges: true}")
    deployment.cli("reload")
    wait_until(
        lambda: deployment.pid_of("shop.web.1") not in (0, web),
        timeout=30,
        message="web.1 replaced",
    )
    assert deployment.pid_of("shop.queue.1") == queue
    if isinstance(deployment, Deployment):
        assert no_new_privs(deployment, deployment.pid_of("shop.web.1")) == "1"


# -- output going nowhere ---------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make `path` a read-only bind mount of itself, for the duration."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.cgexec
@pytest.mark.parametrize("fault", ["under a regular file", "read-only mount"])
def test_unusable_log_directory_runs_instances_with_output_discarded(
    host: HostDeployment, fault: str
) -> None:
    """libcgroup: instances run and respawn without a log, and the daemon log says why."""
    host.write_procfile("shop", "web: echo hello; exec sleep 1000\n")
    if fault == "under a regular file":
        (host.root / "blocker").write_text("not a directory\n")
        logs = host.root / "blocker" / "logs"
    else:
        logs = host.root / "frozen-logs"
        (logs / "shop" / "web.1").mkdir(parents=True)
        (logs / "shop" / "web.1" / "config").write_text(f"s{10 * 1024 * 1024}\nn5\n")
    # Included files are merged over the main one: this replaces the deployment's directory.
    (host.root / "logs.conf").write_text(f"worker_logs:\n  directory: {logs}\n")
    host.write_config(
        f"include: logs.conf\napplications:\n  shop:\n    procfile: {host.app_dir('shop')}\n"
    )
    with read_only(logs) if fault == "read-only mount" else contextlib.nullcontext():
        host.start_daemon()
        assert host.running() == {"shop.web.1"}
        old = host.pid_of("shop.web.1")
        os.kill(old, signal.SIGKILL)
        new = wait_until(
            lambda: (pid := host.pid_of("shop.web.1")) not in (0, old) and pid,
            timeout=10,
            message="web.1 respawned without a log",
        )
        assert host.pid_exists(new)
        assert os.readlink(f"/proc/{new}/fd/1") == "/dev/null"
        status = host.status()["applications"][0]["workers"][0]["instances"][0]
        assert status["state"] == "running"
        assert status["restarts"] >= 1
        discarded = [line for line in host.daemon_log().splitlines() if "output discarded" in line]
        assert len(discarded) >= 2, host.daemon_log()  # the first start, then the respawn
        assert str(logs) in discarded[0]
        assert host.cli("status").returncode == 0


JOURNALD_UNITS = "systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service"


@pytest.fixture
def systemd(systemd_container: Container) -> Iterator[Deployment]:
    target = Deployment(systemd_container)
    target.install_service()
    try:
        yield target
    finally:
        target.cleanup()


@pytest.mark.systemd
def test_workers_run_and_respawn_while_journald_is_down(systemd: Deployment) -> None:
    """systemd: with journald stopped, instances keep running, writing, and respawning."""
    deployment = systemd
    deployment.write_procfile(
        "shop",
        "web: exec sleep 1000\nchatty: while true; do echo tick; sleep 0.1; done\n",
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n    stop_timeout: 3\n"
    )
    deployment.start_daemon()
    assert deployment.running() == {"shop.web.1", "shop.chatty.1"}
    chatty = deployment.pid_of("shop.chatty.1")
    try:
        deployment.sh(f"systemctl stop {JOURNALD_UNITS}")
        journald = deployment.sh("systemctl is-active systemd-journald.service", check=False)
        assert journald.stdout.strip() != "active"
        old = deployment.pid_of("shop.web.1")
        deployment.sh(f"kill -KILL {old}")
        new = wait_until(
            lambda: (pid := deployment.pid_of("shop.web.1")) not in (0, old) and pid,
            timeout=10,
            message="web.1 respawned while journald is down",
        )
        assert deployment.pid_exists(new)
        # systemd gives it /dev/null when the journal is not there to connect to.
        stdout = deployment.container.host_path(f"/proc/{new}/fd/1").readlink()
        assert str(stdout) == "/dev/null"
        assert deployment.running() == {"shop.web.1", "shop.chatty.1"}
        assert deployment.pid_of("shop.chatty.1") == chatty  # writing into a closed journal
        assert deployment.cli("status").returncode == 0
        assert deployment.cli("scale", "shop.web=2").returncode == 0
        assert deployment.running() == {"shop.web.1", "shop.web.2", "shop.chatty.1"}
    finally:
        deployment.sh(f"systemctl start {JOURNALD_UNITS}", check=False, timeout=60)
    assert deployment.sh("systemctl is-active systemd-journald.service").stdout.strip() == (
        "active"
    )
