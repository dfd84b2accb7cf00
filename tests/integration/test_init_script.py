"""A host without systemd: contrib/init.d/pazuzud, and `--backend auto` choosing libcgroup."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.container import CHECKOUT, VENV, wait_until
from tests.integration.host import HostDeployment, pid_alive

pytestmark = pytest.mark.cgexec

SCRIPT = CHECKOUT / "contrib" / "init.d" / "pazuzud"


class InitScript:
    """Runs the init script as an operator would, under a subreaper (see tests.reaper)."""

    def __init__(self, host: HostDeployment) -> None:
        self.host = host
        self.pidfile = host.root / "pazuzud.pid"

    def __call__(self, action: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "DAEMON": str(VENV / "bin" / "pazuzud"),
            "CONFIG": str(self.host.config_path),
            "PIDFILE": str(self.pidfile),
            "PAZUZU_DEFAULTS": "/nonexistent",
        }
        run = uuid.uuid4().hex[:6]
        status_file = self.host.root / f"exit-{run}"
        output_file = self.host.root / f"output-{run}"
        # The reaper stays after the script exits, to adopt the detached daemon's orphans.
        with output_file.open("w") as output:
            reaper = subprocess.Popen(
                [sys.executable, "-m", "tests.reaper", str(status_file), "sh", str(SCRIPT), action],
                cwd=CHECKOUT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.host.adopt_reaper(reaper)
        wait_until(lambda: _read_int(status_file) is not None, timeout=60, message=f"init {action}")
        code = _read_int(status_file)
        assert code is not None
        return subprocess.CompletedProcess([action], code, output_file.read_text(), "")

    def daemon_pid(self) -> int:
        return int(self.pidfile.read_text())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def test_init_script_starts_stops_and_reloads_without_touching_workers(
    host: HostDeployment,
) -> None:
    """start waits for readiness; stop leaves workers; start adopts them; reload applies."""
    host.write_procfile("shop", "web: exec sleep 1000\n")
    body = f"applications:\n  shop:\n    procfile: {host.app_dir('shop')}\n"
    host.write_config(body)
    init = InitScript(host)

    assert init("start").returncode == 0
    daemon = init.daemon_pid()
    assert pid_alive(daemon)
    assert host.running() == {"shop.web.1"}  # ready means the formation is up
    assert init("status").returncode == 0

    host.write_config(body + "    workers:\n      web:\n        num_instances: 2\n")
    assert init("reload").returncode == 0
    wait_until(lambda: host.running() == {"shop.web.1", "shop.web.2"}, timeout=20, message="2")

    workers = host.all_worker_pids()
    assert init("stop").returncode == 0
    assert not pid_alive(daemon)
    assert host.all_worker_pids() == workers
    assert init("status").returncode == 3

    assert init("start").returncode == 0
    assert init.daemon_pid() != daemon
    assert host.all_worker_pids() == workers
    assert init("stop").returncode == 0


def test_init_script_start_reports_a_broken_configuration(host: HostDeployment) -> None:
    """A daemon that cannot start makes `start` fail, with the reason, and leaves no pid."""
    host.write_procfile("shop", "web exec sleep 1000\n")
    host.write_config(f"applications:\n  shop:\n    procfile: {host.app_dir('shop')}\n")
    init = InitScript(host)
    result = init("start")
    assert result.returncode == 1
    assert "Procfile:1" in result.stdout
    assert not init.pidfile.exists()


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="this host runs systemd")
def test_auto_picks_libcgroup_without_systemd_and_needs_no_pystemd(
    host: HostDeployment, tmp_path: Path
) -> None:
    """`--backend auto` on a host not booted with systemd runs libcgroup, pystemd unimportable."""
    blocker = tmp_path / "pystemd"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('pystemd hidden for this test')\n")
    host.write_procfile("shop", "web: exec sleep 1000\n")
    host.write_config(f"applications:\n  shop:\n    procfile: {host.app_dir('shop')}\n")
    host.start_daemon(backend="auto", env={"PYTHONPATH": str(tmp_path)})
    assert host.running() == {"shop.web.1"}
    assert host.status()["daemon"]["backend"] == "cgexec"
