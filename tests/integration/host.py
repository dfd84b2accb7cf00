"""A pazuzu deployment on this host's real cgroups, with the libcgroup (cgexec) backend.

pazuzud runs under `tests.reaper`, a subreaper, so the workers it leaves behind when a test
kills it are reaped when they die instead of lingering as zombies. Readiness is observed the
way systemd would: pazuzud gets a `$NOTIFY_SOCKET` served by the test and must send READY=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.integration.container import CHECKOUT, VENV, wait_until
from tests.integration.deployment import StatusByCli

FS_ROOT = Path("/sys/fs/cgroup")
SUBSYSTEMS = ("memory", "cpu", "cpuacct", "blkio")


def host_problem() -> str | None:
    """Why the libcgroup tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in (("svlogd", "runit"), ("cgget", "cgroup-tools")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {package})"
    if not (FS_ROOT / "memory").is_dir() and not (FS_ROOT / "cgroup.controllers").exists():
        return f"no cgroup filesystem under {FS_ROOT}"
    return None


def require_host() -> None:
    """Skip a test that needs this host's cgroups where it cannot run, or fail it under CI.

    Under CI a missing tool is a failure: a machine that lost its packages must not turn the
    libcgroup tests into silent skips.
    """
    problem = host_problem()
    if problem is None:
        return
    import pytest

    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"libcgroup tests cannot run: {problem}", pytrace=False)
    pytest.skip(f"libcgroup tests: {problem}")


