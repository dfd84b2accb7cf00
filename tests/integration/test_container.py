"""The integration harness itself: a booted systemd that pystemd can drive and journald records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.container import Container, wait_until

pytestmark = pytest.mark.systemd

# Runs inside the container: a transient service through pystemd, as pazuzu's backend does.
START_TRANSIENT_SERVICE = """
import sys
from pystemd.systemd1 import Manager

unit, line = sys.argv[1].encode(), sys.argv[2].encode()
command = [b"/bin/sh", b"-c", b"echo " + line + b"; exec /bin/sleep 300"]
with Manager() as manager:
    manager.Manager.StartTransientUnit(
        unit, b"fail", {b"ExecStart": [(b"/bin/sh", command, False)], b"Description": unit}
    )
"""


@pytest.fixture
def transient_service(systemd_container: Container) -> Iterator[str]:
    """A transient `sleep 300` service started with pystemd that printed `hello <unit>`."""
    unit = f"harness-{uuid.uuid4().hex[:8]}.service"
    systemd_container.run(
        [systemd_container.python, "-c", START_TRANSIENT_SERVICE, unit, f"hello {unit}"]
    )
    try:
        yield unit
    finally:
        systemd_container.run(["systemctl", "stop", unit], check=False)


def test_container_boots_to_a_running_system(systemd_container: Container) -> None:
    """systemd inside reaches `running` (or `degraded`) with D-Bus and journald up."""
    state = systemd_container.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in {"running", "degraded"}
    assert systemd_container.host_path("/run/dbus/system_bus_socket").is_socket()
    active = systemd_container.run(["systemctl", "is-active", "dbus.service", "systemd-journald"])
    assert active.stdout.split() == ["active", "active"]


def test_container_sees_the_checkout_and_its_virtual_environment(
    systemd_container: Container,
) -> None:
    """The checkout is at the host's path and the venv imports pazuzu and pystemd inside."""
    out = systemd_container.run(
        [systemd_container.python, "-c", "import pazuzu, pystemd; print(pazuzu.__file__)"]
    )
    assert out.stdout.strip().startswith(str(systemd_container.checkout))


def test_pystemd_transient_service_is_active_with_a_live_main_pid(
    systemd_container: Container, transient_service: str
) -> None:
    """A service made with StartTransientUnit is active and its MainPID is a process inside."""
    active = systemd_container.run(["systemctl", "is-active", transient_service], check=False)
    assert active.stdout.strip() == "active"
    show = systemd_container.run(["systemctl", "show", "-p", "MainPID", transient_service])
    main_pid = int(show.stdout.strip().removeprefix("MainPID="))
    assert main_pid > 1
    assert systemd_container.pid_exists(main_pid)
    comm = systemd_container.host_path(f"/proc/{main_pid}/comm").read_text().strip()
    assert comm == "sleep"


def test_journal_records_transient_service_output(
    systemd_container: Container, transient_service: str
) -> None:
    """What the service printed shows up in `journalctl -u` for it."""

    def logged() -> bool:
        journal = systemd_container.run(
            ["journalctl", "--no-pager", "-o", "cat", "-u", transient_service], check=False
        )
        return f"hello {transient_service}" in journal.stdout.splitlines()

    wait_until(logged, timeout=10, message=f"journal of {transient_service} shows its line")


def test_popen_signals_reach_the_command_inside(systemd_container: Container) -> None:
    """A command from popen() has a PID inside, and SIGTERM ends it, not only nsenter."""
    with systemd_container.popen(["sleep", "300"]) as sleeper:
        pid = sleeper.pid()
        assert systemd_container.pid_exists(pid)
        sleeper.terminate()
        assert sleeper.wait(timeout=10) == -15
    wait_until(lambda: not systemd_container.pid_exists(pid), timeout=5, message=f"pid {pid} gone")
