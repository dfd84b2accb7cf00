"""pazuzud's contract, on both backends: systemd (in a booted container) and libcgroup (host).

Every scenario checks ground truth — the processes in the instances' cgroups, /proc — as well
as what pazuzu reports.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.container import wait_until
from tests.integration.deployment import Deployment, Target
from tests.integration.host import HostDeployment, require_host

WEB1, WEB2, WEB3, WEB4 = (f"shop.web.{n}" for n in range(1, 5))
QUEUE1 = "shop.queue.1"


@pytest.fixture(
    params=[
        pytest.param("systemd", marks=pytest.mark.systemd),
        pytest.param("cgexec", marks=pytest.mark.cgexec),
    ]
)
def deployment(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A fresh deployment on the backend named by the parameter, removed after the test."""
    target: Target
    if request.param == "systemd":
        systemd = Deployment(request.getfixturevalue("systemd_container"))
        systemd.install_service()
        target = systemd
    else:
        require_host()
        target = HostDeployment()
    try:
        yield target
    finally:
        target.cleanup()


def shop(deployment: Target, *, web: int = 2, procfile: str | None = None) -> None:
    """The `shop` application: `web` (exec'd) and `queue` (behind dash's fork)."""
    deployment.write_procfile(
        "shop",
        procfile or "web: exec sleep 1000\nqueue: sleep 1000\n",
        env="GREETING=hello\n",
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n"
        f"    stop_timeout: 3\n    workers:\n      web:\n        num_instances: {web}\n"
    )


def pids(deployment: Target, *instances: str) -> dict[str, int]:
    return {name: deployment.pid_of(name) for name in instances}


def wait_running(deployment: Target, instances: set[str], timeout: float = 30) -> None:
    wait_until(
        lambda: deployment.running() == instances,
        timeout=timeout,
        message=f"exactly {sorted(instances)} running (have {sorted(deployment.running())})",
    )


def test_daemon_starts_the_formation_then_reports_ready(deployment: Target) -> None:
    """pazuzud sends READY=1 once every configured instance runs in its own cgroup."""
    shop(deployment)
    deployment.start_daemon()
    assert deployment.running() == {WEB1, WEB2, QUEUE1}
    for name, pid in pids(deployment, WEB1, WEB2, QUEUE1).items():
        assert deployment.pid_exists(pid), name
    reported = deployment.status()
    web = next(w for w in reported["applications"][0]["workers"] if w["name"] == "web")
    assert [i["state"] for i in web["instances"]] == ["running", "running"]
    assert web["instances"][0]["pid"] == deployment.pid_of(WEB1)
    assert reported["daemon"]["backend"] == deployment.backend


def test_the_daemon_runs_without_openssl(deployment: Target) -> None:
    """pazuzud maps neither libssl nor libcrypto (4.5 MiB resident), and still fingerprints."""
    shop(deployment)
    deployment.start_daemon()
    maps = deployment.read_file(Path(f"/proc/{deployment.daemon_pid()}/maps"))
    assert "libpython" in maps or "python3" in maps  # the file is the daemon's
    assert "libssl" not in maps
    assert "libcrypto" not in maps
    reported = deployment.status()
    assert reported["daemon"]["backend"] == deployment.backend
    assert len(deployment.running()) == 3


def test_instances_get_the_foreman_environment(deployment: Target) -> None:
    """Each instance sees .env, PORT by foreman's rule, PAZUZU_* and DYNO, in its directory."""
    directory = deployment.app_dir("shop")
    shop(
        deployment,
        procfile="web: env > env.$DYNO; pwd > pwd.$DYNO; exec sleep 1000\n"
        "queue: env > env.$DYNO; exec sleep 1000\n",
    )
    deployment.start_daemon()

    def env_of(dyno: str) -> dict[str, str]:
        try:
            text = deployment.read_file(directory / f"env.{dyno}")
        except FileNotFoundError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    wait_until(
        lambda: all("DYNO" in env_of(d) for d in ("web.1", "web.2", "queue.1")),
        timeout=10,
        message="each instance to write its environment",
    )
    web2, queue1 = env_of("web.2"), env_of("queue.1")
    assert web2["PORT"] == "5001"
    assert queue1["PORT"] == "5100"
    assert web2["DYNO"] == "web.2"
    assert web2["PAZUZU_APP"] == "shop"
    assert web2["PAZUZU_WORKER"] == "web"
    assert web2["PAZUZU_INSTANCE"] == "2"
    assert web2["GREETING"] == "hello"
    assert deployment.read_file(directory / "pwd.web.1").strip() == str(directory)


