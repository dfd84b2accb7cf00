"""Figures of the systemd backend, inside the booted systemd container the tests use."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.integration.container import Container
from tests.integration.deployment import Deployment

from .common import (
    MARK_PAZUZU_SYSTEMD,
    MARK_RAW_SYSTEMD,
    Options,
    app_config,
    cpu_over,
    cpu_seconds,
    log,
    measure_respawn,
    procfile,
    rss_mib,
    succeeded,
    wait_for,
)
from .procwatch import ProcWatch, pids_matching
from .stats import Results

RAW = "benchraw"
WEB = "bench.web"


class Bench:
    def __init__(self, container: Container, watch: ProcWatch, results: Results) -> None:
        self.container = container
        self.watch = watch
        self.results = results
        self.dep = Deployment(container)
        self.last_manager_cpu = 0.0

    def inside(self, *args: str, timeout: float = 180) -> dict[str, Any]:
        out = self.container.run(
            [self.container.python, "-m", "contrib.bench.inside", *args],
            cwd=str(self.container.checkout),
            env={"PYTHONPATH": str(self.container.checkout)},
            timeout=timeout,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def call(self, command: str, *args: str) -> dict[str, Any]:
        return self.inside("call", str(self.dep.socket_path), command, *args)

    def count_running(self, prefix: str) -> int:
        out = self.dep.sh(
            f"systemctl list-units '{prefix}@*.service' --state=running --plain --no-legend | wc -l"
        ).stdout
        return int(out.strip() or 0)

    def daemon_proc(self) -> Any:
        return self.container.host_path(f"/proc/{self.dep.daemon_pid()}")

    # -- formation helpers ---------------------------------------------------------------

    def scale(self, worker: str, count: int, marker: str | None = None) -> float:
        """Scale and return seconds until the reply and every new worker exec'd (kernel view)."""
        before = len(pids_matching(marker)) if marker else 0
        mark = self.watch.mark()
        out = self.call("scale", f"bench.{worker}={count}")
        end = out["t1"]
        if marker and count > before:
            born = self.watch.new_pids(marker, mark, count - before, timeout=30)
            if len(born) < count - before:
                raise RuntimeError(f"only {len(born)} of {count - before} new workers exec'd")
            end = max(end, *born.values())
        return float(end - out["t0"]) / 1e9

    def settle_web(self, count: int) -> None:
        wait_for(
            lambda: len(pids_matching(MARK_PAZUZU_SYSTEMD)) == count,
            60,
            f"{count} pazuzu workers alive",
        )

    def raw_start(self, count: int, first: int = 1) -> float:
        """Seconds for the raw loop to start `count` units; notes systemd's own CPU time."""
        manager = self.container.host_path("/proc/1")
        mark = self.watch.mark()
        cpu0 = cpu_seconds(manager)
        out = self.inside("raw-start", str(count), RAW, MARK_RAW_SYSTEMD, str(first))
        born = self.watch.new_pids(MARK_RAW_SYSTEMD, mark, count, timeout=120)
        if len(born) < count:
            raise RuntimeError(f"raw loop: only {len(born)} of {count} workers exec'd")
        # Everything systemd itself (PID 1) spent on these units: a floor for any client.
        self.last_manager_cpu = cpu_seconds(manager) - cpu0
        return float(max(out["t1"], *born.values()) - out["t0"]) / 1e9

    def raw_stop(self) -> float:
        out = self.inside("stop-unit", f"{RAW}.slice")
        wait_for(lambda: not pids_matching(MARK_RAW_SYSTEMD), 30, "raw units gone")
        return float(out["t1"] - out["t0"]) / 1e9

    # -- figures -------------------------------------------------------------------------

    def cold_start(self, options: Options) -> None:
        r = self.results
        for rep in range(options.reps):
            for size in options.sizes:
                log(f"systemd: rep {rep + 1}/{options.reps}: pazuzu scale 0 -> {size}")
                r.add(f"sd.start.{size}", "s", self.scale("web", size, MARK_PAZUZU_SYSTEMD))
                running = self.count_running("pazuzu-bench-web")
                if running != size:
                    r.notes.append(f"systemd: after scale to {size}, {running} units running")
                self.settle_web(size)
                if size == 100:
                    before = pids_matching(MARK_PAZUZU_SYSTEMD)
                    r.add("sd.scale150", "s", self.scale("web", 150, MARK_PAZUZU_SYSTEMD))
                    after = pids_matching(MARK_PAZUZU_SYSTEMD)
                    r.add("sd.scale150.replaced", "instances", len(before - after))
                    self.scale("web", 100)
                    self.settle_web(100)
                    out = self.call("stop", WEB)
                    r.add("sd.stop.100", "s", (out["t1"] - out["t0"]) / 1e9)
                    self.settle_web(0)
                    self.scale("web", 0)
                else:
                    self.scale("web", 0)
                    self.settle_web(0)
                log(f"systemd: rep {rep + 1}/{options.reps}: raw D-Bus loop, {size} units")
                r.add(f"sd.raw.{size}", "s", self.raw_start(size))
                r.add(f"sd.raw.{size}.pid1", "s", self.last_manager_cpu)
                if size == 100:
                    r.add("sd.raw150", "s", self.raw_start(50, first=101))
                stop = self.raw_stop()
                if size == 100:
                    r.add("sd.rawstop.100", "s", stop)

    def operator_start(self, options: Options) -> None:
        """`pazuzu scale bench.web=100` as typed: from the CLI's spawn until it exits, which
        it does once the daemon has every instance running."""
        cli = [f"{self.container.venv_bin}/pazuzu", "--socket", str(self.dep.socket_path)]
        for rep in range(options.reps):
            log(f"systemd: rep {rep + 1}/{options.reps}: the CLI's pazuzu scale 0 -> 100")
            out = self.inside("time-cmd", "1", *cli, "scale", f"{WEB}=100")
            [seconds] = succeeded(out, "pazuzu scale")
            running = self.count_running("pazuzu-bench-web")
            if running != 100:
                raise RuntimeError(f"pazuzu scale returned with {running} running")
            self.results.add("sd.start.cli.100", "s", seconds)
            self.settle_web(100)
            self.scale("web", 0)
            self.settle_web(0)

    def respawn(self, options: Options) -> None:
        log(f"systemd: respawn, {options.kills} kills each of pazuzu and Restart=always")
        self.scale("web", 100, MARK_PAZUZU_SYSTEMD)
        self.settle_web(100)
        self.raw_start(options.kills)
        try:
            measure_respawn(
                self.watch, self.results, "sd.respawn", MARK_PAZUZU_SYSTEMD, options.kills
            )
            measure_respawn(
                self.watch, self.results, "sd.rawrespawn", MARK_RAW_SYSTEMD, options.kills
            )
        finally:
            self.raw_stop()

    def status(self) -> None:
        """With 100 instances running."""
        log("systemd: status round trips")
        cli = [f"{self.container.venv_bin}/pazuzu", "--socket", str(self.dep.socket_path), "status"]
        for seconds in succeeded(self.inside("time-cmd", "10", *cli), "pazuzu status"):
            self.results.add("sd.status.cli", "ms", seconds * 1000)
        systemctl = ["systemctl", "status", "--no-pager", "-n0", "pazuzu-bench-web@*.service"]
        for seconds in succeeded(self.inside("time-cmd", "10", *systemctl), "systemctl status"):
            self.results.add("sd.status.systemctl", "ms", seconds * 1000)
        for _ in range(5):
            out = self.call("status")
            self.results.add("sd.status.rpc", "ms", (out["t1"] - out["t0"]) / 1e6)
        self.results.add("sd.rss.100", "MiB", rss_mib(self.daemon_proc()))

    def big_formation(self, options: Options) -> None:
        big = options.big
        log(f"systemd: {big} instances: RSS, idle CPU over {options.idle_window:g} s, re-attach")
        self.scale("web", big, MARK_PAZUZU_SYSTEMD)
        self.settle_web(big)
        self.results.add(f"sd.rss.{big}", "MiB", rss_mib(self.daemon_proc()))
        self.results.add(
            f"sd.idle.{big}",
            "s/60s",
            cpu_over(self.daemon_proc(), options.idle_window) * 60 / options.idle_window,
        )
        for _ in range(min(options.reps, 3)):
            before = pids_matching(MARK_PAZUZU_SYSTEMD)
            self.dep.kill_daemon()
            self.dep.start_daemon()
            shown = self.dep.sh(
                "systemctl show -p ExecMainStartTimestampMonotonic"
                " -p ActiveEnterTimestampMonotonic pazuzud"
            ).stdout
            props = dict(line.split("=", 1) for line in shown.split())
            seconds = (
                int(props["ActiveEnterTimestampMonotonic"])
                - int(props["ExecMainStartTimestampMonotonic"])
            ) / 1e6
            self.results.add(f"sd.reattach.{big}", "s", seconds)
            after = pids_matching(MARK_PAZUZU_SYSTEMD)
            self.results.add("sd.reattach.restarted", "instances", len(before - after))
        self.scale("web", 0)
        self.settle_web(0)

    def output_cpu(self, options: Options) -> None:
        for worker, count in (("chatty", 100), ("flood", 1)):
            log(f"systemd: daemon CPU with {count} {worker} worker(s)")
            self.scale(worker, count)
            prefix = f"pazuzu-bench-{worker}"
            wait_for(lambda: self.count_running(prefix) == count, 60, prefix)  # noqa: B023
            used = cpu_over(self.daemon_proc(), options.cpu_window)
            self.results.add(f"sd.cpu.{worker}", "%", 100 * used / options.cpu_window)
            self.scale(worker, 0)


def run(watch: ProcWatch, results: Results, options: Options) -> None:
    log("systemd: booting the container")
    container = Container()
    try:
        container.start()
        bench = Bench(container, watch, results)
        try:
            bench.dep.install_service()
            directory = bench.dep.write_procfile("bench", procfile(MARK_PAZUZU_SYSTEMD))
            bench.dep.write_config(app_config(directory))
            bench.dep.start_daemon()
            bench.cold_start(options)
            bench.operator_start(options)
            bench.respawn(options)
            bench.status()
            bench.scale("web", 0)
            bench.settle_web(0)
            bench.big_formation(options)
            bench.output_cpu(options)
        finally:
            try:
                bench.dep.cleanup()
                bench.dep.sh(f"systemctl stop {RAW}.slice", check=False)
            except (subprocess.SubprocessError, OSError) as exc:
                log(f"systemd: cleanup inside the container failed ({exc}); stopping it anyway")
    finally:
        container.stop()
