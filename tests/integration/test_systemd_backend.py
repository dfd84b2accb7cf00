"""pazuzud on a real systemd: each behaviour checked on ground truth (systemctl, /proc, cgroups)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.integration.container import Container, wait_until
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


def test_daemon_starts_the_formation_then_reports_ready(deployment: Deployment) -> None:
    """`systemctl start pazuzud` returns once every configured instance runs (READY=1)."""
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


def test_instances_get_the_foreman_environment(deployment: Deployment) -> None:
    """Each instance sees .env, PORT by foreman's rule, PAZUZU_* and DYNO, in its directory."""
    directory = deployment.root / "shop"
    shop(
        deployment,
        procfile="web: env > env.$DYNO; pwd > pwd.$DYNO; exec sleep 1000\n"
        "queue: env > env.$DYNO; exec sleep 1000\n",
    )
    deployment.start_daemon()
    wait_until(
        lambda: deployment.sh(f"ls {directory}").stdout.count("env.") == 3,
        timeout=10,
        message="each instance to write its environment",
    )

    def env_of(dyno: str) -> dict[str, str]:
        text = deployment.sh(f"cat {directory}/env.{dyno}").stdout
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    web2, queue1 = env_of("web.2"), env_of("queue.1")
    assert web2["PORT"] == "5001"
    assert queue1["PORT"] == "5100"
    assert web2["DYNO"] == "web.2"
    assert web2["PAZUZU_APP"] == "shop"
    assert web2["PAZUZU_WORKER"] == "web"
    assert web2["PAZUZU_INSTANCE"] == "2"
    assert web2["GREETING"] == "hello"
    assert deployment.sh(f"cat {directory}/pwd.web.1").stdout.strip() == str(directory)


def test_scale_up_keeps_existing_and_scale_down_stops_highest_first(
    deployment: Deployment,
) -> None:
    """Scaling 2 → 4 leaves web.1 and web.2 alone; 4 → 1 stops web.4, web.3 and web.2."""
    shop(deployment)
    deployment.start_daemon()
    before = pids(deployment, WEB1, WEB2)
    deployment.cli("scale", "shop.web=4")
    assert deployment.running_units() == {WEB1, WEB2, WEB3, WEB4, QUEUE1}
    assert pids(deployment, WEB1, WEB2) == before
    deployment.cli("scale", "shop", "web-3")
    assert deployment.running_units() == {WEB1, QUEUE1}
    assert pids(deployment, WEB1) == {WEB1: before[WEB1]}
    assert deployment.status("shop.web")["applications"][0]["workers"][0]["desired"] == 1


def test_killed_worker_is_respawned_by_systemd(deployment: Deployment) -> None:
    """SIGKILL of web.1 brings a new web.1 process; status names the signal."""
    shop(deployment)
    deployment.start_daemon()
    old = deployment.main_pid(WEB1)
    deployment.sh(f"kill -KILL {old}")
    new = wait_until(
        lambda: (pid := deployment.main_pid(WEB1)) not in (0, old) and pid,
        timeout=5,
        message="web.1 to be respawned",
    )
    assert deployment.container.pid_exists(new)
    assert not deployment.container.pid_exists(old)
    instance = deployment.status("shop.web.1")["applications"][0]["workers"][0]["instances"][0]
    assert instance["restarts"] >= 1
    assert instance["last_exit"] == "killed by SIGKILL"


