"""pazuzud: the supervisor. One asyncio loop drives the observed instances to the formation.

Signal handlers only set events; requests and backend signals wake the reconcile loop; nothing
polls while idle. Exiting never stops a worker: only `pazuzu stop` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import click

from pazuzu import __version__, access, policy, protocol
from pazuzu.backends import Backend, RunEnded, systemd_booted
from pazuzu.config import load_config
from pazuzu.errors import PazuzuError, SpecError
from pazuzu.model import (
    Config,
    Exit,
    InstanceId,
    InstanceSpec,
    InstanceState,
    Limits,
    ObservedInstance,
    WorkerFormation,
)
from pazuzu.notify import Notifier
from pazuzu.options import config_option
from pazuzu.plan import desired_instances, plan
from pazuzu.server import ControlServer
from pazuzu.spec import Spec, parse_scale, parse_spec
from pazuzu.state import effective_formation, load_state, save_state

log = logging.getLogger("pazuzud")

WorkerKey = tuple[str, str]


class Supervisor:
    """Holds the configuration and formation; turns requests and events into backend actions."""

    def __init__(
        self, config_path: Path, config: Config, backend: Backend, ready_fd: int | None = None
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.backend = backend
        self.notifier = Notifier(ready_fd)
        self.formation: dict[WorkerKey, WorkerFormation] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._busy: set[InstanceId] = set()  # an action on it is under way
        self._passed_by: set[InstanceId] = set()  # busy when a reconcile ran: look again after
        self._tasks: set[asyncio.Task[None]] = set()
        # Crash-loop bookkeeping, per instance.
        self._failures: dict[InstanceId, int] = {}
        self._armed: dict[InstanceId, float] = {}  # restart delay the backend was given
        self._held: dict[InstanceId, float] = {}  # monotonic time of the next try
        self._last_exit: dict[InstanceId, Exit] = {}
        self._restarts: dict[InstanceId, int] = {}
        self._next_try: dict[InstanceId, float] = {}  # when a crashed instance runs again
        self._state_warning: str | None = None
        self._server: ControlServer | None = None
        self._ready = asyncio.Event()  # re-attached and reconciled once
        self._desired_cache: tuple[object, dict[InstanceId, InstanceSpec]] | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, socket_path: Path) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        self.formation = self._initial_formation()
        server = ControlServer(
            socket_path, self.handle, self.config.socket_group, _app_users(self.config)
        )
        self._server = server
        # The socket first: a second pazuzud stops there, before it touches any instance.
        # Requests that arrive meanwhile wait for the first reconcile (see handle).
        await server.start()
        try:
            await self.backend.open(self._on_change, self._on_exit)
            await self.reconcile(wait=True)
            self._ready.set()
            self.notifier.send(READY="1", STATUS=self.summary())
            log.info("ready: %s", self.summary())
            async with asyncio.TaskGroup() as group:
                reconciler = group.create_task(self._reconcile_forever())
                reloader = group.create_task(self._reload_on_signal())
                watchdog = group.create_task(self._watchdog())
                await self._stop.wait()
                for task in (reconciler, reloader, watchdog):
                    task.cancel()
        finally:
            self.notifier.send(STOPPING="1")
            log.info("stopping; workers keep running")
            await server.close()
            for task in list(self._tasks):
                task.cancel()
            await self.backend.close()

    def _initial_formation(self) -> dict[WorkerKey, WorkerFormation]:
        try:
            saved = load_state(self.config.state_path)
        except PazuzuError as error:
            self._state_warning = str(error)
            log.error("%s", error)
            saved = {}
        return effective_formation(self._configured_counts(self.config), saved)

    @staticmethod
    def _configured_counts(config: Config) -> dict[WorkerKey, int]:
        return {
            (app.name, worker.name): worker.num_instances
            for app in config.applications
            for worker in app.workers
        }

    def _save_formation(self) -> None:
        try:
            save_state(self.config.state_path, self.formation)
            self._state_warning = None
        except PazuzuError as error:
            # The in-memory formation stays in force; say so wherever someone looks.
            self._state_warning = f"formation not saved: {error}"
            log.error("%s", self._state_warning)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.send(WATCHDOG="1")
            await asyncio.sleep(interval)

    async def _reload_on_signal(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            try:
                await self.reload()
            except PazuzuError as error:
                log.error("reload rejected, the previous configuration stays: %s", error)

    # -- reconcile -------------------------------------------------------------------------

    def _on_change(self, instance: InstanceId) -> None:
        # An instance under way changes because of that action: its end looks again if needed.
        # Without this, each of the signals of a 100-unit scale would run a reconcile (and a
        # ListUnits call) that can do nothing for the instances it is waiting on.
        if instance not in self._busy:
            self._wake.set()

    def _idle(self, instance: InstanceId) -> None:
        """The action on `instance` ended: reconcile again if one passed it by meanwhile."""
        self._busy.discard(instance)
        if instance in self._passed_by:
            self._passed_by.discard(instance)
            self._wake.set()

    def _on_exit(self, ended: RunEnded) -> None:
        instance = ended.instance
        desired = self._is_desired(instance)
        if not desired or instance in self._busy:
            return  # we stopped it, or it is going away
        self._last_exit[instance] = ended.exit
        self._restarts[instance] = self._restarts.get(instance, 0) + 1
        failures = policy.next_failures(self._failures.get(instance, 0), ended.run_seconds)
        self._failures[instance] = failures
        delay = policy.restart_delay(failures)
        self._next_try[instance] = time.monotonic() + delay
        log.warning(
            "%s exited (%s) after %.1f s; respawn in %.1f s",
            instance,
            ended.exit,
            ended.run_seconds,
            delay,
        )
        if delay != self._armed.get(instance, 0.0):
            # The backend would respawn it on the old schedule: take over until `delay` passes.
            self._held[instance] = time.monotonic() + delay
            self._spawn(self._rearm(instance, delay))
        self._wake.set()

    async def _rearm(self, instance: InstanceId, delay: float) -> None:
        self._busy.add(instance)
        try:
            await self.backend.stop(instance, timeout=self._stop_timeout(instance))
        finally:
            self._idle(instance)
        await asyncio.sleep(max(0.0, self._held.get(instance, 0.0) - time.monotonic()))
        self._held.pop(instance, None)
        self._wake.set()

    def _is_desired(self, instance: InstanceId) -> bool:
        wanted = self.formation.get((instance.app, instance.worker))
        return wanted is not None and instance.number in wanted.running_numbers()

    def _stop_timeout(self, instance: InstanceId) -> float:
        app = self.config.application(instance.app)
        worker = app.worker(instance.worker) if app else None
        return worker.stop_timeout if worker else 10.0

    async def _reconcile_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying on the next event")
                await asyncio.sleep(1.0)

    async def reconcile(self, *, wait: bool = False) -> None:
        """Compare formation and backend once, and start the actions that close the gap.

        With `wait`, return only when those actions are done.
        """
        async with self._reconcile_lock:
            observed = await self.backend.list_instances()
            for instance, seen in observed.items():
                # Adopted units keep the restart delay an earlier daemon gave them.
                self._armed.setdefault(instance, seen.restart_delay)
            desired = self._desired()
            now = time.monotonic()
            for instance in list(self._held):
                if instance not in desired:
                    self._held.pop(instance)
            self._passed_by |= self._busy
            held = frozenset(self._busy) | {i for i, t in self._held.items() if t > now}
            actions = plan(desired, observed, held)
            started: list[asyncio.Task[None]] = []
            for instance in actions.stops:
                started.append(self._spawn(self._stop_instance(instance)))
            for spec in actions.starts:
                started.append(self._spawn(self._start_instance(spec)))
            for specs in _by_worker(actions.replaces):
                started.append(self._spawn(self._replace_in_turn(specs)))
        if actions:
            log.info(
                "reconcile: %d to start, %d to stop, %d to replace",
                len(actions.starts),
                len(actions.stops),
                len(actions.replaces),
            )
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        self.notifier.send(STATUS=self.summary())

    def _desired(self) -> dict[InstanceId, InstanceSpec]:
        """desired_instances(), computed again only when the configuration or formation change."""
        key = (id(self.config), tuple(sorted(self.formation.items())))
        if self._desired_cache is None or self._desired_cache[0] != key:
            self._desired_cache = (key, desired_instances(self.config, self.formation))
        return self._desired_cache[1]

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_instance(self, spec: InstanceSpec) -> None:
        self._busy.add(spec.id)
        delay = policy.restart_delay(self._failures.get(spec.id, 0) + 1)
        try:
            await self.backend.start(spec, restart_delay=delay)
            self._armed[spec.id] = delay
        except PazuzuError as error:
            log.error("%s", error)
        finally:
            self._idle(spec.id)

    async def _stop_instance(self, instance: InstanceId) -> None:
        self._busy.add(instance)
        try:
            await self.backend.stop(instance, timeout=self._stop_timeout(instance))
        except PazuzuError as error:
            log.error("%s", error)
        finally:
            self._idle(instance)
            self._forget(instance)

    async def _replace_in_turn(self, specs: list[InstanceSpec]) -> PazuzuError | None:
        """Restart instances one at a time, each replacement up (or READY=1) before the next.

        A replacement that fails halts the roll: the instances not reached keep running as
        they are. Returns that failure, or None.
        """
        for spec in specs:
            self._busy.add(spec.id)
        try:
            for spec in specs:
                log.info("replacing %s", spec.id)
                error = await self._restart_one(spec)
                if error is not None:
                    rest = [str(s.id) for s in specs[specs.index(spec) + 1 :]]
                    log.error("%s; halted, untouched: %s", error, " ".join(rest) or "none left")
                    return error
            return None
        finally:
            for spec in specs:
                self._idle(spec.id)

    async def _restart_one(self, spec: InstanceSpec) -> PazuzuError | None:
        self._busy.add(spec.id)
        try:
            await self.backend.stop(spec.id, timeout=spec.stop_timeout)
            self._forget(spec.id)
            await self.backend.start(spec, restart_delay=0.0)
            self._armed[spec.id] = 0.0
        except PazuzuError as error:
            return error
        finally:
            self._idle(spec.id)
        return None

    def _forget(self, instance: InstanceId) -> None:
        for table in (self._failures, self._armed, self._held, self._last_exit, self._next_try):
            table.pop(instance, None)

    # -- requests --------------------------------------------------------------------------

    async def handle(self, request: protocol.Request) -> Any:
        request = access.admit(request, self.config)  # the caller's rights; AccessError if none
        await self._ready.wait()
        match request.command:
            case protocol.Command.PING:
                return self._daemon_info()
            case protocol.Command.STATUS:
                return await self.status(request.strings("specs"))
            case protocol.Command.SCALE:
                return await self.scale(request.strings("changes"))
            case protocol.Command.STOP:
                return await self.stop(request.strings("specs"))
            case protocol.Command.START:
                return await self.start(request.strings("specs"))
            case protocol.Command.RESTART:
                return await self.restart(
                    request.strings("specs"), rolling=bool(request.args.get("rolling"))
                )
            case protocol.Command.LOG:
                return self.log_source(request.strings("specs"))
            case protocol.Command.RELOAD:
                return await self.reload()
            case protocol.Command.RUN:
                return self.run_spec(str(request.args["app"]))
        raise PazuzuError(f"unhandled command {request.command}")

    def _daemon_info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "backend": self.backend.name, "version": __version__}

    async def scale(self, texts: list[str]) -> dict[str, Any]:
        changes = parse_scale(texts)
        updated = dict(self.formation)
        for change in changes:
            key = (change.app, change.worker)
            current = updated.get(key)
            if current is None:
                raise SpecError(
                    f"no worker {change.app}.{change.worker} in the configuration",
                    hint=f"known workers: {', '.join(self._worker_names()) or 'none'}",
                )
            count = change.apply(current.count)
            stopped = frozenset(n for n in current.stopped if n <= count)
            updated[key] = replace(current, count=count, stopped=stopped)
            log.info("scale %s.%s to %d", change.app, change.worker, count)
        self.formation = updated
        self._save_formation()
        await self.reconcile(wait=True)
        return {"formation": self._formation_summary()}

    async def stop(self, texts: list[str]) -> dict[str, Any]:
        matched = self._match_numbers(texts)
        for key, numbers in matched.items():
            current = self.formation[key]
            self.formation[key] = replace(current, stopped=current.stopped | numbers)
        self._save_formation()
        await self.reconcile(wait=True)
        return {"stopped": _names(matched)}

    async def start(self, texts: list[str]) -> dict[str, Any]:
        matched = self._match_numbers(texts)
        for key, numbers in matched.items():
            current = self.formation[key]
            self.formation[key] = replace(current, stopped=current.stopped - numbers)
            for number in numbers:  # a deliberate start skips any backoff wait
                instance = InstanceId(key[0], key[1], number)
                self._held.pop(instance, None)
                self._failures.pop(instance, None)
        self._save_formation()
        await self.reconcile(wait=True)
        return {"started": _names(matched)}

    async def restart(self, texts: list[str], *, rolling: bool) -> dict[str, Any]:
        matched = self._match_numbers(texts)
        for key, numbers in matched.items():
            current = self.formation[key]
            self.formation[key] = replace(current, stopped=current.stopped - numbers)
        self._save_formation()
        desired = self._desired()
        specs = [desired[i] for i in _instances(matched) if i in desired]
        for spec in specs:
            self._forget(spec.id)
        groups = _by_worker(specs) if rolling else [[spec] for spec in specs]
        failures = await asyncio.gather(*(self._replace_in_turn(group) for group in groups))
        await self.reconcile(wait=True)
        failed = [error for error in failures if error is not None]
        if failed:
            raise PazuzuError(
                "restart failed: " + "; ".join(str(error) for error in failed),
                hint="a rolling restart stops at the first replacement that fails; the "
                "instances after it keep running. See `pazuzu log` of the failed instance",
            )
        return {"restarted": [str(spec.id) for spec in specs]}

    async def reload(self) -> dict[str, Any]:
        self.notifier.send(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
        try:
            config = load_config(self.config_path)
        except PazuzuError as error:
            message = f"reload rejected, the previous configuration stays: {error}"
            self.notifier.send(READY="1", STATUS=message[:200])
            log.error("%s", message)
            raise
        previous, self.config = self.config, config
        if self._server is not None:
            self._server.grant(_app_users(config))
        saved = dict(self.formation)
        self.formation = effective_formation(self._configured_counts(config), saved)
        self._save_formation()
        log.info("configuration reloaded from %s", self.config_path)
        await self.reconcile(wait=True)
        await self._apply_changed_limits(previous, config)
        self.notifier.send(READY="1", STATUS=self.summary())
        return {"formation": self._formation_summary()}

    async def _apply_changed_limits(self, previous: Config, config: Config) -> None:
        """Apply limits that a reload changed to running instances, without restarting them."""
        observed = await self.backend.list_instances()
        for app in config.applications:
            before = previous.application(app.name)
            old_limits = {w.name: w.limits for w in before.workers} if before else {}
            changed = (before.limits if before else Limits()) != app.limits or any(
                old_limits.get(worker.name, Limits()) != worker.limits for worker in app.workers
            )
            if not changed:
                continue
            instances = {
                instance: worker.limits
                for worker in app.workers
                for instance in observed
                if (instance.app, instance.worker) == (app.name, worker.name)
            }
            try:
                await self.backend.set_limits(app.name, app.limits, instances)
                log.info("limits of %s applied to %d running instances", app.name, len(instances))
            except PazuzuError as error:
                log.error("%s", error)

    def run_spec(self, name: str) -> dict[str, Any]:
        """What `pazuzu run` needs to run a one-off command like the application's instances."""
        app = self.config.application(name)
        if app is None:
            raise SpecError(
                f"no application {name!r} in the configuration",
                hint=f"applications: {', '.join(a.name for a in self.config.applications)}",
            )
        cgroups = self.config.cgroups
        return {
            "backend": self.backend.name,
            "app": app.name,
            "directory": str(app.directory),
            "environment": {**app.environment, "PAZUZU_APP": app.name},
            "user": app.user,
            "group": app.group,
            "hierarchy_root": cgroups.hierarchy_root,
            "fs_root": str(cgroups.fs_root),
            "subsystems": list(cgroups.subsystems),
        }

    def log_source(self, texts: list[str]) -> dict[str, Any]:
        instances = _instances(self._match_numbers(texts or ["*"]))
        source = self.backend.log_source(sorted(instances))
        return {
            "journal_identifiers": list(source.journal_identifiers),
            "files": list(source.files),
        }

    async def status(self, texts: list[str]) -> dict[str, Any]:
        specs = [parse_spec(text) for text in texts] or [Spec("*")]
        self._match_numbers(texts)  # an exact spec that names nothing is an error
        observed = await self.backend.list_instances(
            details=lambda i: any(spec.matches_instance(i) for spec in specs)
        )
        now = time.monotonic()
        applications = []
        for app in self.config.applications:
            if not any(spec.matches_app(app.name) for spec in specs):
                continue
            workers = []
            for worker in app.workers:
                if not any(spec.matches_worker(app.name, worker.name) for spec in specs):
                    continue
                wanted = self.formation[(app.name, worker.name)]
                numbers = set(range(1, wanted.count + 1))
                numbers |= {
                    i.number for i in observed if (i.app, i.worker) == (app.name, worker.name)
                }
                instances = []
                for number in sorted(numbers):
                    instance = InstanceId(app.name, worker.name, number)
                    if not any(spec.matches_instance(instance) for spec in specs):
                        continue
                    instances.append(
                        self._instance_status(instance, observed.get(instance), wanted, now)
                    )
                workers.append(
                    {
                        "name": worker.name,
                        "command_line": worker.command_line,
                        "desired": len(wanted.running_numbers()),
                        "limits": worker.limits.as_dict(),
                        "instances": instances,
                    }
                )
            applications.append(
                {"name": app.name, "limits": app.limits.as_dict(), "workers": workers}
            )
        daemon = self._daemon_info()
        if self._state_warning:
            daemon["warning"] = self._state_warning
        return {"daemon": daemon, "applications": applications}

    def _instance_status(
        self,
        instance: InstanceId,
        seen: ObservedInstance | None,
        wanted: WorkerFormation,
        now: float,
    ) -> dict[str, Any]:
        should_run = instance.number in wanted.running_numbers()
        next_try = self._next_try.get(instance)
        if next_try is not None and next_try <= now:
            next_try = None
        if instance in self._held and should_run:
            state = InstanceState.BACKOFF
        elif seen is not None:
            state = seen.state
            if state is InstanceState.RUNNING and not should_run:
                state = InstanceState.STOPPING
        else:
            state = InstanceState.STARTING if should_run else InstanceState.STOPPED
        last_exit = self._last_exit.get(instance) or (seen.last_exit if seen else None)
        return {
            "number": instance.number,
            "state": str(state),
            "pid": seen.pid if seen else None,
            "started_at": seen.started_at if seen else None,
            "restarts": max(self._restarts.get(instance, 0), seen.restarts if seen else 0),
            "last_exit": str(last_exit) if last_exit else None,
            "memory_bytes": seen.memory_bytes if seen else None,
            "cpu_seconds": seen.cpu_seconds if seen else None,
            "next_try_in": round(max(0.0, next_try - now), 3) if next_try is not None else None,
            "should_run": should_run,
        }

    def _match_numbers(self, texts: Iterable[str]) -> dict[WorkerKey, frozenset[int]]:
        """The instance numbers, per worker, that the specs name.

        A spec without wildcards that names no configured worker, or an instance number
        beyond the worker's count, is an error; a glob may match nothing.
        """
        matched: dict[WorkerKey, frozenset[int]] = {}
        for text in texts:
            spec = parse_spec(text)
            hit = False
            for (app, worker), wanted in self.formation.items():
                if not spec.matches_worker(app, worker):
                    continue
                numbers = frozenset(
                    n
                    for n in range(1, wanted.count + 1)
                    if spec.matches_instance(InstanceId(app, worker, n))
                )
                hit = hit or bool(numbers) or spec.instance is None
                matched[(app, worker)] = matched.get((app, worker), frozenset()) | numbers
            if not hit and not spec.has_wildcard:
                raise self._no_match([text])
        return {key: numbers for key, numbers in matched.items() if numbers}

    def _no_match(self, texts: list[str]) -> SpecError:
        return SpecError(
            f"nothing matches {', '.join(texts)}",
            hint=f"known workers: {', '.join(self._worker_names()) or 'none'}",
        )

    def _worker_names(self) -> list[str]:
        return [f"{app}.{worker}" for app, worker in sorted(self.formation)]

    def _formation_summary(self) -> dict[str, int]:
        return {
            f"{app}.{worker}": len(wanted.running_numbers())
            for (app, worker), wanted in sorted(self.formation.items())
        }

    def summary(self) -> str:
        """One line for sd_notify STATUS= and the log: the formation, worker by worker."""
        parts = [f"{name}={count}" for name, count in self._formation_summary().items()]
        text = " ".join(parts) or "no workers configured"
        if self._state_warning:
            text += " (WARNING: formation not persisted)"
        return text


