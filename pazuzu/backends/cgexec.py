"""The libcgroup backend: instances in cgroups laid out as libcgroup's `cgcreate`/`cgexec` do.

For hosts without systemd. It gives the daemon the contract the systemd backend gives:

- every instance lives in `<fs_root>/<subsystem>/<hierarchy_root>/<app>/<worker>/<n>` for each
  mounted configured subsystem, plus the freezer's hierarchy (so a stop can freeze it); on a
  pure cgroup2 host the same tree sits in the unified hierarchy. The groups are the ones
  `cgcreate -g <subsystems>:/<path>` makes, and `cgget`, `cgset` and `lscgroup` work on them,
  but the backend makes them with mkdir and puts processes in them by writing `cgroup.procs`
  itself: a start costs no process beyond the worker's own (and its logger's, once);
- a new worker's shell waits on a pipe until the daemon has written its pid into every
  hierarchy's `cgroup.procs`, so nothing it runs or forks ever starts outside its cgroups,
  and a start returns with the worker already in them (nothing polls);
- instances run detached (own session, stdin `/dev/null`, no pipe to the daemon), so they outlive
  it; a new backend re-attaches by reading `cgroup.procs`, trusting a recorded main pid only
  while it is still a member of its cgroup with the same start time;
- the main process is watched with a pidfd (no polling); when it ends the rest of its cgroup is
  stopped (systemd's KillMode=control-group), the daemon is told, and the instance is respawned
  `restart_delay` later (systemd's Restart=always + RestartSec);
- output goes to runit's `svlogd` (size-bounded, rotated files), one per instance, in the child
  cgroup `<n>/log`, reading a named pipe in `run_dir` that it also holds open for writing: it
  outlives each run and the daemon, so a crash's last words and everything written while the
  daemon is down are kept, and a respawn does not wait for a logger. A stop lets it read what is
  left in the pipe, then stops it (svlogd flushes on SIGTERM).

Per-instance metadata (the spec, fingerprint, main pid and its start time, restarts, last exit)
is kept in `run_dir/<app>/<worker>/<n>.json`, mode 0600 since it holds the environment; the
logger's pipe is `<n>.fifo` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import grp
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pazuzu.backends import ChangeCallback, Details, ExitCallback, LogSource, RunEnded
from pazuzu.errors import BackendError
from pazuzu.model import (
    CgroupsConfig,
    Exit,
    InstanceId,
    InstanceSpec,
    InstanceState,
    Limits,
    ObservedInstance,
)
from pazuzu.unit_properties import UnitProperties

log = logging.getLogger(__name__)

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_CGROUP = "log"  # child cgroup of an instance that holds its logger
_FREEZER = "freezer"
_PIDS = "pids"
_CFS_PERIOD_US = 100_000
# cgroup2 names of the v1 controllers that were merged or renamed.
_V2_CONTROLLER = {"cpuacct": "cpu", "blkio": "io"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_METADATA_VERSION = 1

# Bounds on the waits of a stop or a respawn; none of them runs while idle.
_FREEZE_WAIT = 0.5  # until the freezer says FROZEN
_KILL_WAIT = 5.0  # after SIGKILL, until the cgroup is empty
_LOGGER_WAIT = 2.0  # at a stop, until the logger has read what is left in its FIFO
# A new worker's shell reads "go" on its stdin once it is in its cgroups, then runs its
# command with stdin /dev/null; it exits unrun if the daemon goes away first (end of file).
_GATE = 'read -r gate && [ "$gate" = go ] && exec "$@" </dev/null'


def is_available(cgroups: CgroupsConfig) -> str | None:
    """None when this backend can run here, else one sentence saying why not."""
    if os.geteuid() != 0:
        return "the cgexec backend must run as root: it creates cgroups and switches users"
    layout = _Layout.discover(cgroups)
    if layout is None:
        return (
            f"no cgroup filesystem under {cgroups.fs_root}: none of the subsystems "
            f"{', '.join(cgroups.subsystems) or '(none)'} nor the freezer is mounted there, "
            "and it is not a cgroup2 mount (set cgroups.fs_root to where cgroups are mounted)"
        )
    if shutil.which("svlogd") is None:
        return "svlogd not found: install runit (its svlogd writes the instances' log files)"
    return None


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    """One mounted cgroup hierarchy that instances join."""

    mount: Path
    subsystems: tuple[str, ...]  # as libcgroup names them; empty on cgroup2


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the cgroups of this host are, and which of them an instance joins."""

    fs_root: Path
    unified: bool  # a pure cgroup2 host: one hierarchy at fs_root
    hierarchies: tuple[_Hierarchy, ...]
    skipped: tuple[str, ...]  # configured subsystems that are not mounted
    freezer: Path | None  # the hierarchy whose freezer a stop uses
    memory: Path | None
    cpuacct: Path | None
    cpu: Path | None = None  # CPU quotas (limits.cpu)
    pids: Path | None = None  # task limits (limits.tasks)
    controllers: tuple[str, ...] = ()  # cgroup2 controllers to enable down the tree

    @staticmethod
    def discover(cgroups: CgroupsConfig) -> _Layout | None:
        root = cgroups.fs_root
        if (root / "cgroup.controllers").is_file():
            try:
                available = (root / "cgroup.controllers").read_text().split()
            except OSError:
                available = []
            wanted = {_V2_CONTROLLER.get(s, s) for s in cgroups.subsystems} | {_PIDS}
            return _Layout(
                fs_root=root,
                unified=True,
                hierarchies=(_Hierarchy(root, ()),),
                skipped=tuple(sorted(wanted - set(available))),
                freezer=root,
                memory=root if "memory" in available else None,
                cpuacct=root,  # cpu.stat's usage_usec exists without the cpu controller
                cpu=root if "cpu" in available and "cpu" in wanted else None,
                pids=root if _PIDS in available else None,
                controllers=tuple(c for c in available if c in wanted),
            )
        mounts: dict[Path, list[str]] = {}
        skipped = []
        # The freezer (for stops) and pids (for limits.tasks) are joined whenever mounted.
        for name in dict.fromkeys((*cgroups.subsystems, _FREEZER, _PIDS)):
            mount = root / name
            if not (mount / "cgroup.procs").is_file():
                if name not in (_FREEZER, _PIDS):
                    skipped.append(name)
                continue
            # Co-mounted controllers (cpu,cpuacct) share one directory: join it once.
            mounts.setdefault(mount.resolve(), []).append(name)
        if not mounts:
            return None
        mounted = {name for names in mounts.values() for name in names}
        return _Layout(
            fs_root=root,
            unified=False,
            hierarchies=tuple(_Hierarchy(m, tuple(n)) for m, n in mounts.items()),
            skipped=tuple(skipped),
            freezer=root / _FREEZER if _FREEZER in mounted else None,
            memory=root / "memory" if "memory" in mounted else None,
            cpuacct=root / "cpuacct" if "cpuacct" in mounted else None,
            cpu=root / "cpu" if "cpu" in mounted else None,
            pids=root / _PIDS if _PIDS in mounted else None,
        )


