"""Faults the daemon must ride out, on both backends."""

from __future__ import annotations

import os
import signal

from tests.integration.container import wait_until
from tests.integration.deployment import Deployment, Target
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends

COUNT = 100


def test_a_hundred_instances_crashing_at_once_all_come_back(deployment: Target) -> None:
    """SIGKILL of 100 instances at the same moment: 100 new processes, one per instance."""
    deployment.write_procfile("herd", "web: exec sleep 1000\n")
    deployment.write_config(
        f"applications:\n  herd:\n    procfile: {deployment.app_dir('herd')}\n"
        f"    workers:\n      web:\n        num_instances: {COUNT}\n"
    )
    deployment.start_daemon()
    expected = {f"herd.web.{n}" for n in range(1, COUNT + 1)}
    assert deployment.running() == expected
    before = deployment.all_worker_pids()
    assert len(before) == COUNT
    if isinstance(deployment, Deployment):
        deployment.sh("kill -KILL " + " ".join(str(pid) for pid in before))
    else:
        for pid in before:
            os.kill(pid, signal.SIGKILL)

    def recovered() -> bool:
        pids = deployment.all_worker_pids()
        return deployment.running() == expected and len(pids) == COUNT and not pids & before

    wait_until(recovered, timeout=60, message="all 100 instances respawned")
    assert not any(deployment.pid_exists(pid) for pid in before)
    assert deployment.cli("status", "herd").returncode == 0  # every instance running again
