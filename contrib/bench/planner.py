"""The planner's cost for one worker of 10 .. 10,000 instances.

`plan` is what every reconcile runs; `desired_instances` runs again only when the configuration
or the formation change (the daemon caches its result), so it is reported on a row of its own.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pazuzu.config import load_config
from pazuzu.model import InstanceState, ObservedInstance, WorkerFormation
from pazuzu.plan import desired_instances, plan

from .common import log
from .stats import Results

SIZES = (10, 100, 1000, 10_000)


def run(results: Results, reps: int) -> None:
    log("planner: 10 .. 10,000 instances")
    with tempfile.TemporaryDirectory(prefix="pazuzu-bench-") as tmp:
        root = Path(tmp)
        (root / "app").mkdir()
        (root / "app" / "Procfile").write_text("web: exec /bin/sleep 86400\n")
        (root / "pazuzu.conf").write_text(
            f"state_path: {root}/state.json\napplications:\n  app:\n    procfile: {root}/app\n"
        )
        config = load_config(root / "pazuzu.conf")
        for size in SIZES:
            formation = {("app", "web"): WorkerFormation(count=size, configured=1)}
            desired = desired_instances(config, formation)
            # The steady state: every instance observed running with its definition.
            observed = {
                i: ObservedInstance(id=i, state=InstanceState.RUNNING, fingerprint=s.fingerprint)
                for i, s in desired.items()
            }
            for _ in range(max(reps, 5)):
                # What every reconcile runs: the daemon keeps the desired set until the
                # configuration or the formation change.
                t0 = time.perf_counter()
                actions = plan(desired, observed)
                results.add(f"plan.{size}", "ms", (time.perf_counter() - t0) * 1000)
                assert not actions, "the steady state needs no action"
                # What a scale, stop, start or reload adds: the desired set built again.
                t0 = time.perf_counter()
                desired_instances(config, formation)
                results.add(f"desired.{size}", "ms", (time.perf_counter() - t0) * 1000)