def _app_users(config: Config) -> list[str]:
    """The users of the applications: each may connect to control its own."""
    return [app.user for app in config.applications if app.user]


def _by_worker(specs: Iterable[InstanceSpec]) -> list[list[InstanceSpec]]:
    groups: dict[WorkerKey, list[InstanceSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.id.app, spec.id.worker), []).append(spec)
    return list(groups.values())


def _instances(matched: dict[WorkerKey, frozenset[int]]) -> list[InstanceId]:
    return [
        InstanceId(app, worker, number)
        for (app, worker), numbers in sorted(matched.items())
        for number in sorted(numbers)
    ]


def _names(matched: dict[WorkerKey, frozenset[int]]) -> list[str]:
    return [str(instance) for instance in _instances(matched)]


# -- entry point ---------------------------------------------------------------------------


def choose_backend(name: str, config: Config) -> Backend:
    """The backend asked for; `auto` takes systemd when the host was booted with it."""
    if name in ("auto", "systemd") and systemd_booted():
        # Imported only here: the libcgroup path must work without pystemd installed.
        try:
            from pazuzu.backends import systemd
        except ImportError as exc:
            raise PazuzuError(
                f"this host runs systemd, but pystemd cannot be imported: {exc}",
                hint="install pystemd (pip install pystemd; it needs libsystemd-dev and "
                "pkg-config), or use --backend cgexec",
            ) from exc
        return systemd.SystemdBackend(prefix=config.cgroups.hierarchy_root)
    if name == "systemd":
        raise PazuzuError(
            "--backend systemd: this host was not booted with systemd (/run/systemd/system "
            "is missing)",
            hint="use --backend cgexec (libcgroup) on hosts without systemd",
        )
    from pazuzu.backends import cgexec

    problem = cgexec.is_available(config.cgroups)
    if problem is not None:
        where = "this host has no systemd, and " if name == "auto" else ""
        raise PazuzuError(f"{where}the libcgroup backend cannot run: {problem}")
    logs = config.worker_logs
    return cgexec.CgexecBackend(
        config.cgroups,
        log_dir=logs.directory,
        run_dir=Path("/run") / config.cgroups.hierarchy_root,
        log_max_bytes=logs.max_bytes,
        log_keep=logs.keep,
    )