class HostDeployment(StatusByCli):
    """One test's applications and pazuzud on the host; `cleanup()` removes every trace."""

    backend = "cgexec"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pazuzu-test-"))
        self.hierarchy = f"pazuzu-test-{uuid.uuid4().hex[:8]}"
        self.config_path = self.root / "pazuzu.conf"
        self.socket_path = self.root / "pazuzud.socket"
        self.state_path = self.root / "state.json"
        self.log_dir = self.root / "logs"
        self._reapers: list[subprocess.Popen[bytes]] = []
        self._daemon_log = self.root / "pazuzud.log"

    # -- files -----------------------------------------------------------------------------

    def write_procfile(self, app: str, text: str, env: str | None = None) -> Path:
        directory = self.root / app
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Procfile").write_text(text)
        if env is not None:
            (directory / ".env").write_text(env)
        return directory

    def write_config(self, body: str) -> None:
        header = (
            f"socket_path: {self.socket_path}\nstate_path: {self.state_path}\n"
            f"log_path: {self._daemon_log}\n"
            f"cgroups:\n  hierarchy_root: {self.hierarchy}\n"
            f"worker_logs:\n  directory: {self.log_dir}\n"
        )
        self.config_path.write_text(header + body)

    def app_dir(self, app: str) -> Path:
        return self.root / app

    def read_file(self, path: Path) -> str:
        return path.read_text()

    # -- the daemon ------------------------------------------------------------------------

    def start_daemon(
        self,
        *,
        check: bool = True,
        timeout: float = 60,
        backend: str = "cgexec",
        env: dict[str, str] | None = None,
    ) -> int:
        """Start pazuzud and wait for READY=1; returns 0, or its exit status if it died first."""
        self._prune_reapers()
        notify_path = self.root / f"notify-{uuid.uuid4().hex[:6]}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(0.2)
            env = {
                **os.environ,
                "NOTIFY_SOCKET": str(notify_path),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
            status_file = self.root / f"exit-{uuid.uuid4().hex[:6]}"
            with self._daemon_log.open("ab") as log:
                reaper = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.reaper",
                        str(status_file),
                        str(VENV / "bin" / "pazuzud"),
                        "-c",
                        str(self.config_path),
                        "--backend",
                        backend,
                    ],
                    cwd=CHECKOUT,
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self._reapers.append(reaper)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    if b"READY=1" in notify.recv(4096).split(b"\n"):
                        return 0
                except TimeoutError:
                    pass
                status = _exit_status(status_file)
                if status is not None:
                    if check:
                        raise AssertionError(f"pazuzud exited {status}:\n{self.daemon_log()}")
                    return status
        raise AssertionError(f"pazuzud sent no READY=1 within {timeout} s:\n{self.daemon_log()}")

    @staticmethod
    def _daemon_pid_of(reaper: subprocess.Popen[bytes]) -> int | None:
        try:
            children = Path(f"/proc/{reaper.pid}/task/{reaper.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pazuzud" in cmdline:
                return int(pid)
        return None

    def _prune_reapers(self) -> None:
        """End reapers with nothing left to reap: their daemon and its orphans are gone."""
        for reaper in list(self._reapers):
            try:
                children = Path(f"/proc/{reaper.pid}/task/{reaper.pid}/children").read_text()
            except OSError:
                children = ""
            if not children.split():
                reaper.terminate()
                reaper.wait(timeout=10)
                self._reapers.remove(reaper)

    def adopt_reaper(self, reaper: subprocess.Popen[bytes]) -> None:
        """Clean up this reaper (and the pazuzud under it) with the deployment."""
        self._reapers.append(reaper)

    def daemon_pid(self) -> int:
        for reaper in reversed(self._reapers):
            pid = self._daemon_pid_of(reaper)
            if pid is not None:
                return pid
        raise AssertionError("pazuzud is not running")

    def kill_daemon(self, sig: signal.Signals = signal.SIGKILL) -> None:
        pid = self.daemon_pid()
        os.kill(pid, sig)
        wait_until(lambda: not pid_alive(pid), timeout=20, message="pazuzud to exit")

    def stop_daemon(self) -> None:
        self.kill_daemon(signal.SIGTERM)

    def daemon_log(self) -> str:
        try:
            return self._daemon_log.read_text(errors="replace")
        except OSError:
            return ""

    # -- the CLI ---------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV / "bin" / "pazuzu"), "--socket", str(self.socket_path), *args],
            check=check,
            timeout=timeout,
            capture_output=True,
            text=True,
        )

    # -- ground truth ----------------------------------------------------------------------

    def _tree(self) -> Path:
        for subsystem in SUBSYSTEMS:
            if (FS_ROOT / subsystem).is_dir():
                return FS_ROOT / subsystem / self.hierarchy
        return FS_ROOT / self.hierarchy  # a pure cgroup2 host

    def instance_pids(self) -> dict[str, set[int]]:
        """Every instance cgroup with processes in it: `app.worker.n` -> its PIDs."""
        found: dict[str, set[int]] = {}
        tree = self._tree()
        for procs in tree.glob("*/*/*/cgroup.procs"):
            pids = {int(p) for p in procs.read_text().split()}
            if pids:
                app, worker, number = procs.parent.relative_to(tree).parts
                found[f"{app}.{worker}.{number}"] = pids
        return found

    def running(self) -> set[str]:
        return set(self.instance_pids())

    def pid_of(self, instance: str) -> int:
        """The instance's main process: the oldest one in its cgroup; 0 if none."""
        pids = self.instance_pids().get(instance, set())
        alive = [pid for pid in pids if pid_alive(pid)]
        return min(alive, key=_start_time) if alive else 0

    def all_worker_pids(self) -> set[int]:
        return set().union(*self.instance_pids().values())

    def pid_exists(self, pid: int) -> bool:
        return pid_alive(pid)

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop pazuzud and kill every worker; remove cgroups, reapers and files."""
        for reaper in self._reapers:
            pid = self._daemon_pid_of(reaper)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        extra = [FS_ROOT / "freezer", FS_ROOT / "pids", FS_ROOT]
        for subsystem_root in [FS_ROOT / s for s in SUBSYSTEMS] + extra:
            tree = subsystem_root / self.hierarchy
            if not tree.is_dir():
                continue
            _kill_tree(tree)
            for directory in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
                if directory.is_dir():
                    directory.rmdir()
            tree.rmdir()
        for reaper in self._reapers:
            reaper.terminate()
            reaper.wait(timeout=10)
        shutil.rmtree(Path("/run") / self.hierarchy, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_tree(tree: Path) -> None:
    def members() -> set[int]:
        return {int(p) for f in tree.rglob("cgroup.procs") for p in f.read_text().split()}

    for pid in members():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not members(), timeout=10, message=f"{tree} to empty")


def _exit_status(status_file: Path) -> int | None:
    try:
        return int(status_file.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _start_time(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return 0