class _Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"  # the main process is alive
    EXITING = "exiting"  # the main process ended; the rest of its cgroup is being stopped
    BACKOFF = "backoff"  # waiting `restart_delay` before the respawn
    STOPPING = "stopping"


_STATE = {
    _Phase.STARTING: InstanceState.STARTING,
    _Phase.RUNNING: InstanceState.RUNNING,
    _Phase.EXITING: InstanceState.BACKOFF,
    _Phase.BACKOFF: InstanceState.BACKOFF,
    _Phase.STOPPING: InstanceState.STOPPING,
}


@dataclass(slots=True, eq=False)
class _Instance:
    """What the backend knows of one instance; saved (but for the live handles) as metadata."""

    id: InstanceId
    spec: InstanceSpec | None  # None for an adopted instance without metadata: never respawned
    restart_delay: float = 0.0
    phase: _Phase = _Phase.STARTING
    main_pid: int | None = None
    main_start: int | None = None  # /proc/<pid>/stat start time, in clock ticks since boot
    started_at: float | None = None  # wall clock
    restarts: int = 0
    last_exit: Exit | None = None
    fingerprint: str | None = None
    child: subprocess.Popen[bytes] | None = None  # the main process, when it is our child
    logger: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    task: asyncio.Task[None] | None = None  # handling an exit, then the respawn
    ready: asyncio.Future[None] | None = None  # a notify worker's READY=1, while awaited
    oom_kills: int = 0  # the cgroup's OOM-kill count when the run began
    notify_socket: socket.socket | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # respawn now