def test_scale_up_keeps_existing_and_scale_down_stops_highest_first(deployment: Target) -> None:
    """Scaling 2 → 4 leaves web.1 and web.2 alone; 4 → 1 stops web.4, web.3 and web.2."""
    shop(deployment)
    deployment.start_daemon()
    before = pids(deployment, WEB1, WEB2)
    deployment.cli("scale", "shop.web=4")
    assert deployment.running() == {WEB1, WEB2, WEB3, WEB4, QUEUE1}
    assert pids(deployment, WEB1, WEB2) == before
    deployment.cli("scale", "shop", "web-3")
    assert deployment.running() == {WEB1, QUEUE1}
    assert pids(deployment, WEB1) == {WEB1: before[WEB1]}
    assert deployment.status("shop.web")["applications"][0]["workers"][0]["desired"] == 1


def test_killed_worker_is_respawned(deployment: Target) -> None:
    """SIGKILL of web.1 brings a new web.1 process; status names the signal."""
    shop(deployment)
    deployment.start_daemon()
    old = deployment.pid_of(WEB1)
    os_kill(deployment, old)
    new = wait_until(
        lambda: (pid := deployment.pid_of(WEB1)) not in (0, old) and pid,
        timeout=5,
        message="web.1 to be respawned",
    )
    assert deployment.pid_exists(new)
    assert not deployment.pid_exists(old)
    instance = deployment.status("shop.web.1")["applications"][0]["workers"][0]["instances"][0]
    assert instance["restarts"] >= 1
    assert instance["last_exit"] == "killed by SIGKILL"
    # Details are read for the instances asked about.
    assert instance["pid"] == new
    (other,) = deployment.status("shop.web.2")["applications"][0]["workers"][0]["instances"]
    assert (other["number"], other["pid"]) == (2, deployment.pid_of(WEB2))


def os_kill(deployment: Target, pid: int) -> None:
    """SIGKILL a worker process, inside the container when the deployment is there."""
    if isinstance(deployment, Deployment):
        deployment.sh(f"kill -KILL {pid}")
    else:
        os.kill(pid, signal.SIGKILL)


def test_killed_daemon_leaves_workers_and_its_successor_adopts_them(deployment: Target) -> None:
    """SIGKILL of pazuzud touches no worker; the next one adopts all, starts no duplicate."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("scale", "shop.web=3")
    workers_before = deployment.all_worker_pids()
    instances_before = pids(deployment, WEB1, WEB2, WEB3, QUEUE1)
    deployment.kill_daemon(signal.SIGKILL)
    assert deployment.all_worker_pids() == workers_before
    deployment.start_daemon()
    assert deployment.running() == {WEB1, WEB2, WEB3, QUEUE1}
    assert pids(deployment, WEB1, WEB2, WEB3, QUEUE1) == instances_before
    assert deployment.all_worker_pids() == workers_before
    # The runtime scale was persisted, not reset to the configured 2.
    workers = deployment.status()["applications"][0]["workers"]
    assert {w["name"]: w["desired"] for w in workers} == {"web": 3, "queue": 1}


def test_adopted_worker_that_dies_is_respawned(deployment: Target) -> None:
    """After a daemon restart, an adopted instance that crashes comes back."""
    shop(deployment)
    deployment.start_daemon()
    deployment.kill_daemon(signal.SIGKILL)
    deployment.start_daemon()
    old = deployment.pid_of(WEB2)
    os_kill(deployment, old)
    wait_until(
        lambda: deployment.pid_of(WEB2) not in (0, old),
        timeout=5,
        message="the adopted web.2 to be respawned",
    )
    assert deployment.running() == {WEB1, WEB2, QUEUE1}


def test_sigterm_of_the_daemon_leaves_workers_running(deployment: Target) -> None:
    """Stopping pazuzud stops the daemon only; workers stay."""
    shop(deployment)
    deployment.start_daemon()
    before = deployment.all_worker_pids()
    deployment.stop_daemon()
    assert deployment.all_worker_pids() == before
    assert deployment.running() == {WEB1, WEB2, QUEUE1}


def test_stop_and_start_of_instance_worker_and_application(deployment: Target) -> None:
    """stop/start act on exactly what the spec names, and a stop survives a daemon restart."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("stop", "shop.web.2")
    assert deployment.running() == {WEB1, QUEUE1}
    states = deployment.status("shop.web")["applications"][0]["workers"][0]["instances"]
    assert [i["state"] for i in states] == ["running", "stopped"]

    deployment.kill_daemon()
    deployment.start_daemon()
    assert deployment.running() == {WEB1, QUEUE1}

    deployment.cli("stop", "shop.web")
    assert deployment.running() == {QUEUE1}
    deployment.cli("stop", "shop")
    assert deployment.running() == set()
    assert deployment.all_worker_pids() == set()
    deployment.cli("start", "shop")
    assert deployment.running() == {WEB1, WEB2, QUEUE1}


