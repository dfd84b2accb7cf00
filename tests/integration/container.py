"""A booted systemd in a throw-away systemd-nspawn container, for the integration tests.

The container shares the host's `/usr` (`--volatile=yes`: everything else is a fresh tmpfs) and
sees this checkout, virtual environment included, at the same path as the host does. Commands
run inside through `nsenter`, with a clean environment, so nothing of the test runner's
environment (`NOTIFY_SOCKET`, a pyenv `PATH`) leaks into what is under test.

Processes started with `run()` and `popen()` join the container's namespaces but not its cgroup
tree: for something that must live in a unit (the daemon under test), start it through
`systemctl` or `systemd-run` inside.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, TypeVar

T = TypeVar("T")

CHECKOUT: Final = Path(__file__).resolve().parents[2]
VENV: Final = CHECKOUT / ".venv"

BOOT_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0
# `is-system-running` answers `degraded` when some unit failed; the manager is still usable.
BOOTED_STATES: Final = frozenset({"running", "degraded"})
# Where systemd-nspawn keeps per-machine state on the host; it removes it on a clean exit only.
NSPAWN_STATE_DIRS: Final = (Path("/run/systemd/nspawn/propagate"),)

_PR_SET_PDEATHSIG: Final = 1


class ContainerError(RuntimeError):
    """The container could not be booted, or it went away."""


class ContainerCommandError(subprocess.CalledProcessError):
    """A command inside the container exited non-zero; its output is part of the message."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text:
                parts.append(f"{label}:\n{str(text).rstrip()}")
        return "\n".join(parts)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    *,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; bounded by `timeout`.

    Raises TimeoutError naming `message` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout:g} s (last value: {value!r})")
        time.sleep(interval)


def nspawn_available() -> str | None:
    """Why this host cannot run the container, or None when it can."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash .ci/setup installs it)"
    if not (VENV / "bin" / "python").exists():
        return f"no virtual environment at {VENV} (run bash .ci/setup)"
    return None


def _python_prefix() -> Path:
    """The installation prefix of the virtual environment's interpreter."""
    python = VENV / "bin" / "python"
    if python.exists():
        out = subprocess.run(
            [str(python), "-c", "import sys; print(sys.base_prefix)"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return Path(out.stdout.strip()).resolve()
    return Path(sys.base_prefix).resolve()


# Loaded before any fork: the child between fork and exec may only make plain calls.
_libc: Final = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM the child when the test runner dies, however it dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# The hierarchies a container's systemd manages. Without systemd on the host, systemd-nspawn
# puts every container in `<its own cgroup>/payload`: two containers started from one cgroup
# would share `/payload/pazuzu.slice` and stop each other's units. Each gets its own parent.
CGROUP_HIERARCHIES: Final = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))


def _own_cgroups(name: str) -> list[Path]:
    """Fresh cgroups, one per hierarchy present, for one container to live under."""
    made = []
    for hierarchy in CGROUP_HIERARCHIES:
        if (hierarchy / "cgroup.procs").exists():
            group = hierarchy / f"nspawn-{name}"
            group.mkdir(exist_ok=True)
            made.append(group)
    return made