def test_killed_daemon_leaves_workers_and_its_successor_adopts_them(
    deployment: Deployment,
) -> None:
    """SIGKILL of pazuzud touches no worker; the next one adopts all, starts no duplicate."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("scale", "shop.web=3")
    workers_before = deployment.all_worker_pids()
    units_before = pids(deployment, WEB1, WEB2, WEB3, QUEUE1)
    deployment.kill_daemon(signal.SIGKILL)
    assert deployment.all_worker_pids() == workers_before
    deployment.start_daemon()
    assert deployment.running_units() == {WEB1, WEB2, WEB3, QUEUE1}
    assert pids(deployment, WEB1, WEB2, WEB3, QUEUE1) == units_before
    assert deployment.all_worker_pids() == workers_before
    # The runtime scale was persisted, not reset to the configured 2.
    workers = deployment.status()["applications"][0]["workers"]
    assert {w["name"]: w["desired"] for w in workers} == {"web": 3, "queue": 1}


def test_sigterm_of_the_daemon_leaves_workers_running(deployment: Deployment) -> None:
    """`systemctl stop pazuzud` stops the daemon only (KillMode=process); workers stay."""
    shop(deployment)
    deployment.start_daemon()
    before = deployment.all_worker_pids()
    deployment.sh("systemctl stop pazuzud")
    assert deployment.sh("systemctl is-active pazuzud", check=False).stdout.strip() == "inactive"
    assert deployment.all_worker_pids() == before
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1}


def test_stop_and_start_of_instance_worker_and_application(deployment: Deployment) -> None:
    """stop/start act on exactly what the spec names, and a stop survives a daemon restart."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("stop", "shop.web.2")
    assert deployment.running_units() == {WEB1, QUEUE1}
    states = deployment.status("shop.web")["applications"][0]["workers"][0]["instances"]
    assert [i["state"] for i in states] == ["running", "stopped"]

    deployment.kill_daemon()
    deployment.start_daemon()
    assert deployment.running_units() == {WEB1, QUEUE1}

    deployment.cli("stop", "shop.web")
    assert deployment.running_units() == {QUEUE1}
    deployment.cli("stop", "shop")
    assert deployment.running_units() == set()
    assert deployment.all_worker_pids() == set()
    deployment.cli("start", "shop")
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1}


