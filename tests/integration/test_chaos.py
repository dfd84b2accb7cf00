"""A short chaos run on each backend: SIGKILL pazuzud mid-operation, restart it, check.

The long soak is `python -m tests.integration.chaos --backend cgexec --rounds 300`.
"""

from __future__ import annotations

import random

from tests.integration import chaos
from tests.integration.deployment import Target
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends

ROUNDS = 12


def test_killing_the_daemon_mid_operation_never_breaks_the_formation(deployment: Target) -> None:
    """Every round: the running instances are exactly the formation, once each, no orphans."""
    seed = random.randrange(1 << 30)
    tally = chaos.run(deployment, rounds=ROUNDS, seed=seed)
    print(f"\nseed {seed}\n| backend | rounds | faults | violations |\n|---|---|---|---|")
    print(tally.row(deployment.backend))
    assert tally.rounds == ROUNDS
    assert tally.faults == ROUNDS
    assert tally.violations == [], f"seed {seed}: " + "\n".join(tally.violations)