class CgexecBackend:
    """Instances in libcgroup cgroups under `hierarchy_root`, logging through svlogd."""

    name = "cgexec"

    def __init__(
        self,
        cgroups: CgroupsConfig,
        *,
        log_dir: Path = Path("/var/log/pazuzu"),
        run_dir: Path = Path("/run/pazuzu"),
        log_max_bytes: int = 10 * 1024 * 1024,
        log_keep: int = 5,
    ) -> None:
        self._cgroups = cgroups
        self._log_dir = log_dir
        self._run_dir = run_dir
        self._log_max_bytes = log_max_bytes
        self._log_keep = log_keep
        self._layout: _Layout | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_change: ChangeCallback = lambda _instance: None
        self._on_exit: ExitCallback = lambda _ended: None
        self._instances: dict[InstanceId, _Instance] = {}
        self._locks: dict[InstanceId, asyncio.Lock] = {}
        self._tree_lock = asyncio.Lock()  # creating and removing directories of the tree
        self._tools: dict[str, str] = {}
        # Workers told that their `systemd:` properties do not apply here, with those properties.
        self._warned: dict[tuple[str, str], UnitProperties] = {}

    # -- connection ------------------------------------------------------------------------

    async def open(self, on_change: ChangeCallback, on_exit: ExitCallback) -> None:
        reason = is_available(self._cgroups)
        if reason is not None:
            raise BackendError(f"the cgexec backend cannot run here: {reason}")
        layout = _Layout.discover(self._cgroups)
        assert layout is not None  # is_available() checked it
        self._layout = layout
        self._loop = asyncio.get_running_loop()
        self._on_change = on_change
        self._on_exit = on_exit
        for tool in ("svlogd", "setpriv"):
            self._tools[tool] = shutil.which(tool) or tool
        if layout.skipped:
            log.info(
                "cgroup subsystems not mounted under %s, skipped: %s",
                layout.fs_root,
                ", ".join(layout.skipped),
            )
        for instance in sorted(self._known_instances()):
            try:
                await self._adopt(instance)
            except Exception:
                log.exception("could not re-attach to %s", instance)

    async def close(self) -> None:
        for record in list(self._instances.values()):
            self._unwatch(record)
            if record.task is not None:
                record.task.cancel()
                with contextlib.suppress(BaseException):
                    await record.task
        self._instances.clear()

    # -- queries ---------------------------------------------------------------------------

    async def list_instances(
        self, *, details: Details = False
    ) -> dict[InstanceId, ObservedInstance]:
        found: dict[InstanceId, ObservedInstance] = {}
        for instance, record in sorted(self._instances.items()):
            state = _STATE[record.phase]
            if record.spec is None and state is InstanceState.BACKOFF:
                state = InstanceState.STOPPING  # nothing to respawn it from: it goes away
            observed = ObservedInstance(
                id=instance,
                state=state,
                fingerprint=record.fingerprint,
                restart_delay=record.restart_delay,
            )
            if details is True or (details and details(instance)):
                running = record.phase is _Phase.RUNNING
                observed = ObservedInstance(
                    id=instance,
                    state=state,
                    fingerprint=record.fingerprint,
                    pid=record.main_pid if running else None,
                    started_at=record.started_at if running else None,
                    restarts=record.restarts,
                    last_exit=record.last_exit,
                    memory_bytes=self._memory_bytes(instance),
                    cpu_seconds=self._cpu_seconds(instance),
                    restart_delay=record.restart_delay,
                )
            found[instance] = observed
        return found

    def log_source(self, instances: list[InstanceId]) -> LogSource:
        # An instance that ever ran has a log directory; svlogd makes `current` soon after.
        directories = (self.log_directory(i) for i in instances)
        return LogSource(files=tuple(str(d / "current") for d in directories if d.is_dir()))

    def log_directory(self, instance: InstanceId) -> Path:
        """svlogd's directory of an instance: `current`, rotated `@….s` files, `config`."""
        return self._log_dir / instance.app / instance.dyno

    def fifo_path(self, instance: InstanceId) -> Path:
        """The named pipe from an instance's processes to its logger."""
        return self._run_dir / instance.app / instance.worker / f"{instance.number}.fifo"

    def metadata_path(self, instance: InstanceId) -> Path:
        return self._run_dir / instance.app / instance.worker / f"{instance.number}.json"

    def cgroup_path(self, instance: InstanceId) -> str:
        """The instance's cgroup, relative to each hierarchy's mount point."""
        root = self._cgroups.hierarchy_root.strip("/")
        return f"{root}/{instance.app}/{instance.worker}/{instance.number}"

    def cgroup_dirs(self, instance: InstanceId) -> list[Path]:
        """The instance's cgroup directory in every hierarchy it joins."""
        return [h.mount / self.cgroup_path(instance) for h in self._require_layout().hierarchies]

    # -- actions ---------------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, restart_delay: float) -> None:
        self._warn_unit_properties(spec)
        async with self._lock(spec.id):
            record = self._instances.get(spec.id)
            if record is not None and record.phase in (_Phase.EXITING, _Phase.BACKOFF):
                # Crashed and waiting: run it now, with what we were given.
                record.spec = spec
                record.fingerprint = spec.fingerprint
                record.restart_delay = restart_delay
                record.wake.set()
                if record.task is not None:
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.shield(record.task)
                return
            if record is not None:
                log.info("%s is already running; not starting a duplicate", spec.id)
                return
            record = _Instance(
                id=spec.id,
                spec=spec,
                restart_delay=restart_delay,
                fingerprint=spec.fingerprint,
            )
            self._instances[spec.id] = record
            try:
                if spec.notify:
                    self._listen_for_ready(record)
                await self._launch(record)
            except BaseException:
                self._close_notify(record)
                self._instances.pop(spec.id, None)
                if record.main_pid is None:  # nothing runs: leave nothing behind
                    await self._discard(spec.id, record)
                raise
        if record.ready is not None:
            await self._await_ready(record, spec)
        log.info("started %s (pid %s)", spec.id, record.main_pid)

    def _warn_unit_properties(self, spec: InstanceSpec) -> None:
        """Say once per worker (and again if they change) that `systemd:` does not apply."""
        worker = (spec.id.app, spec.id.worker)
        if not spec.systemd or self._warned.get(worker) == spec.systemd:
            return
        self._warned[worker] = spec.systemd
        log.warning(
            "%s.%s: systemd properties do not apply with the libcgroup backend; its instances "
            "run without %s",
            spec.id.app,
            spec.id.worker,
            ", ".join(f"{name}=" for name, _ in spec.systemd),
        )

    def notify_path(self, instance: InstanceId) -> Path:
        return self._run_dir / "notify" / f"{instance}.socket"

    def _listen_for_ready(self, record: _Instance) -> None:
        """A $NOTIFY_SOCKET for the worker's READY=1, as systemd serves for Type=notify."""
        assert self._loop is not None
        assert record.spec is not None
        path = self.notify_path(record.id)
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        if record.spec.user:  # only the worker's own user may say it is ready
            with contextlib.suppress(KeyError):
                os.chown(path, pwd.getpwnam(record.spec.user).pw_uid, -1)
        ready: asyncio.Future[None] = self._loop.create_future()
        record.ready, record.notify_socket = ready, sock

        def received() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while True:
                    message = sock.recv(4096)
                    if b"READY=1" in message.split(b"\n") and not ready.done():
                        ready.set_result(None)

        self._loop.add_reader(sock.fileno(), received)

    async def _await_ready(self, record: _Instance, spec: InstanceSpec) -> None:
        """Wait for READY=1; a worker that exits first or takes too long failed to start."""
        assert record.ready is not None
        try:
            async with asyncio.timeout(spec.start_timeout):
                await record.ready
        except TimeoutError:
            await self.stop(spec.id, spec.stop_timeout)
            raise BackendError(
                f"{spec.id} sent no READY=1 within {spec.start_timeout:g} s",
                hint="a notify worker must send READY=1 to $NOTIFY_SOCKET (sd_notify(3))",
            ) from None
        finally:
            self._close_notify(record)

    def _close_notify(self, record: _Instance) -> None:
        if record.notify_socket is not None:
            if self._loop is not None:
                self._loop.remove_reader(record.notify_socket.fileno())
            record.notify_socket.close()
            record.notify_socket = None
            self.notify_path(record.id).unlink(missing_ok=True)
        record.ready = None

    async def stop(self, instance: InstanceId, timeout: float) -> None:
        async with self._lock(instance):
            record = self._instances.get(instance)
            rel = self.cgroup_path(instance)
            exists = any(path.exists() for path in self._all_dirs(rel))
            if record is None and not exists and not self.metadata_path(instance).exists():
                return
            if record is not None:
                record.phase = _Phase.STOPPING
                self._unwatch(record)
                if record.task is not None:
                    record.task.cancel()
                    with contextlib.suppress(BaseException):
                        await record.task
                    record.task = None
                self._on_change(instance)
            try:
                await self._terminate(rel, timeout, str(instance))
            finally:
                if record is not None:
                    _reap(record.child)
                    self._instances.pop(instance, None)
                await self._discard(instance, record)
        log.info("stopped %s", instance)
        self._on_change(instance)

    # -- running an instance ---------------------------------------------------------------

    async def _launch(self, record: _Instance) -> None:
        """Start one run of an instance: its logger if it has none running, then its command."""
        spec = record.spec
        assert spec is not None
        credentials = self._credentials(spec)
        rel = self.cgroup_path(spec.id)
        fresh = await self._ensure_cgroups(rel)
        # Configured limits only: without any, limits set with cgset are left alone.
        if spec.app_limits:
            self._write_limits(self._app_path(spec.id.app), spec.app_limits)
        if spec.limits:
            self._write_limits(rel, spec.limits)
        environment = dict(spec.environment)
        environment.setdefault("PATH", SANE_PATH)
        if record.notify_socket is not None:
            environment["NOTIFY_SOCKET"] = str(self.notify_path(spec.id))
        try:
            output = await self._open_log_pipe(record)
        except BackendError as exc:
            # The worker matters more than its output: run it, say so, try again next start.
            log.warning(
                "%s: output discarded, its log cannot be written: %s (fix worker_logs.directory;"
                " the next start or respawn tries again)",
                spec.id,
                exc,
            )
            output = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        gate, release = os.pipe2(os.O_CLOEXEC)
        try:
            child = subprocess.Popen(
                ["/bin/sh", "-c", _GATE, "sh", *credentials, "/bin/sh", "-c", spec.command_line],
                stdin=gate,
                stdout=output,
                stderr=output,
                cwd=spec.directory,
                env=environment,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(release)
            raise BackendError(
                f"cannot start {spec.id}: {exc}",
                hint=f"check that {spec.directory} exists and is a directory",
            ) from exc
        finally:
            os.close(gate)
            os.close(output)
        try:
            self._attach(child.pid, rel)
        except BackendError:
            os.close(release)  # its shell reads end of file and exits without running anything
            _reap(child)
            raise
        os.write(release, b"go\n")
        os.close(release)
        record.child = child
        record.main_pid = child.pid
        record.main_start = _start_ticks(child.pid)
        record.started_at = time.time()
        record.oom_kills = 0 if fresh else self._oom_kills(rel)
        record.phase = _Phase.RUNNING
        record.wake.clear()
        self._save_metadata(record)
        self._watch(record)

    async def _open_log_pipe(self, record: _Instance) -> int:
        """A write end of the instance's log FIFO, starting its logger when none reads it.

        The logger outlives each run (and the daemon): it holds the FIFO open for writing
        itself, so it never sees end-of-file between runs, and a crash's last words reach it.
        """
        fifo = self.fifo_path(record.id)
        for _attempt in range(2):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                fifo.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.mkfifo(fifo, 0o600)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader, i.e. no logger
                    raise BackendError(f"cannot open {fifo} for {record.id}: {exc}") from exc
            else:
                os.set_blocking(fd, True)  # workers expect a blocking stdout
                return fd
            await self._start_logger(record, fifo)
        raise BackendError(f"the logger of {record.id} does not read {fifo}")

    async def _start_logger(self, record: _Instance, fifo: Path) -> None:
        logger_rel = f"{self.cgroup_path(record.id)}/{LOG_CGROUP}"
        log_dir = self._prepare_log_dir(record.id)
        _reap(record.logger)
        stdin = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        try:
            record.logger = subprocess.Popen(
                self._logger_argv(log_dir),
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env={"PATH": SANE_PATH},
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start the logger of {record.id}: {exc}") from exc
        finally:
            os.close(stdin)
        # svlogd never forks, so it can join its cgroup after it started.
        try:
            self._attach(record.logger.pid, logger_rel)
        except BackendError:
            _reap(record.logger)
            record.logger = None
            raise

    def _logger_argv(self, log_dir: Path) -> list[str]:
        # -tt: a sortable UTC timestamp per line; -b: fewer reads when a worker floods.
        return [self._tools["svlogd"], "-tt", "-b", "16384", str(log_dir)]

    def _credentials(self, spec: InstanceSpec) -> list[str]:
        """`setpriv` arguments that run the command as the spec's user and group."""
        if not spec.user and not spec.group:
            return []
        argv = [self._tools["setpriv"]]
        gid: int | None = None
        if spec.user:
            try:
                entry = pwd.getpwnam(spec.user)
            except KeyError:
                raise BackendError(
                    f"cannot start {spec.id}: no user {spec.user!r} on this host",
                    hint="create the user, or change the application's `user`",
                ) from None
            argv += ["--reuid", str(entry.pw_uid)]
            gid = entry.pw_gid
        if spec.group:
            try:
                gid = grp.getgrnam(spec.group).gr_gid
            except KeyError:
                raise BackendError(
                    f"cannot start {spec.id}: no group {spec.group!r} on this host",
                    hint="create the group, or change the application's `group`",
                ) from None
        argv += ["--regid", str(gid)]
        argv.append("--init-groups" if spec.user else "--clear-groups")
        return argv

    def _attach(self, pid: int, rel: str) -> None:
        """Move process `pid` into cgroup `rel` of every hierarchy, as `cgexec` would."""
        data = b"%d\n" % pid
        for path in self._all_dirs(rel):
            try:
                fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise BackendError(
                    f"cannot put pid {pid} into the cgroup {path}: {exc}",
                    hint="check that the cgroup hierarchies under cgroups.fs_root are writable",
                ) from exc

    # -- watching ------------------------------------------------------------------------

    def _watch(self, record: _Instance) -> None:
        assert self._loop is not None
        assert record.main_pid is not None
        try:
            pidfd = os.pidfd_open(record.main_pid)
        except ProcessLookupError:
            self._loop.call_soon(self._main_exited, record)
            return
        record.pidfd = pidfd
        self._loop.add_reader(pidfd, self._main_exited, record)

    def _unwatch(self, record: _Instance) -> None:
        if record.pidfd is not None and self._loop is not None:
            self._loop.remove_reader(record.pidfd)
            os.close(record.pidfd)
            record.pidfd = None

    def _main_exited(self, record: _Instance) -> None:
        if record.ready is not None and not record.ready.done():
            record.ready.set_exception(
                BackendError(
                    f"{record.id} exited before it sent READY=1 ({_exit_of(record.child)})"
                )
            )
        if record.phase is not _Phase.RUNNING or self._instances.get(record.id) is not record:
            return
        self._unwatch(record)
        ended = _exit_of(record.child)
        if ended.signal == signal.SIGKILL and self._oom_kills(self.cgroup_path(record.id)) > (
            record.oom_kills
        ):
            ended = replace(ended, out_of_memory=True)
        record.phase = _Phase.EXITING
        assert self._loop is not None
        record.task = self._loop.create_task(self._after_exit(record, ended))

    async def _after_exit(self, record: _Instance, ended: Exit) -> None:
        """Stop what is left of the run, report it, and respawn after `restart_delay`."""
        instance = record.id
        run_seconds = max(0.0, time.time() - record.started_at) if record.started_at else 0.0
        timeout = record.spec.stop_timeout if record.spec else 10.0
        rel = self.cgroup_path(instance)
        await self._terminate(rel, timeout, str(instance))
        _reap(record.child)
        record.child = None
        record.last_exit = ended
        record.main_pid = record.main_start = None
        if record.spec is None:
            log.info("%s (adopted, no metadata) exited (%s); not respawned", instance, ended)
            self._instances.pop(instance, None)
            await self._discard(record.id, record)
            self._on_exit(RunEnded(instance, ended, run_seconds))
            self._on_change(instance)
            return
        record.phase = _Phase.BACKOFF
        self._save_metadata(record)
        log.info(
            "%s exited (%s) after %.1f s; respawn in %.1f s",
            instance,
            ended,
            run_seconds,
            record.restart_delay,
        )
        self._on_exit(RunEnded(instance, ended, run_seconds))
        self._on_change(instance)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(record.restart_delay):
                await record.wake.wait()
        record.restarts += 1
        try:
            await self._launch(record)
        except Exception as exc:
            # Nothing runs; forget it, so the daemon's next reconcile starts it again.
            log.error("could not respawn %s: %s", instance, exc)
            self._instances.pop(instance, None)
            await self._discard(instance, record)
        else:
            log.info("respawned %s (pid %s)", instance, record.main_pid)
        finally:
            record.task = None
        self._on_change(instance)

    # -- re-attach -----------------------------------------------------------------------

    def _known_instances(self) -> set[InstanceId]:
        """Every instance with a cgroup under the hierarchy root, or with metadata."""
        found: set[InstanceId] = set()
        root = self._cgroups.hierarchy_root.strip("/")
        for hierarchy in self._require_layout().hierarchies:
            for path in (hierarchy.mount / root).glob("*/*/*"):
                instance = _instance_of(path.parent.parent.name, path.parent.name, path.name)
                if instance is not None and path.is_dir():
                    found.add(instance)
        for path in self._run_dir.glob("*/*/*.json"):
            instance = _instance_of(path.parent.parent.name, path.parent.name, path.stem)
            if instance is not None:
                found.add(instance)
        return found

    async def _adopt(self, instance: InstanceId) -> None:
        rel = self.cgroup_path(instance)
        members = self._members(rel)
        saved = self._load_metadata(instance)
        if not members:
            log.info("%s ended while no pazuzud watched it; cleaning up", instance)
            await self._discard(instance, None)
            return
        record = saved or _Instance(id=instance, spec=None)
        trusted = (
            record.main_pid in members
            and record.main_start is not None
            and _start_ticks(record.main_pid) == record.main_start
        )
        if not trusted:
            # The cgroup is the truth: watch its oldest member.
            oldest = min(members, key=lambda pid: (_start_ticks(pid) or 2**63, pid))
            if record.main_pid is not None:
                log.warning(
                    "%s: recorded main pid %d is no longer its main process; watching pid %d",
                    instance,
                    record.main_pid,
                    oldest,
                )
            record.main_pid = oldest
            record.main_start = _start_ticks(oldest)
            record.started_at = _started_at(oldest)
        record.phase = _Phase.RUNNING
        self._instances[instance] = record
        if record.spec is not None and not trusted:
            self._save_metadata(record)
        self._watch(record)
        log.info("re-attached to %s (pid %d)", instance, record.main_pid)

    # -- metadata ------------------------------------------------------------------------

    def _save_metadata(self, record: _Instance) -> None:
        spec = record.spec
        if spec is None:
            return
        data: dict[str, Any] = {
            "version": _METADATA_VERSION,
            "spec": {
                "app": spec.id.app,
                "worker": spec.id.worker,
                "number": spec.id.number,
                "command_line": spec.command_line,
                "directory": str(spec.directory),
                "environment": [list(pair) for pair in spec.environment],
                "user": spec.user,
                "group": spec.group,
                "stop_timeout": spec.stop_timeout,
            },
            "fingerprint": record.fingerprint,
            "restart_delay": record.restart_delay,
            "main_pid": record.main_pid,
            "main_start": record.main_start,
            "started_at": record.started_at,
            "restarts": record.restarts,
            "last_exit": (
                None
                if record.last_exit is None
                else {
                    "signal": record.last_exit.signal,
                    "status": record.last_exit.status,
                    "core_dumped": record.last_exit.core_dumped,
                }
            ),
        }
        path = self.metadata_path(record.id)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(data).encode())  # dumps: json's C encoder, dump is not
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError as exc:
            log.error("cannot save the metadata of %s in %s: %s", record.id, path, exc)

    def _load_metadata(self, instance: InstanceId) -> _Instance | None:
        path = self.metadata_path(instance)
        try:
            data = json.loads(path.read_text())
            raw = data["spec"]
            spec = InstanceSpec(
                id=InstanceId(raw["app"], raw["worker"], int(raw["number"])),
                command_line=str(raw["command_line"]),
                directory=Path(raw["directory"]),
                environment=tuple((str(k), str(v)) for k, v in raw["environment"]),
                user=raw["user"],
                group=raw["group"],
                stop_timeout=float(raw["stop_timeout"]),
            )
            last = data.get("last_exit")
            return _Instance(
                id=instance,
                spec=spec,
                restart_delay=float(data["restart_delay"]),
                main_pid=data.get("main_pid"),
                main_start=data.get("main_start"),
                started_at=data.get("started_at"),
                restarts=int(data.get("restarts", 0)),
                last_exit=None if last is None else Exit(**last),
                fingerprint=data.get("fingerprint"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable metadata of %s in %s: %s", instance, path, exc)
            return None

    def _remove_metadata(self, instance: InstanceId) -> None:
        path = self.metadata_path(instance)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _remove_empty(path.parent, path.parent.parent)

    # -- cgroups -------------------------------------------------------------------------

    def _require_layout(self) -> _Layout:
        if self._layout is None:
            layout = _Layout.discover(self._cgroups)
            if layout is None:
                raise BackendError(f"no cgroup filesystem under {self._cgroups.fs_root}")
            self._layout = layout
        return self._layout

    def _all_dirs(self, rel: str) -> Iterator[Path]:
        for hierarchy in self._require_layout().hierarchies:
            yield hierarchy.mount / rel

    def _members(self, rel: str) -> set[int]:
        """Every process in cgroup `rel` (not in its children), over all hierarchies."""
        pids: set[int] = set()
        for path in self._all_dirs(rel):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in (path / "cgroup.procs").read_text().split())
        return pids

    async def _ensure_cgroups(self, rel: str) -> bool:
        """Make the cgroups of `rel` and its logger where missing; True if they were all new.

        Existing ones are thawed: a stop interrupted by a crash of the daemon may have left
        them frozen. New ones start thawed, with no OOM kill counted.
        """
        layout = self._require_layout()
        logger_rel = f"{rel}/{LOG_CGROUP}"
        async with self._tree_lock:
            if all(path.is_dir() for path in self._all_dirs(logger_rel)):
                self._set_frozen(rel, False)
                return False
            if layout.unified:
                self._make_unified(rel)
            else:
                self._make_v1(rel)
            return True

    def _make_v1(self, rel: str) -> None:
        """Make cgroup `rel`, its parents and its logger's, in every hierarchy (as cgcreate)."""
        for hierarchy in self._require_layout().hierarchies:
            cpuset = "cpuset" in hierarchy.subsystems
            try:
                _make_group(str(hierarchy.mount), rel, cpuset=cpuset)
                _make_group(str(hierarchy.mount), f"{rel}/{LOG_CGROUP}", cpuset=cpuset)
            except OSError as exc:
                raise BackendError(
                    f"cannot create the cgroup {hierarchy.mount / rel}: {exc}",
                    hint=f"check that the cgroup hierarchies are mounted under "
                    f"{self._require_layout().fs_root}",
                ) from exc

    def _make_unified(self, rel: str) -> None:
        layout = self._require_layout()
        path = layout.fs_root
        parts = rel.split("/")
        try:
            for depth, part in enumerate([*parts, LOG_CGROUP]):
                # Controllers flow down to the instance's cgroup, not below: an instance has
                # processes of its own, and cgroup2 forbids them beside enabled children.
                if depth < len(parts):
                    _enable_controllers(path, layout.controllers)
                path = path / part
                path.mkdir(exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the cgroup {path}: {exc}") from exc

    async def _remove_cgroups(self, rel: str) -> None:
        """Remove an instance's cgroups, deepest first, and its worker and app dirs if empty."""
        root = self._cgroups.hierarchy_root.strip("/")
        async with self._tree_lock:
            for hierarchy in self._require_layout().hierarchies:
                instance_dir = hierarchy.mount / rel
                for path in (instance_dir / LOG_CGROUP, instance_dir):
                    try:
                        path.rmdir()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        log.warning("cannot remove the cgroup %s: %s", path, exc)
                _remove_empty(instance_dir.parent, hierarchy.mount / root)

    def _freezer_file(self, rel: str) -> tuple[Path, str, str] | None:
        """The freeze control of `rel`: file, frozen value, thawed value."""
        layout = self._require_layout()
        if layout.freezer is None:
            return None
        if layout.unified:
            return layout.freezer / rel / "cgroup.freeze", "1", "0"
        return layout.freezer / rel / "freezer.state", "FROZEN", "THAWED"

    def _set_frozen(self, rel: str, frozen: bool) -> bool:
        control = self._freezer_file(rel)
        if control is None:
            return False
        path, on, off = control
        try:
            if not frozen and path.read_text().strip() in (off, ""):
                return True
            path.write_text(on if frozen else off)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot %s %s: %s", "freeze" if frozen else "thaw", path, exc)
            return False
        return True

    async def _freeze(self, rel: str) -> bool:
        """Freeze `rel`, so no member forks while we signal them; False if it cannot."""
        if not self._set_frozen(rel, True):
            return False
        layout = self._require_layout()
        deadline = time.monotonic() + _FREEZE_WAIT
        while time.monotonic() < deadline:
            try:
                if layout.unified:
                    events = (layout.fs_root / rel / "cgroup.events").read_text()
                    if "frozen 1" in events:
                        return True
                else:
                    assert layout.freezer is not None
                    state = (layout.freezer / rel / "freezer.state").read_text().strip()
                    if state == "FROZEN":
                        return True
            except OSError:
                return False
            await asyncio.sleep(0.002)
        return True  # still freezing: signal anyway, the later rounds catch stragglers

    async def _signal_all(self, rel: str, signum: int) -> int:
        """Send `signum` to every member of `rel`, frozen meanwhile; how many were there."""
        frozen = await self._freeze(rel)
        try:
            members = self._members(rel)
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        finally:
            if frozen:
                self._set_frozen(rel, False)
        return len(members)

    async def _terminate(self, rel: str, timeout: float, name: str) -> None:
        """SIGTERM every process of `rel`; SIGKILL whatever is left after `timeout`."""
        if not self._members(rel):
            return
        await self._signal_all(rel, signal.SIGTERM)
        if await self._wait_empty(rel, timeout):
            return
        deadline = time.monotonic() + _KILL_WAIT
        while time.monotonic() < deadline:
            left = await self._signal_all(rel, signal.SIGKILL)
            if left:
                log.warning("%s: %d processes still there after SIGTERM: SIGKILL", name, left)
            if await self._wait_empty(rel, max(0.0, deadline - time.monotonic())):
                return
        log.error("%s: processes survive SIGKILL in %s: %s", name, rel, sorted(self._members(rel)))

    async def _discard(self, instance: InstanceId, record: _Instance | None) -> None:
        """After its last run: stop the logger, remove cgroups, FIFO and metadata."""
        await self._stop_logger(instance)
        if record is not None:
            _reap(record.logger)
            record.logger = None
        await self._remove_cgroups(self.cgroup_path(instance))
        with contextlib.suppress(FileNotFoundError):
            self.fifo_path(instance).unlink()
        self._remove_metadata(instance)

    async def _stop_logger(self, instance: InstanceId) -> None:
        """Let the logger read what is left in its FIFO, then stop it (it flushes on SIGTERM)."""
        logger_rel = f"{self.cgroup_path(instance)}/{LOG_CGROUP}"
        if not self._members(logger_rel):
            return
        deadline = time.monotonic() + _LOGGER_WAIT
        with contextlib.suppress(OSError):
            # A reader of our own, only to ask how much is still unread.
            probe = os.open(self.fifo_path(instance), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                while _unread(probe) and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            finally:
                os.close(probe)
        await self._terminate(logger_rel, 2.0, f"{instance} logger")

    async def _wait_empty(self, rel: str, timeout: float) -> bool:
        """Wait until cgroup `rel` has no process, woken by the pidfds of its members."""
        assert self._loop is not None
        deadline = time.monotonic() + timeout
        while True:
            members = self._members(rel)
            if not members:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fds = []
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    fds.append(os.pidfd_open(pid))
            if not fds:
                continue  # they all ended between the two reads
            try:
                await _any_readable(self._loop, fds, remaining)
            finally:
                for fd in fds:
                    os.close(fd)

    # -- logs and accounting -------------------------------------------------------------

    def _prepare_log_dir(self, instance: InstanceId) -> Path:
        path = self.log_directory(instance)
        try:
            path.mkdir(mode=0o750, parents=True, exist_ok=True)
            config = path / "config"
            text = f"s{self._log_max_bytes}\nn{self._log_keep}\n"
            if not config.exists() or config.read_text() != text:
                config.write_text(text)
            if not os.access(path, os.W_OK | os.X_OK):  # e.g. a read-only mount
                raise OSError(errno.EACCES, "not writable", str(path))
        except OSError as exc:
            raise BackendError(
                f"cannot prepare the log directory {path} of {instance}: {exc}"
            ) from exc
        return path

    def _memory_bytes(self, instance: InstanceId) -> int | None:
        layout = self._require_layout()
        if layout.memory is None:
            return None
        name = "memory.current" if layout.unified else "memory.usage_in_bytes"
        try:
            return int((layout.memory / self.cgroup_path(instance) / name).read_text())
        except (OSError, ValueError):
            return None

    def _cpu_seconds(self, instance: InstanceId) -> float | None:
        layout = self._require_layout()
        if layout.cpuacct is None:
            return None
        path = layout.cpuacct / self.cgroup_path(instance)
        try:
            if layout.unified:
                for line in (path / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
                return None
            return int((path / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    async def set_limits(
        self, app: str, app_limits: Limits, instances: Mapping[InstanceId, Limits]
    ) -> None:
        app_path = self._app_path(app)
        if any(path.is_dir() for path in self._all_dirs(app_path)):
            self._write_limits(app_path, app_limits)
        for instance, limits in instances.items():
            rel = self.cgroup_path(instance)
            if any(path.is_dir() for path in self._all_dirs(rel)):
                self._write_limits(rel, limits)

    def _app_path(self, app: str) -> str:
        return f"{self._cgroups.hierarchy_root.strip('/')}/{app}"

    def _write_limits(self, rel: str, limits: Limits) -> None:
        """Write memory, CPU quota and task limits to the cgroup files of `rel`."""
        layout = self._require_layout()
        memory, cpu, tasks = limits.memory_bytes, limits.cpu_percent, limits.tasks
        quota = None if cpu is None else int(cpu * _CFS_PERIOD_US / 100)
        writes: list[tuple[Path | None, str, str]]
        if layout.unified:
            writes = [
                (layout.memory, "memory.max", "max" if memory is None else str(memory)),
                (layout.cpu, "cpu.max", f"{'max' if quota is None else quota} {_CFS_PERIOD_US}"),
                (layout.pids, "pids.max", "max" if tasks is None else str(tasks)),
            ]
        else:
            writes = [
                (layout.memory, "memory.limit_in_bytes", "-1" if memory is None else str(memory)),
                (layout.cpu, "cpu.cfs_period_us", str(_CFS_PERIOD_US)),
                (layout.cpu, "cpu.cfs_quota_us", "-1" if quota is None else str(quota)),
                (layout.pids, "pids.max", "max" if tasks is None else str(tasks)),
            ]
        for mount, name, value in writes:
            if mount is None:
                continue
            try:
                (mount / rel / name).write_text(value)
            except OSError as exc:
                log.warning("cannot set %s of %s to %s: %s", name, rel, value, exc)

    def _oom_kills(self, rel: str) -> int:
        """How many processes the OOM killer took in cgroup `rel` (its memory limit), ever."""
        layout = self._require_layout()
        if layout.memory is None:
            return 0
        name = "memory.events" if layout.unified else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (layout.memory / rel / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def _lock(self, instance: InstanceId) -> asyncio.Lock:
        return self._locks.setdefault(instance, asyncio.Lock())


# -- helpers -------------------------------------------------------------------------------


def _instance_of(app: str, worker: str, number: str) -> InstanceId | None:
    if not (_NAME.match(app) and _NAME.match(worker) and number.isdigit()):
        return None
    return InstanceId(app, worker, int(number))


def _exit_of(child: subprocess.Popen[bytes] | None) -> Exit:
    """How our child ended; unknown for a process we did not start."""
    if child is None:
        return Exit()
    code = child.poll()
    if code is None:
        return Exit()
    return Exit(signal=-code) if code < 0 else Exit(status=code)


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe behind `fd`."""
    result = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(result, sys.byteorder, signed=True)


def _reap(child: subprocess.Popen[bytes] | None) -> None:
    if child is not None:
        child.poll()


def _start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, names it for good."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
        # Fields after the parenthesised command name start at field 3; starttime is 22.
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _started_at(pid: int) -> float | None:
    """A process's start as wall-clock seconds since the epoch."""
    ticks = _start_ticks(pid)
    if ticks is None:
        return None
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return None


def _enable_controllers(path: Path, controllers: Iterable[str]) -> None:
    control = path / "cgroup.subtree_control"
    try:
        enabled = set(control.read_text().split())
    except OSError:
        return
    for controller in controllers:
        if controller not in enabled:
            try:
                control.write_text(f"+{controller}")
            except OSError as exc:
                log.info("cannot enable the %s controller in %s: %s", controller, path, exc)


def _make_group(mount: str, rel: str, *, cpuset: bool) -> None:
    """mkdir `mount/rel`, its missing parents first (deepest tried first: usually they exist)."""
    path = f"{mount}/{rel}"
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent, _, _ = rel.rpartition("/")
        if not parent:
            raise
        _make_group(mount, parent, cpuset=cpuset)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
    if cpuset:
        _inherit_cpuset(path)


def _inherit_cpuset(path: str) -> None:
    """A new v1 cpuset group starts with no CPUs nor memory nodes: give it its parent's."""
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        child_file = Path(path, name)
        if not child_file.read_text().strip():
            child_file.write_text(Path(parent, name).read_text())


def _remove_empty(path: Path, stop: Path) -> None:
    """rmdir `path` and its parents up to, not including, `stop`, while they are empty."""
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


async def _any_readable(loop: asyncio.AbstractEventLoop, fds: list[int], timeout: float) -> None:
    """Return when one of `fds` is readable, or after `timeout`."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)