def test_restart_replaces_processes_and_starts_stopped_ones(deployment: Deployment) -> None:
    """restart gives an instance a new process, and starts a stopped instance it names."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("stop", "shop.web.2")
    before = pids(deployment, WEB1, QUEUE1)
    deployment.cli("restart", "shop.web")
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1}
    assert deployment.main_pid(WEB1) != before[WEB1]
    assert deployment.main_pid(QUEUE1) == before[QUEUE1]
    deployment.cli("restart", "--rolling", "shop.queue.1")
    assert deployment.main_pid(QUEUE1) != before[QUEUE1]


def test_unknown_spec_is_an_error_that_names_it(deployment: Deployment) -> None:
    """`pazuzu stop shop.nope` exits 1, names the spec and lists what exists."""
    shop(deployment)
    deployment.start_daemon()
    result = deployment.cli("stop", "shop.nope", check=False)
    assert result.returncode == 1
    assert "shop.nope" in result.stderr
    assert "shop.web" in result.stderr
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1}


def test_reload_applies_only_the_difference(deployment: Deployment) -> None:
    """Reload restarts a changed worker, starts a new one, stops a removed one, keeps the rest."""
    deployment.write_procfile(
        "shop", "web: exec sleep 1000\nqueue: sleep 1000\nold: exec sleep 1000\n"
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.root / 'shop'}\n"
        "    workers:\n      web:\n        num_instances: 2\n"
    )
    deployment.start_daemon()
    before = pids(deployment, WEB1, WEB2, QUEUE1)
    deployment.write_procfile(
        "shop", "web: exec sleep 2000\nqueue: sleep 1000\nclock: exec sleep 1000\n"
    )
    deployment.cli("reload")
    clock = unit("shop", "clock", 1)
    assert deployment.running_units() == {WEB1, WEB2, QUEUE1, clock}
    after = pids(deployment, WEB1, WEB2, QUEUE1)
    assert after[QUEUE1] == before[QUEUE1]
    assert after[WEB1] != before[WEB1]
    assert after[WEB2] != before[WEB2]
    cmdline = deployment.sh(f"tr '\\0' ' ' < /proc/{after[WEB1]}/cmdline").stdout
    assert "sleep 2000" in cmdline


def test_sighup_reloads_through_systemctl(deployment: Deployment) -> None:
    """`systemctl reload pazuzud` (ExecReload, SIGHUP) applies a new instance count."""
    shop(deployment)
    deployment.start_daemon()
    shop(deployment, web=3)
    deployment.sh("systemctl reload pazuzud")
    deployment.wait_running({WEB1, WEB2, WEB3, QUEUE1})


def test_invalid_config_on_reload_is_rejected_whole(deployment: Deployment) -> None:
    """A broken config on reload is refused with its file and line; no worker is touched."""
    shop(deployment)
    deployment.start_daemon()
    before = deployment.all_worker_pids()
    deployment.write_config("applications:\n  shop:\n    procfile: [not, a, path]\n")
    result = deployment.cli("reload", check=False)
    assert result.returncode == 1
    assert str(deployment.config_path) in result.stderr
    assert "applications.shop.procfile" in result.stderr
    assert deployment.all_worker_pids() == before
    status_text = deployment.sh("systemctl show -p StatusText --value pazuzud").stdout
    assert "reload rejected" in status_text
    # The old configuration is still in force: scaling its worker works.
    deployment.cli("scale", "shop.web=3")
    assert deployment.running_units() == {WEB1, WEB2, WEB3, QUEUE1}


def test_invalid_config_at_start_up_touches_no_worker(deployment: Deployment) -> None:
    """pazuzud refuses to start on a broken config and leaves running workers alone."""
    shop(deployment)
    deployment.start_daemon()
    deployment.sh("systemctl stop pazuzud")
    before = deployment.all_worker_pids()
    deployment.write_procfile("shop", "web exec sleep 1000\n")  # no colon: line 1 is invalid
    result = deployment.start_daemon(check=False)
    assert result.returncode != 0
    assert deployment.all_worker_pids() == before
    assert "Procfile:1" in deployment.journal_of_daemon()


def test_log_shows_worker_output_also_after_a_daemon_restart(deployment: Deployment) -> None:
    """`pazuzu log` reads the journal: a worker's line is there before and after a restart."""
    shop(
        deployment,
        procfile="web: echo marker-$DYNO; exec sleep 1000\nqueue: exec sleep 1000\n",
    )
    deployment.start_daemon()
    wait_until(
        lambda: "marker-web.2" in deployment.cli("log", "shop.web", "-n", "20").stdout,
        timeout=10,
        message="web.2's output in `pazuzu log`",
    )
    only_one = deployment.cli("log", "shop.web.1", "-n", "20").stdout
    assert "marker-web.1" in only_one
    assert "marker-web.2" not in only_one
    deployment.kill_daemon()
    deployment.start_daemon()
    assert "marker-web.2" in deployment.cli("log", "shop", "-n", "50").stdout


def test_crash_loop_backs_off_and_is_never_parked(deployment: Deployment) -> None:
    """A worker that exits at once is retried with growing delays, not 60 times a second."""
    deployment.write_procfile("loop", "boom: echo boom; exit 3\n")
    deployment.write_config(f"applications:\n  loop:\n    procfile: {deployment.root / 'loop'}\n")
    deployment.start_daemon()
    boom = unit("loop", "boom", 1)

    def attempts() -> int:
        out = deployment.sh(
            "journalctl --no-pager -o cat SYSLOG_IDENTIFIER=loop.boom.1", check=False
        ).stdout
        return out.count("boom")

    wait_until(lambda: attempts() >= 4, timeout=20, message="a few attempts")
    instance = deployment.status("loop")["applications"][0]["workers"][0]["instances"][0]
    assert instance["state"] == "backoff"
    assert instance["last_exit"] == "exit 3"
    first = attempts()
    # Without backoff systemd would restart it ~60 times a second; with it, a handful in 3 s.
    wait_until(lambda: attempts() > first, timeout=20, message="another attempt")
    assert attempts() < 20
    # Never parked: neither systemd's start limit nor pazuzu leaves it failed for good.
    assert deployment.units().get(boom, "absent") != "failed/failed"
    assert deployment.cli("status", "loop", check=False).returncode == 3


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
