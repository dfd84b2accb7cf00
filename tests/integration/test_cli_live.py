"""The CLI against a real pazuzud (libcgroup backend, this host): completion, colour, --watch."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.container import VENV, wait_until
from tests.integration.host import HostDeployment, require_host

pytestmark = pytest.mark.cgexec


@pytest.fixture
def shop() -> Iterator[HostDeployment]:
    """pazuzud supervising `shop`: web.1, web.2 and queue.1, ready; removed after the test."""
    require_host()
    deployment = HostDeployment()
    try:
        deployment.write_procfile("shop", "web: exec sleep 1000\nqueue: exec sleep 1000\n")
        deployment.write_config(
            f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n"
            "    workers:\n      web:\n        num_instances: 2\n"
        )
        deployment.start_daemon()
        wait_until(
            lambda: deployment.running() == {"shop.web.1", "shop.web.2", "shop.queue.1"},
            timeout=30,
            message="shop to run",
        )
        yield deployment
    finally:
        deployment.cleanup()


def complete(deployment: HostDeployment, *words: str) -> list[str]:
    """What bash gets for `pazuzu WORDS<TAB>`: the entry point run as the bash script runs it."""
    line = ["pazuzu", "--socket", str(deployment.socket_path), *words]
    result = subprocess.run(
        [str(VENV / "bin" / "pazuzu")],
        env={
            **os.environ,
            "_PAZUZU_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(line),
            "COMP_CWORD": str(len(line) - 1),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [entry.removeprefix("plain,") for entry in result.stdout.split()]


def test_specs_complete_from_the_running_daemon(shop: HostDeployment) -> None:
    """`pazuzu status sh<TAB>` offers the application, its workers and their instances."""
    assert complete(shop, "status", "sh") == [
        "shop",
        "shop.web",
        "shop.web.1",
        "shop.web.2",
        "shop.queue",
        "shop.queue.1",
    ]
    assert complete(shop, "stop", "shop.web.1", "shop.web.") == ["shop.web.2"]


def test_scale_completes_after_a_runtime_scale(shop: HostDeployment) -> None:
    """Completion follows the daemon: after `scale shop.web=3`, shop.web.3 is offered."""
    assert complete(shop, "scale", "shop.w") == ["shop.web="]
    shop.cli("scale", "shop.web=3")
    assert complete(shop, "restart", "shop.web.") == ["shop.web.1", "shop.web.2", "shop.web.3"]


def test_status_is_coloured_on_a_terminal_only(shop: HostDeployment) -> None:
    """On a pseudo-terminal `running` is green; through a pipe, or with NO_COLOR, plain text."""
    argv = [str(VENV / "bin" / "pazuzu"), "--socket", str(shop.socket_path), "status"]
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    assert "\x1b[32mrunning" in run_on_terminal(argv, env)
    assert "\x1b" not in run_on_terminal(argv, {**env, "NO_COLOR": "1"})
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True)
    assert "running" in piped.stdout
    assert "\x1b" not in piped.stdout


def test_watch_without_a_terminal_prints_successive_tables(shop: HostDeployment) -> None:
    """`status --watch` to a pipe prints one table per refresh, the instances in each."""
    result = shop.cli("status", "--watch", "--interval", "0.2", "--count", "3", "shop.web")
    frames = result.stdout.split("\n\nEvery ")
    assert len(frames) == 3
    for frame in frames:
        assert "shop.web (2/2)" in frame
        assert frame.count("running") == 2


def run_on_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run `argv` with its stdout on a pseudo-terminal; return what it wrote there."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(argv, env=env, stdout=terminal, stderr=subprocess.DEVNULL)
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=30)
    finally:
        os.close(controller)
    return output.decode()
