"""The systemd backend: every instance is a transient service, created over D-Bus.

This is the only module that imports pystemd; its bytes and Any never leave it.

Two bus connections, both used from the event loop's thread: method calls go through one;
signals (services' PropertiesChanged, JobRemoved) arrive on the other, whose fd the event loop
watches, so nothing polls while idle. A call waits for its reply (about a millisecond) on the
loop's thread: pystemd's binding holds the GIL while it waits, so a worker thread would block
the loop all the same, and only add a thread switch and a wake-up of the loop to every call.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib.util
import logging
import os
import re
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

# pystemd's package __init__ imports its whole object layer, and lxml with it (about 35 ms and
# 5 MiB); this backend needs only the bus binding, so the package is entered without it.
if "pystemd" not in sys.modules:
    _found = importlib.util.find_spec("pystemd")
    if _found is not None and _found.submodule_search_locations is not None:
        _package = types.ModuleType("pystemd")
        _package.__path__ = list(_found.submodule_search_locations)
        sys.modules["pystemd"] = _package

from pystemd.dbuslib import DBus, apply_signature, path_decode

from pazuzu import naming
from pazuzu.backends import ChangeCallback, Details, ExitCallback, LogSource, RunEnded
from pazuzu.errors import BackendError
from pazuzu.model import Exit, InstanceId, InstanceSpec, InstanceState, Limits, ObservedInstance
from pazuzu.unit_properties import PROPERTIES, PropertyValue

log = logging.getLogger(__name__)

T = TypeVar("T")

_SYSTEMD = b"org.freedesktop.systemd1"
_MANAGER_PATH = b"/org/freedesktop/systemd1"
_MANAGER = b"org.freedesktop.systemd1.Manager"
_UNIT = b"org.freedesktop.systemd1.Unit"
_SERVICE = b"org.freedesktop.systemd1.Service"
_PROPERTIES = b"org.freedesktop.DBus.Properties"
_UNIT_PATH_PREFIX = b"/org/freedesktop/systemd1/unit"
_BUS = b"org.freedesktop.DBus"
_BUS_PATH = b"/org/freedesktop/DBus"
_SERVICE_RULE = (
    b"type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.DBus.Properties',"
    b"member='PropertiesChanged',path_namespace='/org/freedesktop/systemd1/unit',"
    b"arg0='org.freedesktop.systemd1.Service'"
)

_USEC = 1_000_000
_CGROUP_ROOT = "/sys/fs/cgroup"
_NO_VALUE = 2**64 - 1  # systemd's "not available" for counters (no accounting here)

# waitpid(2) si_code values as systemd reports them in ExecMainCode.
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3

# Service properties that every change signal carries and `status` shows.
_MAIN_PROCESS = frozenset(
    {
        b"MainPID",
        b"NRestarts",
        b"ExecMainStartTimestamp",
        b"ExecMainExitTimestamp",
        b"ExecMainCode",
        b"ExecMainStatus",
    }
)

# The description ends with the definition's fingerprint and the restart delay the unit was
# given: a re-attaching daemon reads both from ListUnits, without a call per unit.
_FINGERPRINT = re.compile(r"\[([0-9a-f]{12})(?:, restart ([0-9.]+) s)?\]$")

# Errors after which a fresh connection is worth one more try (the bus daemon drops idle ones).
_RECONNECT_ERRNOS = {errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE, errno.EBADF}


class SystemdBackend:
    """Instances as `pazuzu-<app>-<worker>@<n>.service` in `pazuzu-<app>.slice`."""

    name = "systemd"

    def __init__(self, prefix: str = naming.PREFIX) -> None:
        self._prefix = prefix  # cgroups.hierarchy_root: the root slice is `<prefix>.slice`
        self._calls: Any = None  # method calls
        self._signals: Any = None  # signals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_change: ChangeCallback = lambda _instance: None
        self._on_exit: ExitCallback = lambda _ended: None
        self._exits: dict[InstanceId, int] = {}  # last ExecMainExitTimestamp seen
        self._starts: dict[InstanceId, int] = {}  # last ExecMainStartTimestamp seen
        self._jobs: dict[bytes, asyncio.Future[str]] = {}
        self._finished_jobs: dict[bytes, str] = {}
        self._dispatched = 0  # signal callbacks run so far
        self._delays: dict[InstanceId, float] = {}  # RestartUSec of each unit, in seconds
        self._main: dict[InstanceId, dict[bytes, Any]] = {}  # _MAIN_PROCESS, as last signalled
        self._since = 0  # CLOCK_REALTIME in µs when we began to watch, as systemd stamps
        self._callbacks: list[Callable[..., None]] = []

    # -- connection ------------------------------------------------------------------------

    async def open(self, on_change: ChangeCallback, on_exit: ExitCallback) -> None:
        self._loop = asyncio.get_running_loop()
        self._since = time.time_ns() // 1000
        self._on_change = on_change
        self._on_exit = on_exit
        try:
            await self._call(self._connect_calls)
            self._connect_signals()
        except Exception as exc:
            raise BackendError(
                f"cannot talk to systemd over D-Bus: {exc}",
                hint="is dbus running? try `busctl status org.freedesktop.systemd1`",
            ) from exc

    async def close(self) -> None:
        if self._signals is not None and self._loop is not None:
            self._loop.remove_reader(self._signals.get_fd())
            self._signals.close()
            self._signals = None
        await self._call(self._disconnect_calls)

    def _connect_calls(self) -> None:
        bus = DBus()
        bus.open()
        self._calls = bus
        # A first call completes authentication; an unauthenticated connection is dropped.
        self._manager_call(b"Subscribe", [])

    def _disconnect_calls(self) -> None:
        if self._calls is not None:
            self._calls.close()
            self._calls = None

    def _connect_signals(self) -> None:
        assert self._loop is not None
        bus = DBus()
        bus.open()
        # pystemd stores data on the callback object, which a bound method cannot hold, and
        # keeps no reference to it: we must, for as long as the connection lives.
        self._callbacks = [_plain(self._on_job_removed)]
        bus.match_signal(_SYSTEMD, _MANAGER_PATH, _MANAGER, b"JobRemoved", self._callbacks[0])
        # systemd signals every change of a unit twice, with its Service interface's properties
        # and then its Unit interface's. The first says all pazuzu needs, so the bus is asked
        # for that one only (a rule on its first argument, which sd_bus_match_signal cannot
        # express): half the messages to read and decode. They have no handler on this
        # connection, so sd_bus_process hands them to _drain_signals.
        bus.call_method(_BUS, _BUS_PATH, _BUS, b"AddMatch", apply_signature(b"s", [_SERVICE_RULE]))
        # systemd sends unit signals only while some client is subscribed.
        bus.call_method(_SYSTEMD, _MANAGER_PATH, _MANAGER, b"Subscribe", [])
        self._signals = bus
        self._loop.add_reader(bus.get_fd(), self._drain_signals)

    def _drain_signals(self) -> None:
        # sd_bus_process() handles one message a call, and pystemd hides its return value: a
        # call made progress if it returned a message or ran one of our callbacks.
        try:
            while self._signals is not None:
                before = self._dispatched
                message = self._signals.process()
                if message.is_empty():
                    if self._dispatched == before:
                        break
                elif message.is_signal(_PROPERTIES, b"PropertiesChanged"):
                    self._on_properties(message)
        except Exception:
            log.exception("D-Bus signal connection failed; reconnecting")
            self._reconnect_signals()

    def _reconnect_signals(self) -> None:
        assert self._loop is not None
        if self._signals is not None:
            try:
                self._loop.remove_reader(self._signals.get_fd())
                self._signals.close()
            except Exception:
                log.debug("closing the broken signal connection failed", exc_info=True)
            self._signals = None
        self._connect_signals()

    async def _call(self, fn: Callable[[], T]) -> T:
        return self._with_reconnect(fn)

    def _with_reconnect(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            if getattr(exc, "errno", None) not in _RECONNECT_ERRNOS or self._calls is None:
                raise
            log.info("D-Bus connection lost (%s); reconnecting", exc)
            self._disconnect_calls()
            self._connect_calls()
            return fn()

    def _manager_call(self, method: bytes, args: list[Any]) -> Any:
        return self._calls.call_method(_SYSTEMD, _MANAGER_PATH, _MANAGER, method, args).body

    # -- signals ---------------------------------------------------------------------------

    def _on_properties(self, message: Any) -> None:
        try:
            # The path header comes without decoding the message: other services' signals are
            # dropped before the body is read.
            path = message.get_path() or b""
            if not path.startswith(_UNIT_PATH_PREFIX + b"/"):
                return
            unit = path_decode(path, _UNIT_PATH_PREFIX).decode(errors="replace")
            instance = naming.parse_unit_name(unit, self._prefix)
            if instance is None:
                return
            message.process_reply(False)
            interface, changed, _invalidated = message.body
            if interface == _SERVICE:
                self._note_service_change(instance, changed)
            self._on_change(instance)
        except Exception:
            log.exception("could not handle a systemd PropertiesChanged signal")

    def _note_service_change(self, instance: InstanceId, changed: dict[bytes, Any]) -> None:
        if _MAIN_PROCESS.issubset(changed):
            # Every change signal carries these: `status` reads them from here, not the bus.
            self._main[instance] = {key: changed[key] for key in _MAIN_PROCESS}
        start = int(changed.get(b"ExecMainStartTimestamp", 0) or 0)
        exit_ts = int(changed.get(b"ExecMainExitTimestamp", 0) or 0)
        previous_exit = self._exits.get(instance)
        previous_start = self._starts.get(instance, 0)
        if start > previous_start:
            self._starts[instance] = start
        if exit_ts in (0, previous_exit):
            return
        self._exits[instance] = exit_ts
        if exit_ts <= self._since:
            return  # that run ended before we were watching

        began = start if 0 < start <= exit_ts else previous_start
        ended_by = _exit_from(changed.get(b"ExecMainCode", 0), changed.get(b"ExecMainStatus", 0))
        if changed.get(b"Result") == b"oom-kill":  # systemd saw the kernel's OOM killer
            ended_by = replace(ended_by, out_of_memory=True)
        ended = RunEnded(
            instance=instance,
            exit=ended_by,
            run_seconds=max(0.0, (exit_ts - began) / _USEC) if began else 0.0,
        )
        self._on_exit(ended)

    def _on_job_removed(self, message: Any, error: Any = None, userdata: Any = None) -> None:
        self._dispatched += 1
        try:
            message.process_reply(False)
            _job_id, job_path, unit, result = message.body
            if naming.parse_unit_name(unit.decode(errors="replace"), self._prefix) is None:
                return
            outcome = result.decode()
            waiter = self._jobs.pop(job_path, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(outcome)
            else:
                self._finished_jobs[job_path] = outcome
                if len(self._finished_jobs) > 10_000:  # nobody waited for these: forget them
                    self._finished_jobs.clear()
        except Exception:
            log.exception("could not handle a systemd JobRemoved signal")

    async def _wait_job(self, job_path: bytes, timeout: float) -> str:
        if job_path in self._finished_jobs:
            return self._finished_jobs.pop(job_path)
        assert self._loop is not None
        waiter: asyncio.Future[str] = self._loop.create_future()
        self._jobs[job_path] = waiter
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            self._jobs.pop(job_path, None)

    # -- queries ---------------------------------------------------------------------------

    async def list_instances(
        self, *, details: Details = False
    ) -> dict[InstanceId, ObservedInstance]:
        return await self._call(lambda: self._list_instances(details))

    def _list_instances(self, details: Details) -> dict[InstanceId, ObservedInstance]:
        rows = self._manager_call(
            b"ListUnitsByPatterns",
            apply_signature(b"asas", [[], [naming.unit_pattern(self._prefix).encode()]]),
        )
        found: dict[InstanceId, ObservedInstance] = {}
        for name, description, load, active, sub, _following, path, *_job in rows:
            instance = naming.parse_unit_name(name.decode(errors="replace"), self._prefix)
            if instance is None or load != b"loaded":
                continue
            match = _FINGERPRINT.search(description.decode(errors="replace"))
            if match and match.group(2) and instance not in self._delays:
                self._delays[instance] = float(match.group(2))
            observed = ObservedInstance(
                id=instance,
                state=_state_of(active.decode(), sub.decode()),
                fingerprint=match.group(1) if match else None,
                restart_delay=self._restart_delay(instance, path),
            )
            if details is True or (details and details(instance)):
                observed = self._with_details(observed, path)
            found[instance] = observed
        return found

    def _restart_delay(self, instance: InstanceId, path: bytes) -> float:
        """The unit's RestartUSec in seconds: asked once per unit we did not start ourselves."""
        delay = self._delays.get(instance)
        if delay is None:
            try:
                usec = self._calls.call_method(
                    _SYSTEMD,
                    path,
                    _PROPERTIES,
                    b"Get",
                    apply_signature(b"ss", [_SERVICE, b"RestartUSec"]),
                ).body
            except Exception as exc:  # the unit went away between the two calls
                log.debug("no restart delay for %s: %s", instance, exc)
                return 0.0
            delay = self._delays[instance] = int(usec or 0) / _USEC
        return delay

    def _with_details(self, observed: ObservedInstance, path: bytes) -> ObservedInstance:
        """Add pid, times, restarts and accounting: two Get calls, the rest from signals."""
        try:
            props = self._main.get(observed.id)
            if props is None:  # a unit that has been quiet since we started watching
                everything = self._calls.call_method(
                    _SYSTEMD, path, _PROPERTIES, b"GetAll", apply_signature(b"s", [_SERVICE])
                ).body
                props = self._main[observed.id] = {k: everything[k] for k in _MAIN_PROCESS}
        except Exception as exc:  # the unit went away between the two calls
            log.debug("no details for %s: %s", observed.id, exc)
            return observed
        memory, cpu = _accounting(self._control_group(observed.id))
        pid = int(props[b"MainPID"] or 0)
        started = int(props[b"ExecMainStartTimestamp"] or 0)
        exit_ts = int(props[b"ExecMainExitTimestamp"] or 0)
        return replace(
            observed,
            pid=pid or None,
            started_at=started / _USEC if started and pid else None,
            restarts=int(props[b"NRestarts"] or 0),
            last_exit=(
                _exit_from(props[b"ExecMainCode"], props[b"ExecMainStatus"]) if exit_ts else None
            ),
            memory_bytes=memory,
            cpu_seconds=cpu,
        )

    def _control_group(self, instance: InstanceId) -> str:
        """The unit's cgroup, as systemd names it: `/pazuzu.slice/pazuzu-a.slice/<unit>`."""
        return "/".join(
            (
                "",
                naming.root_slice(self._prefix),
                naming.app_slice(instance.app, self._prefix),
                naming.unit_name(instance, self._prefix),
            )
        )

    def log_source(self, instances: list[InstanceId]) -> LogSource:
        return LogSource(journal_identifiers=tuple(naming.syslog_identifier(i) for i in instances))

    # -- actions ---------------------------------------------------------------------------

    async def set_limits(
        self, app: str, app_limits: Limits, instances: Mapping[InstanceId, Limits]
    ) -> None:
        app_slice = naming.app_slice(app, self._prefix)
        targets = [(app_slice, app_limits)] + [
            (naming.unit_name(instance, self._prefix), limits)
            for instance, limits in instances.items()
        ]
        for unit, limits in targets:
            try:
                await self._call(functools.partial(self._set_properties, unit, limits))
            except Exception as exc:
                raise BackendError(f"cannot set the limits of {unit}: {exc}") from exc

    def _set_properties(self, unit: str, limits: Limits) -> None:
        """SetUnitProperties(runtime): the limits in force until the unit goes away."""
        args = apply_signature(b"sb", [unit.encode(), True])
        args += _property_array(_limit_properties(limits, unset=_NO_VALUE))
        self._manager_call(b"SetUnitProperties", args)

    async def start(self, spec: InstanceSpec, restart_delay: float) -> None:
        if spec.app_limits:
            # The application's slice comes and goes with its units: give it its limits first.
            app_slice = naming.app_slice(spec.id.app, self._prefix)
            try:
                await self._call(lambda: self._set_properties(app_slice, spec.app_limits))
            except Exception as exc:
                log.warning("cannot set the limits of %s: %s", app_slice, exc)
        unit = naming.unit_name(spec.id, self._prefix)
        properties = _unit_properties(
            spec, restart_delay, naming.app_slice(spec.id.app, self._prefix)
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                job = await self._call(lambda: self._start_transient(unit, properties))
                break
            except Exception as exc:
                if "UnitExists" not in _error_name(exc) or time.monotonic() > deadline:
                    raise BackendError(f"cannot start {spec.id} ({unit}): {exc}") from exc
                # A stopped or failed unit of that name is still loaded: clear it, try again.
                if await self._is_active(unit):
                    log.info("%s is already running; not starting a duplicate", spec.id)
                    return
                await self._call(lambda: self._reset_failed(unit))
                await asyncio.sleep(0.05)
        self._delays[spec.id] = restart_delay
        # For a notify worker, the start job ends with READY=1, or fails.
        result = await self._wait_job(job, timeout=spec.start_timeout + 30.0)
        if result != "done":
            raise BackendError(
                f"starting {spec.id} ({unit}) ended with '{result}'"
                + (" before READY=1" if spec.notify else "")
            )
        # systemd's journal says "Started <unit>" itself: here it is a debugging detail, and
        # at INFO its write to the journal was a tenth of a 100-instance scale's busy time.
        log.debug("started %s (%s)", spec.id, unit)

    def _start_transient(self, unit: str, properties: list[tuple[bytes, bytes, Any]]) -> bytes:
        args = apply_signature(b"ss", [unit.encode(), b"fail"])
        args += _property_array(properties)
        args += [(ord("a"), b"(sa(sv))"), (-1, None)]  # no auxiliary units
        job: bytes = self._manager_call(b"StartTransientUnit", args)
        return job

    def _reset_failed(self, unit: str) -> None:
        try:
            self._manager_call(b"ResetFailedUnit", apply_signature(b"s", [unit.encode()]))
        except Exception as exc:
            log.debug("reset-failed %s: %s", unit, exc)

    async def _is_active(self, unit: str) -> bool:
        def query() -> bool:
            try:
                path = self._manager_call(b"GetUnit", apply_signature(b"s", [unit.encode()]))
                state = self._calls.call_method(
                    _SYSTEMD,
                    path,
                    _PROPERTIES,
                    b"Get",
                    apply_signature(b"ss", [_UNIT, b"ActiveState"]),
                ).body
            except Exception:
                return False
            return bool(state in (b"active", b"activating", b"reloading"))

        return await self._call(query)

    async def stop(self, instance: InstanceId, timeout: float) -> None:
        unit = naming.unit_name(instance, self._prefix)

        def stop_unit() -> bytes | None:
            try:
                job: bytes = self._manager_call(
                    b"StopUnit", apply_signature(b"ss", [unit.encode(), b"replace"])
                )
            except Exception as exc:
                if _no_such_unit(exc):
                    return None
                raise
            return job

        try:
            job = await self._call(stop_unit)
        except Exception as exc:
            raise BackendError(f"cannot stop {instance} ({unit}): {exc}") from exc
        result = None
        if job is not None:
            # systemd itself sends SIGKILL after TimeoutStopSec; allow it time to do so.
            result = await self._wait_job(job, timeout=timeout + 15.0)
        if result != "done":  # a unit left failed would keep its name: clear it
            await self._call(lambda: self._reset_failed(unit))
        self._delays.pop(instance, None)
        self._main.pop(instance, None)
        log.debug("stopped %s (%s)", instance, unit)  # systemd's journal says so too


def _plain(method: Callable[..., None]) -> Callable[..., None]:
    def callback(*args: Any, **kwargs: Any) -> None:
        method(*args, **kwargs)

    return callback


def _unit_properties(
    spec: InstanceSpec, restart_delay: float, slice_name: str
) -> list[tuple[bytes, bytes, Any]]:
    instance = spec.id
    env = [f"{key}={value}".encode() for key, value in spec.environment]
    properties: list[tuple[bytes, bytes, Any]] = [
        (
            b"Description",
            b"s",
            f"pazuzu {instance} [{spec.fingerprint}, restart {restart_delay:g} s]".encode(),
        ),
        (b"Slice", b"s", slice_name.encode()),
        (
            b"ExecStart",
            b"a(sasb)",
            [(b"/bin/sh", [b"/bin/sh", b"-c", spec.command_line.encode()], False)],
        ),
        (b"WorkingDirectory", b"s", str(spec.directory).encode()),
        (b"Environment", b"as", env),
        (b"SyslogIdentifier", b"s", naming.syslog_identifier(instance).encode()),
        (
            b"LogExtraFields",
            b"aay",
            [
                f"PAZUZU_APP={instance.app}".encode(),
                f"PAZUZU_WORKER={instance.worker}".encode(),
                f"PAZUZU_INSTANCE={instance.number}".encode(),
            ],
        ),
        (b"Type", b"s", b"notify" if spec.notify else b"simple"),
        (b"Restart", b"s", b"always"),
        (b"RestartUSec", b"t", int(restart_delay * _USEC)),
        # 0 disables the start rate limit: a crash loop is paced by RestartUSec, never parked.
        (b"StartLimitIntervalUSec", b"t", 0),
        (b"KillMode", b"s", b"control-group"),
        (b"TimeoutStopUSec", b"t", int(spec.stop_timeout * _USEC)),
        (b"CollectMode", b"s", b"inactive-or-failed"),
    ]
    if spec.notify:
        # Any process of the instance may say READY=1: dash forks the last command.
        properties.append((b"NotifyAccess", b"s", b"all"))
        properties.append((b"TimeoutStartUSec", b"t", int(spec.start_timeout * _USEC)))
    properties += _limit_properties(spec.limits, unset=None)
    if spec.user:
        properties.append((b"User", b"s", spec.user.encode()))
    if spec.group:
        properties.append((b"Group", b"s", spec.group.encode()))
    properties += [_passed_through(name, value) for name, value in spec.systemd]
    return properties


def _passed_through(name: str, value: PropertyValue) -> tuple[bytes, bytes, Any]:
    """A property of the worker's `systemd:`, encoded with its signature from the table."""
    signature = PROPERTIES[name].signature.encode()
    encoded: Any = value
    if isinstance(value, str):
        encoded = value.encode()
    elif isinstance(value, tuple) and value and isinstance(value[0], bool):
        allow, names = value  # (bas): an allow-list (true) or a deny-list, and its names
        encoded = (allow, [str(item).encode() for item in names])
    elif isinstance(value, tuple):
        encoded = [str(item).encode() for item in value]
    return name.encode(), signature, encoded


def _limit_properties(limits: Limits, *, unset: int | None) -> list[tuple[bytes, bytes, Any]]:
    """MemoryMax=, CPUQuota= and TasksMax= of `limits`; `unset` for those not given (or skip)."""
    values = {
        b"MemoryMax": limits.memory_bytes,
        # CPUQuota=100% is one second of CPU time per second.
        b"CPUQuotaPerSecUSec": (
            None if limits.cpu_percent is None else int(limits.cpu_percent * _USEC / 100)
        ),
        b"TasksMax": limits.tasks,
    }
    return [
        (name, b"t", unset if value is None else value)
        for name, value in values.items()
        if value is not None or unset is not None
    ]


def _property_array(properties: list[tuple[bytes, bytes, Any]]) -> list[tuple[int, Any]]:
    """Encode `a(sv)` for pystemd's message builder: (name, signature, value) triples."""
    args: list[tuple[int, Any]] = [(ord("a"), b"(sv)")]
    for name, signature, value in properties:
        args += [(ord("r"), b"sv"), (ord("s"), name), (ord("v"), signature)]
        args += apply_signature(signature, [value])
        args += [(-1, None), (-1, None)]
    args.append((-1, None))
    return args


def _accounting(group: str) -> tuple[int | None, float | None]:
    """Memory (bytes) and CPU time (s) of a unit, read from its cgroup as systemd does itself.

    Reading the files costs microseconds, where asking systemd costs a D-Bus call per value.
    On a cgroup2 host the files are in the unified tree; on a hybrid one in the v1 memory and
    cpuacct hierarchies, when systemd enabled them for the unit. None where there are none.
    """
    memory = _read_int(f"{_CGROUP_ROOT}{group}/memory.current")
    if memory is None:
        memory = _read_int(f"{_CGROUP_ROOT}/memory{group}/memory.usage_in_bytes")
    cpu: float | None = None
    stat = _read(f"{_CGROUP_ROOT}{group}/cpu.stat")
    for line in stat.splitlines() if stat else ():
        key, _, value = line.partition(b" ")
        if key == b"usage_usec":
            cpu = int(value) / 1e6
    if cpu is None:
        usage = _read_int(f"{_CGROUP_ROOT}/cpuacct{group}/cpuacct.usage")
        cpu = usage / 1e9 if usage is not None else None
    return memory, cpu


def _read(path: str) -> bytes | None:
    """A small file's bytes, or None (plain os calls: this runs for every instance of a status)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    data = _read(path)
    try:
        return int(data) if data is not None else None
    except ValueError:
        return None


def _state_of(active: str, sub: str) -> InstanceState:
    if active in ("active", "reloading"):
        return InstanceState.RUNNING
    if active == "activating":
        return InstanceState.BACKOFF if sub == "auto-restart" else InstanceState.STARTING
    if active == "deactivating":
        return InstanceState.STOPPING
    if active == "failed":
        return InstanceState.FAILED
    return InstanceState.STOPPED


def _exit_from(code: Any, status: Any) -> Exit:
    code, status = int(code or 0), int(status or 0)
    if code in (_CLD_KILLED, _CLD_DUMPED):
        return Exit(signal=status, core_dumped=code == _CLD_DUMPED)
    return Exit(status=status)


def _no_such_unit(exc: BaseException) -> bool:
    """Whether systemd answered that the unit is not loaded (pystemd maps it to ENOENT)."""
    return "NoSuchUnit" in _error_name(exc) or getattr(exc, "errno", None) in (
        errno.ENOENT,
        -errno.ENOENT,
    )


def _error_name(exc: BaseException) -> str:
    name = getattr(exc, "err_name", "") or ""
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return f"{name} {exc}"