def test_stop_kills_children_that_ignore_sigterm(deployment: Target) -> None:
    """A worker whose children trap SIGTERM and double-fork leaves no process behind."""
    deployment.write_procfile(
        "stubborn",
        "web: trap '' TERM; (trap '' TERM; sleep 1000 &) ; sh -c \"trap '' TERM; sleep 1000\"\n",
    )
    deployment.write_config(
        f"applications:\n  stubborn:\n    procfile: {deployment.app_dir('stubborn')}\n"
        "    stop_timeout: 1\n"
    )
    deployment.start_daemon()
    wait_until(
        lambda: len(deployment.all_worker_pids()) >= 4, timeout=10, message="the process tree"
    )
    tree = deployment.all_worker_pids()
    deployment.cli("stop", "stubborn")
    assert deployment.running() == set()
    assert deployment.all_worker_pids() == set()
    assert not any(deployment.pid_exists(pid) for pid in tree)


def test_restart_replaces_processes_and_starts_stopped_ones(deployment: Target) -> None:
    """restart gives an instance a new process, and starts a stopped instance it names."""
    shop(deployment)
    deployment.start_daemon()
    deployment.cli("stop", "shop.web.2")
    before = pids(deployment, WEB1, QUEUE1)
    deployment.cli("restart", "shop.web")
    assert deployment.running() == {WEB1, WEB2, QUEUE1}
    assert deployment.pid_of(WEB1) != before[WEB1]
    assert deployment.pid_of(QUEUE1) == before[QUEUE1]
    deployment.cli("restart", "--rolling", "shop.queue.1")
    assert deployment.pid_of(QUEUE1) != before[QUEUE1]


def test_unknown_spec_is_an_error_that_names_it(deployment: Target) -> None:
    """`pazuzu stop shop.nope` exits 1, names the spec and lists what exists."""
    shop(deployment)
    deployment.start_daemon()
    result = deployment.cli("stop", "shop.nope", check=False)
    assert result.returncode == 1
    assert "shop.nope" in result.stderr
    assert "shop.web" in result.stderr
    assert deployment.running() == {WEB1, WEB2, QUEUE1}


def test_reload_applies_only_the_difference(deployment: Target) -> None:
    """Reload restarts a changed worker, starts a new one, stops a removed one, keeps the rest."""
    deployment.write_procfile(
        "shop", "web: exec sleep 1000\nqueue: sleep 1000\nold: exec sleep 1000\n"
    )
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n"
        "    workers:\n      web:\n        num_instances: 2\n"
    )
    deployment.start_daemon()
    before = pids(deployment, WEB1, WEB2, QUEUE1)
    deployment.write_procfile(
        "shop", "web: exec sleep 2000\nqueue: sleep 1000\nclock: exec sleep 1000\n"
    )
    deployment.cli("reload")
    assert deployment.running() == {WEB1, WEB2, QUEUE1, "shop.clock.1"}
    after = pids(deployment, WEB1, WEB2, QUEUE1)
    assert after[QUEUE1] == before[QUEUE1]
    assert after[WEB1] != before[WEB1]
    assert after[WEB2] != before[WEB2]


