"""Chaos: SIGKILL pazuzud at random moments of scale, reload, restart, stop and start; check.

After each round pazuzud is started again and, once it reported READY=1, the ground truth must
match its formation exactly: every instance that should run has exactly one worker process in
its own cgroup, nothing else runs (no duplicate, no orphan, no stray unit or cgroup), and the
state file parses. Used by the short test in test_chaos.py and, for a longer soak, as

    python -m tests.integration.chaos --backend cgexec --rounds 300
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.container import VENV
from tests.integration.deployment import Deployment, Target
from tests.integration.host import HostDeployment, pid_alive

# A command line no other process on the machine has: its processes are the workers.
WORKER = "sleep 86399"
OPERATIONS = ("scale", "scale", "reload", "restart", "rolling", "stop-start")


@dataclass
class Tally:
    rounds: int = 0
    faults: int = 0  # SIGKILLs of pazuzud
    violations: list[str] = field(default_factory=list)

    def row(self, backend: str) -> str:
        return f"| {backend} | {self.rounds} | {self.faults} | {len(self.violations)} |"


def setup(deployment: Target, web: int = 2) -> None:
    deployment.write_procfile("chaos", f"web: exec {WORKER}\nqueue: exec {WORKER}\n")
    configure(deployment, web=web, command_suffix="")


def configure(deployment: Target, *, web: int, command_suffix: str) -> None:
    deployment.write_procfile(
        "chaos", f"web: exec {WORKER}{command_suffix}\nqueue: exec {WORKER}\n"
    )
    deployment.write_config(
        f"applications:\n  chaos:\n    procfile: {deployment.app_dir('chaos')}\n"
        f"    stop_timeout: 2\n    workers:\n      web:\n        num_instances: {web}\n"
    )


def worker_processes(deployment: Target) -> set[int]:
    """Every live process running the worker command, wherever it is."""
    if isinstance(deployment, Deployment):
        out = deployment.sh(f"pgrep -f '^sleep {WORKER.split()[1]}'", check=False).stdout
        return {int(pid) for pid in out.split()}
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        if cmdline.startswith(WORKER.encode()) and pid_alive(int(proc.name)):
            found.add(int(proc.name))
    return found


def one_round(deployment: Target, rng: random.Random, tally: Tally) -> None:
    operation = rng.choice(OPERATIONS)
    if operation == "scale":
        args = ["scale", f"chaos.web={rng.randint(0, 5)}"]
    elif operation == "reload":
        configure(deployment, web=rng.randint(0, 4), command_suffix=rng.choice(["", " "]))
        args = ["reload"]
    elif operation == "restart":
        args = ["restart", "chaos"]
    elif operation == "rolling":
        args = ["restart", "--rolling", "chaos.web"]
    else:
        args = [rng.choice(["stop", "start"]), rng.choice(["chaos", "chaos.web", "chaos.queue.1"])]
    client = _cli_in_background(deployment, args)
    # Not a wait for a condition: this delay *is* the fault's timing, random by design.
    time.sleep(rng.uniform(0.0, 0.3))
    deployment.kill_daemon(signal.SIGKILL)
    tally.faults += 1
    client.wait(timeout=60)
    deployment.start_daemon()
    tally.rounds += 1
    for problem in check(deployment):
        tally.violations.append(f"round {tally.rounds} ({' '.join(args)}): {problem}")


def _cli_in_background(deployment: Target, args: list[str]) -> subprocess.Popen[bytes]:
    argv = [str(VENV / "bin" / "pazuzu"), "--socket", str(_socket(deployment)), *args]
    if isinstance(deployment, Deployment):
        return subprocess.Popen(
            deployment.container._nsenter(argv, None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=deployment.container.environment(),
        )
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _socket(deployment: Target) -> Path:
    assert isinstance(deployment, Deployment | HostDeployment)
    return deployment.socket_path


def check(deployment: Target) -> list[str]:
    """The invariants after a restart: ground truth equals the formation, state file parses."""
    problems = []
    status = deployment.status()
    should_run = {
        f"{app['name']}.{worker['name']}.{instance['number']}"
        for app in status["applications"]
        for worker in app["workers"]
        for instance in worker["instances"]
        if instance["should_run"]
    }
    running = deployment.running()
    if running != should_run:
        problems.append(f"running {sorted(running)} but formation {sorted(should_run)}")
    workers = worker_processes(deployment)
    if len(workers) != len(should_run):
        problems.append(f"{len(workers)} worker processes for {len(should_run)} instances")
    in_cgroups = deployment.all_worker_pids()
    orphans = workers - in_cgroups
    if orphans:
        problems.append(f"orphans outside any instance cgroup: {sorted(orphans)}")
    problems.extend(_state_problems(deployment, status))
    return problems


def _state_problems(deployment: Target, status: dict[str, object]) -> list[str]:
    assert isinstance(deployment, Deployment | HostDeployment)
    try:
        text = deployment.read_file(deployment.state_path)
    except FileNotFoundError:
        return []  # nothing persisted yet: the configured formation is in force
    try:
        saved = json.loads(text)
    except ValueError as exc:
        return [f"state file does not parse: {exc}"]
    if saved.get("version") != 1:
        return [f"state file has version {saved.get('version')!r}"]
    return []


def run(deployment: Target, rounds: int, seed: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    setup(deployment)
    deployment.start_daemon()
    for _ in range(rounds):
        one_round(deployment, rng, tally)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["cgexec", "systemd"], default="cgexec")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    options = parser.parse_args()
    started = time.monotonic()
    if options.backend == "cgexec":
        deployment: Target = HostDeployment()
        container = None
    else:
        from tests.integration.container import Container

        container = Container().start()
        systemd = Deployment(container)
        systemd.install_service()
        deployment = systemd
    try:
        tally = run(deployment, options.rounds, options.seed)
    finally:
        deployment.cleanup()
        if container is not None:
            container.stop()
    print(f"seed {options.seed}, {time.monotonic() - started:.0f} s")
    print("| backend | rounds | faults injected | invariant violations |")
    print("|---|---|---|---|")
    print(tally.row(options.backend))
    for violation in tally.violations:
        print(f"- {violation}")
    raise SystemExit(1 if tally.violations else 0)


if __name__ == "__main__":
    main()