def _remove_cgroups(groups: list[Path]) -> None:
    """Remove a container's cgroups once it is gone, deepest first, killing any straggler."""
    for group in groups:
        if not group.is_dir():
            continue
        for procs in group.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for directory in sorted(
            (d for d in group.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


def _children(pid: int) -> list[int]:
    """Direct children of a host process (empty once it is gone)."""
    result: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                result.extend(int(p) for p in (task / "children").read_text().split())
    return result


def _namespace_pid(host_pid: int) -> int | None:
    """The PID of a host process as its own (innermost) PID namespace sees it."""
    try:
        status = Path(f"/proc/{host_pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _kill_init(host_pid: int | None) -> None:
    """SIGKILL a container's init, if that PID still is one (and not a zombie)."""
    if host_pid is None or _namespace_pid(host_pid) != 1:
        return
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if "\nState:\tZ" in Path(f"/proc/{host_pid}/status").read_text():
            return
        os.kill(host_pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ContainerProcess:
    """A long-running command inside the container (see `Container.popen`).

    The host process is `nsenter`, which forks the command and exits with its status; signals
    go to the command itself, not to `nsenter`.
    """

    def __init__(self, popen: subprocess.Popen[str], args: Sequence[str]) -> None:
        self.popen = popen
        self.args = list(args)

    @property
    def stdin(self) -> IO[str] | None:
        return self.popen.stdin

    @property
    def stdout(self) -> IO[str] | None:
        return self.popen.stdout

    @property
    def stderr(self) -> IO[str] | None:
        return self.popen.stderr

    @property
    def returncode(self) -> int | None:
        """The command's exit status (negative: killed by that signal), None while it runs."""
        return self.popen.returncode

    def host_pid(self, timeout: float = 5.0) -> int:
        """The command's PID as the host sees it."""

        def forked() -> int | None:
            children = _children(self.popen.pid)
            if children:
                return children[0]
            if self.popen.poll() is not None:
                raise ContainerError(f"{self.args[0]} exited already ({self.popen.returncode})")
            return None

        return wait_until(forked, timeout, 0.01, message=f"nsenter forks {self.args[0]}")

    def pid(self, timeout: float = 5.0) -> int:
        """The command's PID inside the container."""
        host_pid = self.host_pid(timeout)
        inner = _namespace_pid(host_pid)
        if inner is None:
            raise ContainerError(f"{self.args[0]} (host pid {host_pid}) exited already")
        return inner

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the command (not to nsenter)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, ContainerError, TimeoutError):
                os.kill(self.host_pid(), sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the command and everything still in its process group."""
        _kill_group(self.popen.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def communicate(
        self, input: str | None = None, timeout: float | None = None
    ) -> tuple[str, str]:
        out, err = self.popen.communicate(input, timeout)
        return out or "", err or ""

    def close(self) -> None:
        """Kill what is left of the command and reap it; idempotent."""
        if self.popen.poll() is None:
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.communicate(timeout=STOP_TIMEOUT)

    def __enter__(self) -> ContainerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Container:
    """A booted systemd (PID 1 of its own namespaces) sharing /usr and this checkout.

    Use as a context manager, or call `start()` and `stop()`; `stop()` is idempotent and also
    runs at interpreter exit. If the test runner is killed outright, systemd-nspawn gets SIGTERM
    from the kernel and shuts the container down.
    """

    def __init__(self, name: str | None = None, *, boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.name = name or f"pazuzu-test-{uuid.uuid4().hex[:12]}"
        self.boot_timeout = boot_timeout
        self.checkout = CHECKOUT
        self.venv_bin = VENV / "bin"
        self.python = str(self.venv_bin / "python")
        self.boot_seconds: float | None = None
        self.state: str | None = None
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self._console: IO[bytes] | None = None
        self._cgroups: list[Path] = []

    # Lifecycle ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The systemd-nspawn command line that boots this container."""
        cmd = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--directory=/",
            "--volatile=yes",
            f"--machine={self.name}",
            f"--bind={self.checkout}:{self.checkout}",
        ]
        prefix = _python_prefix()
        if not prefix.is_relative_to("/usr") and not prefix.is_relative_to(self.checkout):
            cmd.append(f"--bind-ro={prefix}:{prefix}")
        cmd += ["--boot", "systemd.firstboot=off", "systemd.mask=systemd-firstboot.service"]
        return cmd

    @property
    def pid1(self) -> int:
        """The host PID of the container's systemd."""
        if self._pid1 is None:
            raise ContainerError(f"container {self.name} is not running")
        return self._pid1

    def start(self) -> Container:
        """Boot the container and wait until systemd says it is up; stop it again on failure."""
        if self._nspawn is not None:
            raise ContainerError(f"container {self.name} was started already")
        # An anonymous file: nothing is left behind, however the test runner ends.
        self._console = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by stop()
        self._cgroups = _own_cgroups(self.name)
        procs_files = [str(group / "cgroup.procs") for group in self._cgroups]

        def prepare_child() -> None:
            _die_with_parent()
            for procs in procs_files:  # "0": the writing process itself
                with open(procs, "w") as join:
                    join.write("0")

        started = time.monotonic()
        self._nspawn = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            # Out of the runner's process group: a Ctrl-C at the terminal must not reach
            # the container's PID 1, where SIGINT means ctrl-alt-del, i.e. reboot.
            start_new_session=True,
            # Plain syscalls only (prctl, small writes): safe between fork and exec.
            preexec_fn=prepare_child,  # noqa: PLW1509
        )
        atexit.register(self.stop)
        try:
            self._pid1 = wait_until(
                self._find_pid1, self.boot_timeout, 0.02, message=f"{self.name}: PID 1 appears"
            )
            self.state = wait_until(
                self._booted_state,
                max(0.0, self.boot_timeout - (time.monotonic() - started)),
                0.1,
                message=f"{self.name}: systemctl is-system-running says running",
            )
        except BaseException as exc:
            log_tail = self.log_tail()
            self.stop()
            if isinstance(exc, Exception):
                raise ContainerError(
                    f"container {self.name} did not boot: {exc}\n{log_tail}"
                ) from exc
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _check_alive(self) -> None:
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with status {self._nspawn.returncode}\n{self.log_tail()}"
            )

    def _find_pid1(self) -> int | None:
        self._check_alive()
        assert self._nspawn is not None
        for child in _children(self._nspawn.pid):
            # Until the inner child is cloned into its PID namespace, the child is not PID 1.
            if _namespace_pid(child) == 1:
                return child
        return None

    def _booted_state(self) -> str | None:
        self._check_alive()
        try:
            out = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return None
        state = out.stdout.strip()
        if state == "maintenance":
            raise ContainerError("systemd fell into emergency mode (maintenance)")
        return state if state in BOOTED_STATES else None

    def console(self) -> str:
        """What systemd-nspawn printed so far: the container's console."""
        if self._console is None:
            return ""
        with open(f"/proc/self/fd/{self._console.fileno()}", "rb") as log:
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the container's console, for error messages."""
        tail = self.console().splitlines()[-lines:]
        return "console:\n" + "\n".join(tail) if tail else "(the console is empty)"

    def stop(self) -> None:
        """Shut the container down (SIGTERM, then SIGKILL) and remove what it left; idempotent."""
        nspawn, self._nspawn = self._nspawn, None
        pid1, self._pid1 = self._pid1, None
        atexit.unregister(self.stop)
        if nspawn is not None:
            if pid1 is None:
                pid1 = next((c for c in _children(nspawn.pid) if _namespace_pid(c) == 1), None)
            if nspawn.poll() is None:
                # systemd-nspawn turns SIGTERM into a clean poweroff of the container.
                nspawn.send_signal(signal.SIGTERM)
                try:
                    nspawn.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    # Kill the container's init first, while systemd-nspawn is there to reap it:
                    # that kills everything in its PID namespace, and nspawn then exits.
                    _kill_init(pid1)
                    try:
                        nspawn.wait(STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        _kill_group(nspawn.pid, signal.SIGKILL)
                        nspawn.wait(STOP_TIMEOUT)
            # systemd-nspawn gone by itself (SIGKILL) leaves the container running.
            _kill_init(pid1)
            for state_dir in NSPAWN_STATE_DIRS:
                leftover = state_dir / self.name
                if leftover.is_dir() and not leftover.is_mount():
                    shutil.rmtree(leftover, ignore_errors=True)
        _remove_cgroups(self._cgroups)
        self._cgroups = []
        if self._console is not None:
            self._console.close()
            self._console = None

    @property
    def running(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None

    def __enter__(self) -> Container:
        if self._nspawn is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Running things inside ----------------------------------------------------------------

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command inside: a login-like base, then `env` on top."""
        base = {
            # The venv first, so `pazuzu` and `pazuzud` resolve as in an activated shell.
            "PATH": f"{self.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        base.update(env or {})
        return base

    def _nsenter(self, args: Sequence[str], cwd: str | None) -> list[str]:
        if not args:
            raise ValueError("no command given")
        wd = [f"--wd={cwd}"] if cwd is not None else []
        return ["nsenter", f"--target={self.pid1}", "--all", *wd, "--", *args]

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside to completion and capture its output (text).

        Raises ContainerCommandError on a non-zero exit when `check`, and TimeoutExpired after
        killing the command when it outlives `timeout`.
        """
        with subprocess.Popen(
            self._nsenter(args, cwd),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(env),
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout)
            except subprocess.TimeoutExpired:
                # Killing nsenter alone would leave the command running inside.
                _kill_group(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                raise subprocess.TimeoutExpired(list(args), timeout, out, err) from None
        result = subprocess.CompletedProcess(list(args), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise ContainerCommandError(result.returncode, list(args), out, err)
        return result

    def popen(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: int | IO[str] | None = subprocess.DEVNULL,
        stdout: int | IO[str] | None = subprocess.PIPE,
        stderr: int | IO[str] | None = subprocess.PIPE,
    ) -> ContainerProcess:
        """Start a long-running command inside and return without waiting for it.

        Close the result (or use it as a context manager) to kill and reap what is left.
        """
        proc = subprocess.Popen(
            self._nsenter(args, cwd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=self.environment(env),
            start_new_session=True,
        )
        return ContainerProcess(proc, args)

    def host_path(self, path: str | Path) -> Path:
        """A host path through which a file of the container can be read or written."""
        inside = Path(path)
        if not inside.is_absolute():
            raise ValueError(f"{path} is not absolute")
        return Path(f"/proc/{self.pid1}/root") / inside.relative_to("/")

    def write_file(self, path: str | Path, text: str, mode: int = 0o644) -> None:
        """Create or replace a file inside the container, with its parent directories."""
        target = self.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def pid_exists(self, pid: int) -> bool:
        """Whether `pid` (as the container numbers it) is a live process inside."""
        return self.host_path(f"/proc/{pid}").is_dir()
