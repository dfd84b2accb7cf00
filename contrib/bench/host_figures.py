"""Figures of the libcgroup backend, pazuzud on this host's cgroups (tests' HostDeployment)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pazuzu import client, protocol
from tests.integration.host import HostDeployment

from .common import (
    MARK_PAZUZU_LIBCG,
    Options,
    app_config,
    cpu_over,
    log,
    measure_respawn,
    procfile,
    rss_mib,
    succeeded,
    wait_for,
)
from .inside import time_cmd
from .procwatch import ProcWatch, pids_matching
from .stats import Results


class Bench:
    def __init__(self, watch: ProcWatch, results: Results) -> None:
        self.watch = watch
        self.results = results
        self.dep = HostDeployment()

    def scale(self, worker: str, count: int, marker: str | None = None) -> float:
        before = len(pids_matching(marker)) if marker else 0
        mark = self.watch.mark()
        t0 = time.monotonic_ns()
        client.call(
            self.dep.socket_path, protocol.Command.SCALE, changes=[f"bench.{worker}={count}"]
        )
        end = time.monotonic_ns()
        if marker and count > before:
            born = self.watch.new_pids(marker, mark, count - before, timeout=30)
            if len(born) < count - before:
                raise RuntimeError(f"only {len(born)} of {count - before} new workers exec'd")
            end = max(end, *born.values())
        return (end - t0) / 1e9

    def settle_web(self, count: int) -> None:
        wait_for(lambda: len(pids_matching(MARK_PAZUZU_LIBCG)) == count, 60, f"{count} workers")

    def proc(self) -> Path:
        return Path(f"/proc/{self.dep.daemon_pid()}")

    def cold_start(self, options: Options) -> None:
        for rep in range(options.reps):
            log(f"libcg: rep {rep + 1}/{options.reps}: pazuzu scale 0 -> 100")
            self.results.add("cg.start.100", "s", self.scale("web", 100, MARK_PAZUZU_LIBCG))
            self.settle_web(100)
            before = pids_matching(MARK_PAZUZU_LIBCG)
            self.results.add("cg.scale150", "s", self.scale("web", 150, MARK_PAZUZU_LIBCG))
            after = pids_matching(MARK_PAZUZU_LIBCG)
            self.results.add("cg.scale150.replaced", "instances", len(before - after))
            self.scale("web", 100)
            self.settle_web(100)
            t0 = time.monotonic_ns()
            client.call(self.dep.socket_path, protocol.Command.STOP, specs=["bench.web"])
            self.results.add("cg.stop.100", "s", (time.monotonic_ns() - t0) / 1e9)
            self.settle_web(0)
            self.scale("web", 0)

    def operator_start(self, options: Options) -> None:
        """`pazuzu scale bench.web=100` as typed: from the CLI's spawn until it exits, which
        it does once the daemon has every instance running."""
        cli = [str(Path(sys.executable).with_name("pazuzu")), "--socket", str(self.dep.socket_path)]
        for rep in range(options.reps):
            log(f"libcg: rep {rep + 1}/{options.reps}: the CLI's pazuzu scale 0 -> 100")
            [seconds] = succeeded(time_cmd(1, [*cli, "scale", "bench.web=100"]), "pazuzu scale")
            running = len(pids_matching(MARK_PAZUZU_LIBCG))
            if running != 100:
                raise RuntimeError(f"pazuzu scale returned with {running} running")
            self.results.add("cg.start.cli.100", "s", seconds)
            self.scale("web", 0)
            self.settle_web(0)

    def respawn(self, options: Options) -> None:
        log(f"libcg: respawn, {options.kills} kills")
        self.scale("web", 100, MARK_PAZUZU_LIBCG)
        self.settle_web(100)
        measure_respawn(self.watch, self.results, "cg.respawn", MARK_PAZUZU_LIBCG, options.kills)
        for _ in range(5):
            t0 = time.monotonic_ns()
            client.call(self.dep.socket_path, protocol.Command.STATUS, specs=[])
            self.results.add("cg.status.rpc", "ms", (time.monotonic_ns() - t0) / 1e6)
        cli = [str(Path(sys.executable).with_name("pazuzu")), "--socket", str(self.dep.socket_path)]
        for seconds in succeeded(time_cmd(10, [*cli, "status"]), "pazuzu status"):
            self.results.add("cg.status.cli", "ms", seconds * 1000)
        self.results.add("cg.rss.100", "MiB", rss_mib(self.proc()))

    def big_formation(self, options: Options) -> None:
        big = options.big
        log(f"libcg: {big} instances: RSS, idle CPU over {options.idle_window:g} s, re-attach")
        self.scale("web", big, MARK_PAZUZU_LIBCG)
        self.settle_web(big)
        self.results.add(f"cg.rss.{big}", "MiB", rss_mib(self.proc()))
        used = cpu_over(self.proc(), options.idle_window)
        self.results.add(f"cg.idle.{big}", "s/60s", used * 60 / options.idle_window)
        for _ in range(min(options.reps, 3)):
            before = pids_matching(MARK_PAZUZU_LIBCG)
            self.dep.kill_daemon()
            t0 = time.monotonic()
            self.dep.start_daemon()
            self.results.add(f"cg.reattach.{big}", "s", time.monotonic() - t0)
            after = pids_matching(MARK_PAZUZU_LIBCG)
            self.results.add("cg.reattach.restarted", "instances", len(before - after))
        self.scale("web", 0)
        self.settle_web(0)

    def output_cpu(self, options: Options) -> None:
        for worker, count in (("chatty", 100), ("flood", 1)):
            log(f"libcg: daemon CPU with {count} {worker} worker(s)")
            self.scale(worker, count)
            time.sleep(1.0)
            used = cpu_over(self.proc(), options.cpu_window)
            self.results.add(f"cg.cpu.{worker}", "%", 100 * used / options.cpu_window)
            self.scale(worker, 0)


def run(watch: ProcWatch, results: Results, options: Options) -> None:
    bench = Bench(watch, results)
    try:
        directory = bench.dep.write_procfile("bench", procfile(MARK_PAZUZU_LIBCG))
        bench.dep.write_config(app_config(directory))
        bench.dep.start_daemon()
        bench.cold_start(options)
        bench.operator_start(options)
        bench.respawn(options)
        bench.scale("web", 0)
        bench.settle_web(0)
        bench.big_formation(options)
        bench.output_cpu(options)
    finally:
        bench.dep.cleanup()