def daemonize(pid_path: Path | None) -> int:
    """Detach the classic way (fork, setsid, fork) and write the pid file.

    The process that was started stays until the daemon is ready, then exits 0 — or prints
    the daemon's error and exits 1 — so that an init script knows how the start went. Returns
    the pipe on which the daemon says so (see Notifier).
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _report_start(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    if pid_path is not None:
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = pid_path.with_name(f".{pid_path.name}.{os.getpid()}")
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(pid_path)
    return write_end


def _report_start(read_end: int) -> NoReturn:
    message = b""
    while chunk := os.read(read_end, 65536):
        message += chunk
    if message.startswith(b"READY"):
        os._exit(0)
    sys.stderr.write(message.decode(errors="replace") or "pazuzud: exited before it was ready\n")
    sys.stderr.flush()
    os._exit(1)


def _detached_log_path() -> str:
    """Where a detached daemon logs when log_path is not set: syslog if there is one."""
    return "syslog" if Path("/dev/log").exists() else "/var/log/pazuzud.log"


def _setup_logging(config: Config, debug: bool) -> None:
    handler: logging.Handler
    if config.log_path == "syslog":
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("pazuzud[%(process)d]: %(message)s"))
    elif config.log_path:
        handler = logging.FileHandler(config.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s pazuzud[%(process)d] %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option("Configuration file")
@click.option(
    "--backend",
    type=click.Choice(["auto", "systemd", "cgexec"]),
    default="auto",
    show_default=True,
    help="Where instances run: systemd units, or libcgroup cgroups.",
)
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), help="Control socket.")
@click.option(
    "-d", "--daemon", "detach", is_flag=True, help="Detach into the background (no systemd)."
)
@click.option(
    "-p",
    "--pid",
    "pid_path",
    type=click.Path(path_type=Path),
    help="With --daemon: write the daemon's pid to this file.",
)
@click.option("--debug", is_flag=True, help="Verbose logging, tracebacks included.")
@click.version_option(__version__, prog_name="pazuzud")
def main(  # noqa: PLR0917 -- click passes every option as a parameter
    config_path: Path,
    backend: str,
    socket_path: Path | None,
    detach: bool,
    pid_path: Path | None,
    debug: bool,
) -> None:
    """Supervise the applications of a pazuzu configuration."""
    ready_fd: int | None = None
    try:
        config = load_config(config_path.absolute())
        if detach and config.log_path is None:
            config = replace(config, log_path=_detached_log_path())  # stderr is gone
        chosen = choose_backend(backend, config)
        if detach:
            ready_fd = daemonize(pid_path.absolute() if pid_path else None)
        _setup_logging(config, debug)
        supervisor = Supervisor(config_path.absolute(), config, chosen, ready_fd)
        asyncio.run(supervisor.run(socket_path or config.socket_path))
    except PazuzuError as error:
        text = f"pazuzud: {error}\n" + (f"hint: {error.hint}\n" if error.hint else "")
        if ready_fd is not None:
            logging.getLogger("pazuzud").error("%s", error)
            _write_quietly(ready_fd, text.encode())
        click.echo(text, err=True, nl=False)
        if debug:
            raise
        sys.exit(1)


def _write_quietly(fd: int, data: bytes) -> None:
    """Tell the waiting parent why we failed; it may be gone already."""
    with contextlib.suppress(OSError):
        os.write(fd, data)
