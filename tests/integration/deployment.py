"""A pazuzu deployment inside the systemd container: config, Procfiles, the pazuzud service.

pazuzud runs as the real `units/pazuzud.service`, with a drop-in that points ExecStart at the
checkout's virtualenv and turns off automatic restarts so tests decide when it comes back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any, Protocol

from pazuzu.model import InstanceId
from pazuzu.naming import parse_unit_name, unit_name
from tests.integration.container import CHECKOUT, Container, wait_until

UNIT_FILE = CHECKOUT / "units" / "pazuzud.service"
SLICE_FILE = CHECKOUT / "units" / "pazuzu.slice"


class Target(Protocol):
    """What the backend-neutral scenarios need of a deployment, systemd or libcgroup."""

    backend: str

    def write_procfile(self, app: str, text: str, env: str | None = None) -> Path: ...
    def write_config(self, body: str) -> None: ...
    def app_dir(self, app: str) -> Path: ...
    def read_file(self, path: Path) -> str: ...
    def start_daemon(self, *, check: bool = True, env: dict[str, str] | None = None) -> int: ...
    def daemon_pid(self) -> int: ...
    def kill_daemon(self, sig: signal.Signals = signal.SIGKILL) -> None: ...
    def stop_daemon(self) -> None: ...
    def daemon_log(self) -> str: ...
    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...
    def status(self, *specs: str) -> dict[str, Any]: ...
    def running(self) -> set[str]: ...
    def pid_of(self, instance: str) -> int: ...
    def all_worker_pids(self) -> set[int]: ...
    def pid_exists(self, pid: int) -> bool: ...
    def cleanup(self) -> None: ...


class StatusByCli:
    """`status()` through the deployment's own `pazuzu --json status`."""

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def status(self, *specs: str) -> dict[str, Any]:
        result = self.cli("--json", "status", *specs, check=False)
        assert result.returncode in (0, 3), result.stderr  # 3: something should run but doesn't
        document: dict[str, Any] = json.loads(result.stdout)
        return document


