"""pazuzud on a real systemd: each behaviour checked on ground truth (systemctl, /proc, cgroups)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.container import CHECKOUT, Container, wait_until
from tests.integration.deployment import Deployment, unit

pytestmark = pytest.mark.systemd

WEB1, WEB2, WEB3, WEB4 = (unit("shop", "web", n) for n in range(1, 5))
QUEUE1 = unit("shop", "queue", 1)


@pytest.fixture
def deployment(systemd_container: Container) -> Iterator[Deployment]:
    """An installed pazuzud.service with its own config directory, removed after the test."""
    deployment = Deployment(systemd_container)
    deployment.install_service()
    try:
        yield deployment
    finally:
        deployment.cleanup()


def shop(deployment: Deployment, *, web: int = 2, procfile: str | None = None) -> None:
    """The `shop` application: `web` (exec'd) and `queue` (behind dash's fork)."""
    deployment.write_procfile(
        "shop",
        procfile or "web: exec sleep 1000\nqueue: sleep 1000\n",
        env="GREETING=hello\n",
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.root / 'shop'}\n"
        f"    stop_timeout: 3\n    workers:\n      web:\n        num_instances: {web}\n"
    )


def pids(deployment: Deployment, *units: str) -> dict[str, int]:
    return {name: deployment.main_pid(name) for name in units}


def test_ready_and_status_text_reach_systemd(deployment: Deployment) -> None:
    """`systemctl start pazuzud` (Type=notify) returns once all instances run; STATUS= is shown."""
    shop(deployment)
    deployment.start_daemon()
    assert deployment.sh("systemctl is-active pazuzud").stdout.strip() == "active"
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1}
    status_text = deployment.sh("systemctl show -p StatusText --value pazuzud").stdout
    assert "shop.web=2" in status_text
    assert "shop.queue=1" in status_text
    for name, pid in pids(deployment, WEB1, WEB2, QUEUE1).items():
        assert deployment.container.pid_exists(pid), name
        assert pid in deployment.cgroup_pids(name)
    reported = deployment.status()
    web = next(w for w in reported["applications"][0]["workers"] if w["name"] == "web")
    assert [i["state"] for i in web["instances"]] == ["running", "running"]
    assert web["instances"][0]["pid"] == deployment.main_pid(WEB1)
    assert reported["daemon"]["backend"] == "systemd"


def test_rejected_reload_is_reported_in_the_status_text(deployment: Deployment) -> None:
    """A refused reload is visible in `systemctl status pazuzud` (sd_notify STATUS=)."""
    shop(deployment)
    deployment.start_daemon()
    deployment.write_config("applications:\n  shop:\n    procfile: [not, a, path]\n")
    assert deployment.cli("reload", check=False).returncode == 1
    status_text = deployment.sh("systemctl show -p StatusText --value pazuzud").stdout
    assert "reload rejected" in status_text
    assert "applications.shop.procfile" in status_text


def test_crash_loop_goes_on_at_a_bounded_pace_while_the_daemon_is_down(
    deployment: Deployment,
) -> None:
    """systemd keeps retrying a crash-looping instance on its backoff delay without pazuzud."""
    marker = f"boom-{uuid.uuid4().hex[:8]}"  # the journal is shared by the tests
    deployment.write_procfile("loop", f"boom: echo {marker}; exit 3\n")
    deployment.write_config(f"applications:\n  loop:\n    procfile: {deployment.root / 'loop'}\n")
    deployment.start_daemon()
    boom = unit("loop", "boom", 1)

    def attempts() -> int:
        out = deployment.sh(
            "journalctl --no-pager -o cat SYSLOG_IDENTIFIER=loop.boom.1", check=False
        ).stdout
        return out.count(marker)

    # Take pazuzud away while systemd itself holds the unit between two tries. pazuzud
    # re-arms a unit whose delay must grow by stopping it for the new delay: frozen first
    # (SIGSTOP), it cannot do that between the look at the unit and the SIGKILL.
    def held_by_systemd() -> bool:
        if attempts() < 3 or deployment.units().get(boom) != "activating/auto-restart":
            return False
        pid = deployment.daemon_pid()
        deployment.sh(f"kill -STOP {pid}")
        if deployment.units().get(boom) == "activating/auto-restart":
            return True
        deployment.sh(f"kill -CONT {pid}")
        return False

    wait_until(held_by_systemd, timeout=30, message="systemd to pace the crash loop")
    deployment.kill_daemon()
    before = attempts()
    # Two more tries at the pace pazuzud last armed: two delays and the starts themselves.
    delay = restart_delay_seconds(deployment, boom)
    assert 0 <= delay <= 60
    wait_until(
        lambda: attempts() >= before + 2,
        timeout=2 * delay + 15,
        message=f"tries without pazuzud (RestartUSec {delay:g} s)",
    )
    # Never parked: systemd's start limit does not fail it, and the pace stays bounded.
    assert deployment.units().get(boom, "absent") != "failed/failed"
    assert attempts() < 30


def restart_delay_seconds(deployment: Deployment, unit_name: str) -> float:
    """The unit's RestartUSec, in seconds (`systemctl show` prints it as `1min 4s`, `500ms`)."""
    shown = deployment.sh(f"systemctl show -p RestartUSec --value '{unit_name}'").stdout
    scale = {"min": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    total = 0.0
    for part in shown.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyzµ")
        total += float(number) * scale[part[len(number) :]]
    return total


def test_names_are_escaped_like_systemd_escape(deployment: Deployment) -> None:
    """App `my-app` runs as `pazuzu-my\\x2dapp-web@1.service` in `pazuzu-my\\x2dapp.slice`."""
    deployment.write_procfile("my-app", "web: exec sleep 1000\n")
    deployment.write_config(
        f"applications:\n  my-app:\n    procfile: {deployment.root / 'my-app'}\n"
    )
    deployment.start_daemon()
    name = "pazuzu-my\\x2dapp-web@1.service"
    assert deployment.running_units() == {name}
    group = deployment.sh(f"systemctl show -p ControlGroup --value '{name}'").stdout.strip()
    assert group == f"/pazuzu.slice/pazuzu-my\\x2dapp.slice/{name}"


def test_daemon_pings_the_watchdog_when_asked(deployment: Deployment) -> None:
    """With WatchdogSec=1, pazuzud keeps sending WATCHDOG=1 and systemd keeps it active."""
    shop(deployment)
    deployment.container.write_file(
        "/etc/systemd/system/pazuzud.service.d/watchdog.conf", "[Service]\nWatchdogSec=1\n"
    )
    deployment.sh("systemctl daemon-reload")
    try:
        deployment.start_daemon()

        def last_ping() -> int:
            out = deployment.sh("systemctl show -p WatchdogTimestampMonotonic --value pazuzud")
            return int(out.stdout.strip() or 0)

        first = last_ping()
        second = wait_until(lambda: (t := last_ping()) > first and t, timeout=5, message="a ping")
        wait_until(lambda: last_ping() > second, timeout=5, message="another ping")
        # Three watchdog periods later the daemon is still the same process, still active.
        pid = deployment.daemon_pid()
        wait_until(lambda: last_ping() > second + 3_000_000, timeout=10, message="3 s of pings")
        assert deployment.daemon_pid() == pid
        assert deployment.sh("systemctl is-active pazuzud").stdout.strip() == "active"
    finally:
        deployment.sh("rm -f /etc/systemd/system/pazuzud.service.d/watchdog.conf")


def test_a_second_daemon_on_the_same_socket_refuses_to_start(deployment: Deployment) -> None:
    """While pazuzud runs, another one with the same socket exits 1 and changes nothing."""
    shop(deployment)
    deployment.start_daemon()
    before = deployment.all_worker_pids()
    result = deployment.container.run(
        [f"{deployment.container.venv_bin}/pazuzud", "-c", str(deployment.config_path)],
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert "another pazuzud already listens" in result.stderr
    assert deployment.all_worker_pids() == before
    assert deployment.cli("status").returncode == 0


def test_the_example_application_runs_as_the_readme_says(systemd_container: Container) -> None:
    """contrib/pazuzu.conf under pazuzud.service: web serves its PORT, queue and ticker log."""
    deployment = Deployment(systemd_container)
    deployment.config_path = CHECKOUT / "contrib" / "pazuzu.conf"
    deployment.socket_path = Path("/run/pazuzud.socket")
    deployment.state_path = Path("/var/lib/pazuzu/state.json")
    deployment.install_service()
    try:
        deployment.start_daemon()
        expected = {"example.web.1", "example.web.2", "example.queue.1", "example.ticker.1"}
        assert deployment.running() == expected
        fetch = (
            "import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:5001/Procfile').read().decode())"
        )
        page = wait_until(
            lambda: deployment.sh(f'python3 -c "{fetch}"', check=False).stdout,
            timeout=10,
            message="web.2 to serve on PORT 5001",
        )
        assert "queue: exec python3 -u consumer.py" in page
        wait_until(
            lambda: "processed job" in deployment.cli("log", "example.queue", "-n", "5").stdout,
            timeout=10,
            message="the queue's output",
        )
        assert "from ticker.1" in deployment.cli("log", "example.ticker", "-n", "5").stdout
    finally:
        deployment.cleanup()