def test_sighup_reloads(deployment: Target) -> None:
    """SIGHUP to pazuzud applies a new instance count from the configuration."""
    shop(deployment)
    deployment.start_daemon()
    shop(deployment, web=3)
    if isinstance(deployment, Deployment):
        deployment.sh("systemctl reload pazuzud")  # ExecReload sends the SIGHUP
    else:
        os.kill(deployment.daemon_pid(), signal.SIGHUP)
    wait_running(deployment, {WEB1, WEB2, WEB3, QUEUE1})


def test_invalid_config_on_reload_is_rejected_whole(deployment: Target) -> None:
    """A broken config on reload is refused with its file and key; no worker is touched."""
    shop(deployment)
    deployment.start_daemon()
    before = deployment.all_worker_pids()
    deployment.write_config("applications:\n  shop:\n    procfile: [not, a, path]\n")
    result = deployment.cli("reload", check=False)
    assert result.returncode == 1
    assert "pazuzu.conf" in result.stderr
    assert "applications.shop.procfile" in result.stderr
    assert deployment.all_worker_pids() == before
    # The old configuration is still in force: scaling its worker works.
    deployment.cli("scale", "shop.web=3")
    assert deployment.running() == {WEB1, WEB2, WEB3, QUEUE1}


def test_invalid_config_at_start_up_touches_no_worker(deployment: Target) -> None:
    """pazuzud refuses to start on a broken config and leaves running workers alone."""
    shop(deployment)
    deployment.start_daemon()
    deployment.stop_daemon()
    before = deployment.all_worker_pids()
    deployment.write_procfile("shop", "web exec sleep 1000\n")  # no colon: line 1 is invalid
    assert deployment.start_daemon(check=False) != 0
    assert deployment.all_worker_pids() == before
    assert "Procfile:1" in deployment.daemon_log()


def test_log_shows_worker_output_also_after_a_daemon_restart(deployment: Target) -> None:
    """`pazuzu log` shows a worker's lines, per instance, before and after a daemon restart."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    shop(
        deployment,
        procfile=f"web: echo {marker}-$DYNO; exec sleep 1000\nqueue: exec sleep 1000\n",
    )
    deployment.start_daemon()
    wait_until(
        lambda: f"{marker}-web.2" in deployment.cli("log", "shop.web", "-n", "20").stdout,
        timeout=10,
        message="web.2's output in `pazuzu log`",
    )
    only_one = deployment.cli("log", "shop.web.1", "-n", "20").stdout
    assert f"{marker}-web.1" in only_one
    assert f"{marker}-web.2" not in only_one
    deployment.kill_daemon()
    deployment.start_daemon()
    assert f"{marker}-web.2" in deployment.cli("log", "shop", "-n", "50").stdout


def test_crash_loop_backs_off_and_is_never_parked(deployment: Target) -> None:
    """A worker that exits at once is retried with growing delays, not 60 times a second."""
    # The journal is shared by the tests in one container: count this test's lines only.
    marker = f"boom-{uuid.uuid4().hex[:8]}"
    deployment.write_procfile("loop", f"boom: echo {marker}; exit 3\n")
    deployment.write_config(f"applications:\n  loop:\n    procfile: {deployment.app_dir('loop')}\n")
    deployment.start_daemon()

    def attempts() -> int:
        return deployment.cli("log", "loop", "-n", "1000", check=False).stdout.count(marker)

    wait_until(lambda: attempts() >= 4, timeout=20, message="a few attempts")
    instance = deployment.status("loop")["applications"][0]["workers"][0]["instances"][0]
    assert instance["state"] == "backoff"
    assert instance["last_exit"] == "exit 3"
    first = attempts()
    # Without backoff it would restart dozens of times a second; with it, a handful in seconds.
    wait_until(lambda: attempts() > first, timeout=20, message="another attempt")
    assert attempts() < 20
    assert deployment.cli("status", "loop", check=False).returncode == 3
