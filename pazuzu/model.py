"""Values shared by every layer: configuration, formation, instances, states.

Everything here is a frozen dataclass or a StrEnum; no module boundary is crossed by a bare dict.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pazuzu.defaults import DEFAULT_SOCKET_PATH
from pazuzu.unit_properties import UnitProperties

DEFAULT_STATE_PATH = Path("/var/lib/pazuzu/state.json")
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_START_TIMEOUT = 60.0
BASE_PORT = 5000


class InstanceState(StrEnum):
    """What an instance is doing, as `status` reports it."""

    STARTING = "starting"  # asked to start, not yet running
    RUNNING = "running"
    STOPPING = "stopping"  # SIGTERM sent, waiting for the cgroup to empty
    STOPPED = "stopped"  # not running, and not meant to be (formation says so)
    BACKOFF = "backoff"  # crashed; the next try is scheduled
    FAILED = "failed"  # not running, but meant to be; the next reconcile starts it


@dataclass(frozen=True, slots=True, order=True)
class InstanceId:
    """One instance: `myapp.web.2`."""

    app: str
    worker: str
    number: int  # 1-based, as Heroku and foreman number them

    def __str__(self) -> str:
        return f"{self.app}.{self.worker}.{self.number}"

    @property
    def dyno(self) -> str:
        """Heroku's name for it: `web.2`."""
        return f"{self.worker}.{self.number}"


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended, as systemd and waitpid(2) tell it."""

    signal: int | None = None  # set when killed by a signal
    status: int | None = None  # exit status otherwise
    core_dumped: bool = False
    out_of_memory: bool = False  # killed by the kernel's OOM killer (its memory limit)

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            cause = " (out of memory)" if self.out_of_memory else ""
            return f"killed by {name}{cause}" + (" (core dumped)" if self.core_dumped else "")
        if self.status is None:
            return "unknown"
        meaning = _EXIT_MEANINGS.get(self.status)
        return f"exit {self.status}" + (f": {meaning}" if meaning else "")

    @property
    def success(self) -> bool:
        return self.signal is None and self.status == 0


_EXIT_MEANINGS = {
    126: "command not executable",
    127: "command not found",
}


@dataclass(frozen=True, slots=True)
class CgroupsConfig:
    hierarchy_root: str = "pazuzu"
    subsystems: tuple[str, ...] = ("memory", "cpu", "cpuacct", "blkio")
    fs_root: Path = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits: on an application (all its instances together) or on each instance."""

    memory_bytes: int | None = None
    cpu_percent: float | None = None  # 100 is one CPU
    tasks: int | None = None  # processes and threads

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.memory_bytes, self.cpu_percent, self.tasks))

    def as_dict(self) -> dict[str, int | float | None]:
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_percent": self.cpu_percent,
            "tasks": self.tasks,
        }


@dataclass(frozen=True, slots=True)
class WorkerLogsConfig:
    """Where the libcgroup backend writes instance output (systemd uses the journal)."""

    directory: Path = Path("/var/log/pazuzu")
    max_bytes: int = 10 * 1024 * 1024  # per file, before it is rotated
    keep: int = 5  # rotated files kept per instance


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """One Procfile line, with the configuration's overrides applied."""

    name: str
    command_line: str
    num_instances: int = 1
    index: int = 0  # position in the Procfile, for foreman's PORT rule
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    environment: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()  # each instance's
    notify: bool = False  # ready when it sends READY=1 ($NOTIFY_SOCKET), not when it starts
    start_timeout: float = DEFAULT_START_TIMEOUT
    systemd: UnitProperties = ()  # unit properties of its own, over the application's


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    procfile: Path  # the Procfile itself
    workers: tuple[WorkerConfig, ...]
    user: str | None = None
    group: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)  # from .env, then config
    limits: Limits = Limits()  # all instances of the application together
    systemd: UnitProperties = ()  # unit properties of every worker's instances

    @property
    def directory(self) -> Path:
        return self.procfile.parent

    def worker(self, name: str) -> WorkerConfig | None:
        return next((w for w in self.workers if w.name == name), None)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None
    log_path: str | None = None  # None: stderr; "syslog"; or a file path
    socket_path: Path = DEFAULT_SOCKET_PATH
    socket_group: str | None = None
    state_path: Path = DEFAULT_STATE_PATH
    cgroups: CgroupsConfig = CgroupsConfig()
    worker_logs: WorkerLogsConfig = WorkerLogsConfig()
    applications: tuple[AppConfig, ...] = ()

    def application(self, name: str) -> AppConfig | None:
        return next((a for a in self.applications if a.name == name), None)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything a backend needs to run one instance."""

    id: InstanceId
    command_line: str
    directory: Path
    environment: tuple[tuple[str, str], ...]
    user: str | None = None
    group: str | None = None
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    notify: bool = False
    start_timeout: float = DEFAULT_START_TIMEOUT
    systemd: UnitProperties = ()  # passed through to the unit; ignored by libcgroup
    # Limits change live, without a restart: they are not part of the fingerprint.
    limits: Limits = Limits()
    app_limits: Limits = Limits()

    # Computed once: the planner compares it for every instance at every reconcile.
    fingerprint: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        """A short digest of what, when changed, requires a restart of the instance."""
        import hashlib  # here: the CLI imports this module, and hashlib costs it 10 ms

        definition: tuple[object, ...] = (
            self.command_line,
            str(self.directory),
            self.user or "",
            self.group or "",
            self.environment,
            self.stop_timeout,
            self.notify,
            self.start_timeout,
        )
        if self.systemd:  # only when set: fingerprints made before it existed stay the same
            definition += (self.systemd,)
        digest = hashlib.sha256(repr(definition).encode())
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:12])


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    """An instance as the backend sees it right now."""

    id: InstanceId
    state: InstanceState
    fingerprint: str | None = None
    pid: int | None = None
    started_at: float | None = None  # wall-clock seconds since the epoch
    restarts: int = 0
    last_exit: Exit | None = None
    memory_bytes: int | None = None
    cpu_seconds: float | None = None
    restart_delay: float = 0.0  # what the backend waits before respawning it by itself


@dataclass(frozen=True, slots=True)
class WorkerFormation:
    """How many instances of one worker should run, and which are stopped on purpose.

    `configured` is the `num_instances` in force when `count` was last set at run time: a
    runtime scale wins until the configured value itself changes.
    """

    count: int
    configured: int
    stopped: frozenset[int] = frozenset()  # instance numbers stopped with `pazuzu stop`

    def running_numbers(self) -> tuple[int, ...]:
        return tuple(n for n in range(1, self.count + 1) if n not in self.stopped)


Formation = Mapping[tuple[str, str], WorkerFormation]  # (app, worker) -> formation