class Deployment(StatusByCli):
    """One test's applications and daemon; `cleanup()` removes every trace of them."""

    backend = "systemd"

    def __init__(self, container: Container) -> None:
        self.container = container
        self.root = Path("/srv") / f"pz-{uuid.uuid4().hex[:8]}"
        self.config_path = self.root / "pazuzu.conf"
        self.socket_path = self.root / "pazuzud.socket"
        self.state_path = self.root / "state.json"

    # -- files -----------------------------------------------------------------------------

    def write_procfile(self, app: str, text: str, env: str | None = None) -> Path:
        directory = self.root / app
        self.container.write_file(directory / "Procfile", text)
        if env is not None:
            self.container.write_file(directory / ".env", env)
        return directory

    def write_config(self, body: str) -> None:
        """Write the configuration: `body` is YAML for `applications:` and anything else."""
        header = f"socket_path: {self.socket_path}\nstate_path: {self.state_path}\n"
        self.container.write_file(self.config_path, header + body)

    def app_dir(self, app: str) -> Path:
        return self.root / app

    def read_file(self, path: Path) -> str:
        return self.container.host_path(path).read_text()

    def install_service(self) -> None:
        self.container.write_file("/etc/systemd/system/pazuzud.service", UNIT_FILE.read_text())
        self.container.write_file("/etc/systemd/system/pazuzu.slice", SLICE_FILE.read_text())
        self.container.write_file(
            "/etc/systemd/system/pazuzud.service.d/test.conf",
            # The chaos test restarts pazuzud faster than the default start limit allows.
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=\n"
            f"ExecStart={self.container.venv_bin}/pazuzud -c {self.config_path}\n"
            "Restart=no\n",
        )
        self.sh("systemctl daemon-reload")

    # -- the daemon ------------------------------------------------------------------------

    def start_daemon(self, *, check: bool = True, env: dict[str, str] | None = None) -> int:
        """`systemctl start pazuzud`: returns 0 once pazuzud sent READY=1 (Type=notify).

        `env` goes into pazuzud's own environment, with a drop-in (`Environment=`).
        """
        if env:
            lines = "".join(f'Environment="{key}={value}"\n' for key, value in env.items())
            self.container.write_file(
                "/etc/systemd/system/pazuzud.service.d/environment.conf", "[Service]\n" + lines
            )
            self.sh("systemctl daemon-reload")
        return self.sh("systemctl start pazuzud", check=check, timeout=60).returncode

    def stop_daemon(self) -> None:
        self.sh("systemctl stop pazuzud", timeout=60)

    def daemon_pid(self) -> int:
        return int(self.sh("systemctl show -p MainPID --value pazuzud").stdout.strip())

    def kill_daemon(self, sig: signal.Signals = signal.SIGKILL) -> None:
        pid = self.daemon_pid()
        assert pid > 0, "pazuzud is not running"
        self.sh(f"kill -{sig.name.removeprefix('SIG')} {pid}")
        wait_until(
            lambda: (
                self.sh("systemctl is-active pazuzud", check=False).stdout.strip()
                in ("inactive", "failed")
            ),
            timeout=20,
            message="pazuzud to exit",
        )

    def daemon_log(self) -> str:
        return self.sh("journalctl -u pazuzud --no-pager -o cat", check=False).stdout

    # -- the CLI ---------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.container.run(
            [f"{self.container.venv_bin}/pazuzu", "--socket", str(self.socket_path), *args],
            check=check,
            timeout=timeout,
        )

    # -- ground truth ----------------------------------------------------------------------

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return self.container.run(["sh", "-c", command], check=check, timeout=timeout)

    def units(self) -> dict[str, str]:
        """Every loaded instance unit with its `active/sub` state, as systemctl lists it."""
        out = self.sh("systemctl list-units 'pazuzu-*@*.service' --all --plain --no-legend").stdout
        found = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                found[fields[0]] = f"{fields[2]}/{fields[3]}"
        return found

    def running_units(self) -> set[str]:
        return {name for name, state in self.units().items() if state == "active/running"}

    def main_pid(self, unit: str) -> int:
        quoted = unit
        return int(self.sh(f"systemctl show -p MainPID --value '{quoted}'").stdout.strip() or 0)

    def cgroup_pids(self, unit: str) -> set[int]:
        """The PIDs in the unit's cgroup, read from cgroup.procs."""
        quoted = unit
        group = self.sh(f"systemctl show -p ControlGroup --value '{quoted}'").stdout.strip()
        if not group:
            return set()
        procs = self.sh(f"cat '/sys/fs/cgroup/unified{group}/cgroup.procs'", check=False).stdout
        return {int(pid) for pid in procs.split()}

    def all_worker_pids(self) -> set[int]:
        """Every process under pazuzu.slice, wherever systemd put it."""
        out = self.sh(
            "find /sys/fs/cgroup/unified/pazuzu.slice -name cgroup.procs"
            " -exec cat {} + 2>/dev/null",
            check=False,
        ).stdout
        return {int(pid) for pid in out.split()}

    def running(self) -> set[str]:
        """The instances whose unit is active and running, as `app.worker.n`."""
        names = (parse_unit_name(unit) for unit in self.running_units())
        return {str(instance) for instance in names if instance is not None}

    def pid_of(self, instance: str) -> int:
        app, worker, number = instance.rsplit(".", 2)
        return self.main_pid(unit(app, worker, int(number)))

    def pid_exists(self, pid: int) -> bool:
        return self.container.pid_exists(pid)

    def wait_running(self, units: set[str], timeout: float = 30) -> None:
        wait_until(
            lambda: self.running_units() == units,
            timeout=timeout,
            message=f"exactly {sorted(units)} running (have {sorted(self.running_units())})",
        )

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop the daemon and every worker, and remove files and units: even after a failure."""
        self.sh("systemctl stop pazuzud", check=False, timeout=60)
        self.sh("systemctl stop pazuzu.slice", check=False, timeout=60)
        self.sh("systemctl reset-failed", check=False)
        self.sh(
            "rm -rf /etc/systemd/system/pazuzud.service /etc/systemd/system/pazuzud.service.d "
            f"/etc/systemd/system/pazuzu.slice {self.root} {self.state_path} "
            "&& systemctl daemon-reload",
            check=False,
        )


def unit(app: str, worker: str, number: int) -> str:
    return unit_name(InstanceId(app, worker, number))
