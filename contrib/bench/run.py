"""pazuzu's benchmark: `make bench` (or `python -m contrib.bench.run [--quick] [--only ...]`).

Measures pazuzu against the physical limit and against its peers in the same run on the same
machine, prints every figure as min / median / max with the ratio to its reference, and writes
the same table to contrib/bench/RESULTS.md. Needs root (containers, cgroups, the kernel's
process events). Never part of the test suite: no test asserts on a time.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import host_figures, peers, planner, systemd_figures
from .common import MARKERS, Options, log
from .procwatch import ProcWatch
from .stats import Figure, Results, Series, evaluate, markdown_table

GROUPS = ("planner", "peers", "libcg", "systemd")
PREFIXES = {
    "planner": ("plan.", "desired."),
    "peers": ("supervisord.", "circus."),
    "libcg": ("cg.",),
    "systemd": ("sd.",),
}
DEFAULT_OUTPUT = Path(__file__).with_name("RESULTS.md")


def at_most(limit: float) -> Callable[[Series, Series | None], bool]:
    return lambda mine, _ref: mine.median <= limit


def none_ever(mine: Series, _ref: Series | None) -> bool:
    return max(mine.values) == 0


def ratio_at_most(
    factor: float, plus: float = 0.0
) -> Callable[[Series, Series | None], bool | None]:
    return lambda mine, ref: None if ref is None else mine.median <= factor * ref.median + plus


def faster_by(factor: float) -> Callable[[Series, Series | None], bool | None]:
    return lambda mine, ref: None if ref is None else ref.median >= factor * mine.median


def figures(big: int) -> list[Figure]:
    f = Figure
    rows = [
        f(
            "scale 0->100, systemd",
            "sd.start.100",
            "sd.raw.100",
            "raw D-Bus loop",
            "<= 1.3x raw loop",
            ratio_at_most(1.3),
        ),
        f(
            f"scale 0->{big}, systemd",
            f"sd.start.{big}",
            f"sd.raw.{big}",
            "raw D-Bus loop",
            "<= 1.3x raw loop",
            ratio_at_most(1.3),
        ),
        f(
            "scale 0->100 (last exec), systemd vs supervisord",
            "sd.start.100",
            "supervisord.start.100",
            "supervisord numprocs=100",
            ">= 5x faster",
            faster_by(5),
        ),
        f(
            "scale 0->100, systemd vs circus",
            "sd.start.100",
            "circus.start.100",
            "circus start (numprocesses=100)",
            "(no target)",
            None,
        ),
        f(
            "scale 0->100 (last exec), libcg vs supervisord",
            "cg.start.100",
            "supervisord.start.100",
            "supervisord numprocs=100",
            ">= 5x faster",
            faster_by(5),
        ),
        f(
            "systemd's own CPU (PID 1) for the raw loop's 100 units, vs supervisord's start",
            "sd.raw.100.pid1",
            "supervisord.start.100",
            "supervisord numprocs=100 (last exec)",
            "(none: a floor for any client; 5x faster is 0.20x)",
            None,
        ),
        f(
            "scale 0->100 as typed (CLI exits, all running), systemd vs supervisord",
            "sd.start.cli.100",
            "supervisord.start.cli.100",
            "`supervisorctl start web:*` (exits once all RUNNING, startsecs=1)",
            ">= 5x faster",
            faster_by(5),
        ),
        f(
            "scale 0->100 as typed (CLI exits, all running), libcg vs supervisord",
            "cg.start.cli.100",
            "supervisord.start.cli.100",
            "`supervisorctl start web:*` (exits once all RUNNING, startsecs=1)",
            ">= 5x faster",
            faster_by(5),
        ),
        f(
            "scale 100->150, systemd vs D-Bus limit",
            "sd.scale150",
            "sd.raw150",
            "raw D-Bus loop, 50 more units",
            "<= 0.3 s",
            at_most(0.3),
        ),
        f(
            "scale 100->150, systemd vs circus",
            "sd.scale150",
            "circus.scale150",
            "circus incr 50",
            "<= 0.3 s",
            at_most(0.3),
        ),
        f(
            "scale 100->150, systemd: existing instances replaced",
            "sd.scale150.replaced",
            None,
            "",
            "0",
            none_ever,
        ),
        f(
            "scale 100->150, libcg",
            "cg.scale150",
            "circus.scale150",
            "circus incr 50",
            "<= 0.3 s",
            at_most(0.3),
        ),
        f(
            "scale 100->150, libcg: existing instances replaced",
            "cg.scale150.replaced",
            None,
            "",
            "0",
            none_ever,
        ),
        f(
            "stop 100, systemd",
            "sd.stop.100",
            "sd.rawstop.100",
            "one StopUnit on the slice",
            "<= 1.5x StopUnit",
            ratio_at_most(1.5),
        ),
        f("stop 100, libcg", "cg.stop.100", None, "", "(no target)", None),
        f(
            "respawn after SIGKILL, systemd",
            "sd.respawn",
            "sd.rawrespawn",
            "Restart=always RestartSec=0",
            "<= reference + 20 ms",
            ratio_at_most(1.0, 20.0),
        ),
        f("respawn after SIGKILL, libcg", "cg.respawn", None, "", "<= 50 ms", at_most(50.0)),
        f(
            "respawn, systemd vs supervisord",
            "sd.respawn",
            "supervisord.respawn",
            "supervisord (defaults)",
            ">= 10x faster",
            faster_by(10),
        ),
        f(
            "respawn, systemd vs circus",
            "sd.respawn",
            "circus.respawn",
            "circus (defaults)",
            ">= 10x faster",
            faster_by(10),
        ),
        f(
            "respawn, libcg vs supervisord",
            "cg.respawn",
            "supervisord.respawn",
            "supervisord (defaults)",
            ">= 10x faster",
            faster_by(10),
        ),
        f(
            "respawn, libcg vs circus",
            "cg.respawn",
            "circus.respawn",
            "circus (defaults)",
            ">= 10x faster",
            faster_by(10),
        ),
        f(
            f"re-attach with {big}: SIGKILL, start, READY=1, systemd",
            f"sd.reattach.{big}",
            None,
            "",
            "<= 0.5 s",
            at_most(0.5),
        ),
        f(
            "re-attach, systemd: instances restarted",
            "sd.reattach.restarted",
            None,
            "",
            "0",
            none_ever,
        ),
        f(
            f"re-attach with {big}: SIGKILL, start, READY=1, libcg",
            f"cg.reattach.{big}",
            None,
            "",
            "<= 0.5 s",
            at_most(0.5),
        ),
        f(
            "re-attach, libcg: instances restarted",
            "cg.reattach.restarted",
            None,
            "",
            "0",
            none_ever,
        ),
        f(
            f"idle CPU with {big}, systemd",
            f"sd.idle.{big}",
            None,
            "",
            "<= 0.02 s/60 s",
            at_most(0.02),
        ),
        f(
            f"idle CPU with {big}, libcg",
            f"cg.idle.{big}",
            None,
            "",
            "<= 0.02 s/60 s",
            at_most(0.02),
        ),
        f(
            f"RSS with {big}, systemd",
            f"sd.rss.{big}",
            "supervisord.rss.100",
            "supervisord with 100",
            "<= 30 MiB",
            at_most(30.0),
        ),
        f(
            f"RSS with {big}, systemd vs circus",
            f"sd.rss.{big}",
            "circus.rss.100",
            "circus with 100",
            "<= 30 MiB",
            at_most(30.0),
        ),
        f(
            f"RSS with {big}, libcg",
            f"cg.rss.{big}",
            "supervisord.rss.100",
            "supervisord with 100",
            "<= 30 MiB",
            at_most(30.0),
        ),
        f(
            "`pazuzu status` with 100 (CLI process), systemd",
            "sd.status.cli",
            "sd.status.systemctl",
            "systemctl status (100 units)",
            "<= 60 ms",
            at_most(60.0),
        ),
        f(
            "`pazuzu status` with 100 (CLI process), libcg",
            "cg.status.cli",
            "supervisord.status.cli",
            "supervisorctl status (100 processes)",
            "<= 60 ms",
            at_most(60.0),
        ),
        f(
            "`pazuzu status` with 100 (CLI process), libcg vs circus",
            "cg.status.cli",
            "circus.status.cli",
            "circusctl status",
            "(<= 60 ms)",
            at_most(60.0),
        ),
        f(
            "status round trip with 100 (socket only), systemd",
            "sd.status.rpc",
            None,
            "",
            "(<= 60 ms)",
            at_most(60.0),
        ),
        f(
            "status round trip with 100 (socket only), libcg",
            "cg.status.rpc",
            None,
            "",
            "(<= 60 ms)",
            at_most(60.0),
        ),
        f(
            "planner (each reconcile), 10,000 instances",
            "plan.10000",
            "plan.1000",
            "1,000 instances",
            "<= 50 ms, linear (<= 15x of 1,000: 10x is linear, the rest noise)",
            lambda m, r: None if r is None else m.median <= 50 and m.median <= 15 * r.median,
        ),
        f("planner, 1,000 instances", "plan.1000", "plan.100", "100 instances", "linear", None),
        f("planner, 100 instances", "plan.100", "plan.10", "10 instances", "linear", None),
        f(
            "desired set rebuilt (scale, reload), 10,000 instances",
            "desired.10000",
            "desired.1000",
            "1,000 instances",
            "linear (<= 15x of 1,000: 10x is linear, the rest noise)",
            lambda m, r: None if r is None else m.median <= 15 * r.median,
        ),
        f(
            "daemon CPU, 1 worker writing 10 MB/s, systemd",
            "sd.cpu.flood",
            None,
            "",
            "<= 5 %",
            at_most(5.0),
        ),
        f(
            "daemon CPU, 1 worker writing 10 MB/s, libcg",
            "cg.cpu.flood",
            None,
            "",
            "<= 5 %",
            at_most(5.0),
        ),
        f(
            "daemon CPU, 100 workers writing a line / 10 ms, systemd",
            "sd.cpu.chatty",
            None,
            "",
            "(<= 5 %)",
            at_most(5.0),
        ),
        f(
            "daemon CPU, 100 workers writing a line / 10 ms, libcg",
            "cg.cpu.chatty",
            None,
            "",
            "(<= 5 %)",
            at_most(5.0),
        ),
    ]
    unique = {(row.title, row.reference_key): row for row in rows}  # with --quick, big is 100
    return list(unique.values())


def machine() -> str:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(
                argv, check=False, capture_output=True, text=True, timeout=10
            ).stdout
        except OSError:
            return "?"
        return out.splitlines()[0] if out else "?"

    return (
        f"{os.cpu_count()} CPUs (nproc {first_line(['nproc'])}), kernel {platform.release()}, "
        f"{first_line(['systemctl', '--version'])}, Python {platform.python_version()}, "
        f"{first_line(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}"
    )


def revision() -> str:
    """The pazuzu under test: commit, and whether pazuzu/ had uncommitted changes."""
    checkout = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(checkout), *args],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except OSError:
            return ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = " + uncommitted changes in pazuzu/" if git("status", "--porcelain", "pazuzu") else ""
    return head + dirty


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench BENCH_ARGS=...", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 100 not 500")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}"
    )
    parser.add_argument("--reps", type=int, help="repetitions of the start/stop figures")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown report")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {', '.join(sorted(unknown))}; known: {', '.join(GROUPS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("bench: needs root (containers, cgroups, process events)", file=sys.stderr)
        return 1
    options = Options(
        quick=args.quick,
        reps=args.reps or (3 if args.quick else 5),
        big=100 if args.quick else 500,
        kills=10 if args.quick else 30,
        idle_window=15.0 if args.quick else 60.0,
        cpu_window=5.0 if args.quick else 10.0,
        sizes=(100,) if args.quick else (100, 500),
    )
    groups = args.only.split(",")
    # An installed pazuzu has its bytecode compiled (pip does it); the checkout may not, and
    # commands inside the container write none. Without this, `pazuzu status` would compile
    # the modules it loads on every call.
    compileall.compile_dir(str(Path(__file__).parents[2] / "pazuzu"), quiet=1)
    results = Results()
    started = time.monotonic()
    revision_before = revision()
    with ProcWatch(MARKERS) as watch:
        for group in GROUPS:
            if group not in groups:
                continue
            try:
                if group == "planner":
                    planner.run(results, options.reps)
                elif group == "peers":
                    peers.run(watch, results, options)
                elif group == "libcg":
                    host_figures.run(watch, results, options)
                else:
                    systemd_figures.run(watch, results, options)
            except Exception as exc:
                traceback.print_exc()
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:240]
                log(f"{group}: failed: {reason}")
                results.notes.append(f"{group}: stopped early: {reason}")
                _miss_group(results, group, options.big, f"the {group} group failed: {reason}")
    elapsed = time.monotonic() - started
    revisions = list(dict.fromkeys([revision_before, revision()]))
    for group in GROUPS:
        if group not in groups:
            _miss_group(results, group, options.big, f"{group} not selected (--only)")
    rows = evaluate(figures(options.big), results)
    table = markdown_table(rows)
    command = shlex.join(["python", "-m", "contrib.bench.run", *argv])
    header = (
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}  \n"
        f"Machine: {machine()}  \n"
        f"pazuzu: {' then '.join(revisions)}  \n"
        f"Command: `{command}` (what `make bench"
        + (f" BENCH_ARGS='{shlex.join(argv)}'" if argv else "")
        + f"` runs), {elapsed / 60:.1f} min"
    )
    notes = "\n".join(f"- {note}" for note in results.notes)
    print("\n" + header + "\n\n" + table + ("\n\nNotes:\n" + notes if notes else ""))
    if not args.no_report:
        text = args.output.read_text() if args.output.exists() else ""
        args.output.write_text(_report(text, header, table, notes))
        log(f"wrote {args.output}")
    return 0


def _miss_group(results: Results, group: str, big: int, reason: str) -> None:
    for figure in figures(big):
        for key in (figure.key, figure.reference_key):
            if key is not None and key.startswith(PREFIXES[group]):
                results.miss(key, reason)


_BEGIN = "<!-- bench:begin -->"
_END = "<!-- bench:end -->"


def _report(previous: str, header: str, table: str, notes: str) -> str:
    """The report: the measured part replaced between markers, any text around it kept."""
    body = f"{_BEGIN}\n{header}\n\n{table}\n" + (f"\nRun notes:\n{notes}\n" if notes else "")
    body += f"{_END}"
    if _BEGIN in previous and _END in previous:
        before, _, rest = previous.partition(_BEGIN)
        _, _, after = rest.partition(_END)
        return before + body + after
    return "# pazuzu benchmark results\n\n" + body + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
