"""Fixtures for the libcgroup backend, run as root on this host's real cgroups.

Each test gets its own `hierarchy_root` (`pazuzu-test-<uuid>`) and temporary log and run
directories; whatever the test leaves in that hierarchy is killed and removed afterwards, pass
or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pazuzu.backends import RunEnded
from pazuzu.backends.cgexec import CgexecBackend, is_available
from pazuzu.model import CgroupsConfig, InstanceId, InstanceSpec

T = TypeVar("T")

FS_ROOT = Path("/sys/fs/cgroup")
UNIFIED = FS_ROOT / "unified"
TEST_TIMEOUT = 30.0


@dataclass
class Events:
    """What a backend reported through its callbacks."""

    exits: list[RunEnded] = field(default_factory=list)
    changes: list[InstanceId] = field(default_factory=list)


@dataclass
class Host:
    """A test's own corner of the host's cgroups, and the backends opened on it."""

    cgroups: CgroupsConfig
    log_dir: Path
    run_dir: Path
    workdir: Path
    backends: list[CgexecBackend] = field(default_factory=list)

    def backend(self, **overrides: Any) -> CgexecBackend:
        options: dict[str, Any] = {"log_dir": self.log_dir, "run_dir": self.run_dir}
        options.update(overrides)
        backend = CgexecBackend(self.cgroups, **options)
        self.backends.append(backend)
        return backend

    async def open(self, **overrides: Any) -> tuple[CgexecBackend, Events]:
        """A backend opened in the running loop, with its callbacks recorded."""
        backend = self.backend(**overrides)
        events = Events()
        await backend.open(events.changes.append, events.exits.append)
        return backend, events

    def spec(
        self,
        command_line: str,
        *,
        worker: str = "web",
        number: int = 1,
        environment: tuple[tuple[str, str], ...] = (),
        user: str | None = None,
        stop_timeout: float = 2.0,
    ) -> InstanceSpec:
        return InstanceSpec(
            id=InstanceId("app", worker, number),
            command_line=command_line,
            directory=self.workdir,
            environment=environment,
            user=user,
            stop_timeout=stop_timeout,
        )

    def run(self, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one test scenario in a fresh event loop, bounded, closing its backends."""

        async def bounded() -> None:
            try:
                async with asyncio.timeout(TEST_TIMEOUT):
                    await scenario()
            finally:
                for backend in self.backends:
                    await backend.close()

        asyncio.run(bounded())

    def hierarchy_dirs(self) -> list[Path]:
        """The test's hierarchy root in every mounted hierarchy."""
        root = self.cgroups.hierarchy_root
        mounts = [self.cgroups.fs_root]
        if self.cgroups.fs_root == FS_ROOT:
            mounts += [p for p in FS_ROOT.iterdir() if p.is_dir()]
        return [m / root for m in mounts if (m / root).is_dir()]

    def cleanup(self) -> None:
        """Kill every process left in the test's hierarchy, reap ours, remove the cgroups.

        Repeated until the directories are gone: a process forked while its cgroup was being
        emptied shows up only later.
        """
        killed: set[int] = set()
        deadline = time.monotonic() + 10.0
        while self.hierarchy_dirs() and time.monotonic() < deadline:
            cgroups = [Path(d) for top in self.hierarchy_dirs() for d, _, _ in os.walk(top)]
            for path in cgroups:
                with contextlib.suppress(OSError):
                    (path / "freezer.state").write_text("THAWED")
                with contextlib.suppress(OSError):
                    (path / "cgroup.freeze").write_text("0")
            pids = {pid for path in cgroups for pid in _procs(path)}
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed |= pids
            _reap_orphans()  # the test's backends are closed: no one else waits for these
            for path in sorted(cgroups, key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    path.rmdir()
            time.sleep(0.01)
        _reap_orphans()
        left = self.hierarchy_dirs()
        assert not left, f"could not remove the test's cgroups: {left}"


_PR_SET_CHILD_SUBREAPER = 36


def _reap_orphans() -> None:
    """Reap every exited child, orphans of the workers included (see `subreaper`)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


@pytest.fixture(scope="session", autouse=True)
def subreaper() -> Iterator[None]:
    """Adopt the orphans of double-forking workers, so their zombies do not pile up here.

    This host's PID 1 never reaps: without this each test run would leave zombies behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    _reap_orphans()


def _procs(path: Path) -> set[int]:
    try:
        return {int(pid) for pid in (path / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _require_host(cgroups: CgroupsConfig) -> None:
    reason = is_available(cgroups)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"libcgroup tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"libcgroup tests need root, cgroup-tools and runit: {reason}")


def _make_host(tmp_path: Path, cgroups: CgroupsConfig) -> Iterator[Host]:
    _require_host(cgroups)
    workdir = tmp_path / "srv"
    workdir.mkdir()
    host = Host(cgroups, tmp_path / "log", tmp_path / "run", workdir)
    try:
        yield host
    finally:
        host.cleanup()
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    """cgroup v1: the configured default subsystems under /sys/fs/cgroup."""
    cgroups = CgroupsConfig(hierarchy_root=f"pazuzu-test-{uuid.uuid4().hex[:12]}")
    yield from _make_host(tmp_path, cgroups)


@pytest.fixture
def unified_host(tmp_path: Path) -> Iterator[Host]:
    """cgroup2: the unified hierarchy, as on a host without v1 controllers."""
    if not (UNIFIED / "cgroup.controllers").is_file():
        pytest.skip(f"no cgroup2 hierarchy at {UNIFIED}")
    cgroups = CgroupsConfig(hierarchy_root=f"pazuzu-test-{uuid.uuid4().hex[:12]}", fs_root=UNIFIED)
    yield from _make_host(tmp_path, cgroups)


async def wait_for(
    condition: Callable[[], T | None], timeout: float = 5.0, what: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Like `wait_for`, for an async condition."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def procs(path: Path) -> set[int]:
    """The pids in a cgroup's `cgroup.procs` (empty when it does not exist)."""
    return _procs(path)


def alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
