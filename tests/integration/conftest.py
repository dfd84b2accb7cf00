"""Fixtures for tests that need a booted systemd: see `container.py`."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.container import Container, nspawn_available
from tests.integration.host import HostDeployment, require_host


@pytest.fixture(scope="session")
def systemd_container() -> Iterator[Container]:
    """One booted systemd container for the whole session, stopped however the session ends.

    Skipped where systemd-nspawn cannot run; under CI (`CI=true`) that is a failure instead,
    so a machine that lost its tools cannot turn the systemd tests into silent skips.
    """
    reason = nspawn_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"systemd tests cannot run: {reason}", pytrace=False)
        pytest.skip(f"systemd tests need a booted container: {reason}")
    # start() registers stop() with atexit too, for exits that skip this finally.
    with Container() as container:
        yield container


@pytest.fixture
def host() -> Iterator[HostDeployment]:
    """A pazuzud deployment with the libcgroup backend on this host's cgroups, cleaned after."""
    require_host()
    deployment = HostDeployment()
    try:
        yield deployment
    finally:
        deployment.cleanup()
