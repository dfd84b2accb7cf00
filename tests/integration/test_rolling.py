"""Readiness-gated rolling restarts, on both backends: `notify: true` workers and READY=1."""

from __future__ import annotations

from pathlib import Path

from tests.integration.deployment import Deployment, Target
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends

# A notify worker: logs `ready` and sends READY=1 to $NOTIFY_SOCKET from its main process (as
# sd_notify(3) does; systemd 252 drops a notification whose sender is already gone), then logs
# `stop` on SIGTERM.
WORKER = """\
import os, signal, socket, sys

events, dyno = sys.argv[1], os.environ["DYNO"]


def stop(_signum, _frame):
    with open(events, "a") as log:
        log.write(f"stop {dyno}\\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
with open(events, "a") as log:
    log.write(f"ready {dyno}\\n")
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    signal.pause()
"""


def notify_app(deployment: Target) -> None:
    """web: 1 s of start-up, then ready; refuses to start while a file `broken` exists."""
    directory = deployment.app_dir("roll")
    deployment.write_procfile(
        "roll",
        f"web: test -e {directory}/broken && exit 1; sleep 1; "
        f"exec python3 {directory}/worker.py {directory}/events\n",
    )
    write(deployment, directory / "worker.py", WORKER)
    deployment.write_config(
        f"applications:\n  roll:\n    procfile: {directory}\n    stop_timeout: 5\n"
        "    workers:\n      web:\n        num_instances: 3\n        notify: true\n"
        "        start_timeout: 20\n"
    )


def write(deployment: Target, path: Path, text: str) -> None:
    if isinstance(deployment, Deployment):
        deployment.container.write_file(path, text)
    else:
        path.write_text(text)


def events(deployment: Target) -> list[str]:
    return deployment.read_file(deployment.app_dir("roll") / "events").splitlines()


def test_start_waits_for_ready_and_a_rolling_restart_keeps_the_others_serving(
    deployment: Target,
) -> None:
    """Each replacement is READY before the next instance is stopped: never two down at once."""
    notify_app(deployment)
    deployment.start_daemon()
    # READY=1 came from every instance before pazuzud said it was ready itself.
    assert sorted(events(deployment)) == ["ready web.1", "ready web.2", "ready web.3"]
    before = {n: deployment.pid_of(f"roll.web.{n}") for n in (1, 2, 3)}

    deployment.cli("restart", "--rolling", "roll.web", timeout=120)
    roll = events(deployment)[3:]
    assert roll == [
        "stop web.1",
        "ready web.1",
        "stop web.2",
        "ready web.2",
        "stop web.3",
        "ready web.3",
    ]
    after = {n: deployment.pid_of(f"roll.web.{n}") for n in (1, 2, 3)}
    assert all(after[n] not in (0, before[n]) for n in (1, 2, 3))


def test_a_failing_replacement_halts_the_roll_and_leaves_the_rest_running(
    deployment: Target,
) -> None:
    """web.1's replacement exits before READY=1: restart fails, web.2 and web.3 are untouched."""
    notify_app(deployment)
    deployment.start_daemon()
    before = {n: deployment.pid_of(f"roll.web.{n}") for n in (2, 3)}
    write(deployment, deployment.app_dir("roll") / "broken", "")

    result = deployment.cli("restart", "--rolling", "roll.web", check=False, timeout=120)
    assert result.returncode == 1
    assert "roll.web.1" in result.stderr
    assert "READY=1" in result.stderr
    assert {n: deployment.pid_of(f"roll.web.{n}") for n in (2, 3)} == before
    assert "stop web.2" not in events(deployment)
