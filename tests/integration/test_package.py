"""The Debian package: `make deb` builds it, and it installs, runs and uninstalls in a booted
systemd, where removing it stops pazuzud but never a worker.

The test container shares the host's /usr read-only; here /usr gets a writable overlay whose
upper layer is thrown away with the container, so dpkg installs for real without touching the
host. The container's dpkg database is a copy of the host's, which describes that same /usr:
dependencies are checked against what is really installed. The host's packages keep their own
configuration in the host's /etc, which the container does not have; so the copy's
`statoverride` (naming host groups) is emptied, and dpkg runs with `--no-triggers`: pazuzu's
maintainer scripts all run, but other packages' reactions to its files (man-db's index, runit's
service conversion, which wants /etc/sv) do not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from pazuzu import __version__
from tests.integration.container import CHECKOUT, Container, nspawn_available, wait_until

pytestmark = pytest.mark.systemd

BUILD_DEB: Final = CHECKOUT / "contrib" / "debian" / "build-deb"
BUILD_TIMEOUT: Final = 600.0
# What an operator's shell finds: not the checkout's virtualenv, which Container puts first.
SYSTEM_PATH: Final = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
DEB_IN_CONTAINER: Final = Path("/root/pazuzu.deb")
DPKG: Final = "dpkg --no-triggers"  # see the module's docstring
EXAMPLE_CONF: Final = Path("/usr/share/doc/pazuzu/examples/conf.d/example.conf")
EXAMPLE_INSTANCES: Final = {"example.web.1", "example.web.2", "example.queue.1", "example.ticker.1"}


class OverlayUsrContainer(Container):
    """A Container whose /usr is the host's under a writable overlay, removed on stop()."""

    def __init__(self) -> None:
        super().__init__()
        # Where systemd-nspawn keeps the upper layers it makes itself: on the host's disk.
        self.overlay_root = Path(tempfile.mkdtemp(prefix="pazuzu-usr-", dir="/var/tmp"))
        (self.overlay_root / "upper").mkdir()

    def command(self) -> list[str]:
        cmd = super().command()
        boot = cmd.index("--boot")
        return [*cmd[:boot], f"--overlay=/usr:{self.overlay_root / 'upper'}:/usr", *cmd[boot:]]

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.overlay_root, ignore_errors=True)


def require_nspawn() -> None:
    """Skip where containers cannot run; under CI that is a failure (as in conftest.py)."""
    reason = nspawn_available()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"package tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"package tests need a booted container: {reason}")


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once per session by contrib/debian/build-deb."""
    require_nspawn()
    output = tmp_path_factory.mktemp("deb")
    with subprocess.Popen(
        [str(BUILD_DEB), "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as build:
        try:
            out, err = build.communicate(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)  # pip and unshare too, not only the script
            build.communicate()
            pytest.fail(f"build-deb took more than {BUILD_TIMEOUT:g} s")
    assert build.returncode == 0, f"build-deb failed:\n{err}"
    built = Path(out.strip().splitlines()[-1])
    architecture = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert built == output / f"pazuzu_{__version__}_{architecture}.deb"
    return built


@pytest.fixture(scope="module")
def container(deb: Path) -> Iterator[OverlayUsrContainer]:
    """A booted systemd with a writable /usr, the host's dpkg database and the package file."""
    box = OverlayUsrContainer()
    try:
        box.start()
        shutil.copytree("/var/lib/dpkg", box.host_path("/var/lib/dpkg"), symlinks=True)
        # The host's ownership overrides of its own packages' files name groups (ssl-cert)
        # that the container's fresh /etc lacks, and dpkg refuses to start over them.
        box.host_path("/var/lib/dpkg/statoverride").write_text("")
        # The host is a Docker-style image whose policy-rc.d forbids starting services, which a
        # Debian system does not have: remove it from this container's /usr (the overlay).
        box.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
        shutil.copyfile(deb, box.host_path(DEB_IN_CONTAINER))
        yield box
    finally:
        if box.running:
            # The workers outlive the package on purpose; the test's end is theirs.
            box.run(["systemctl", "stop", "pazuzu.slice"], check=False, timeout=60)
        box.stop()


def sh(box: Container, command: str, *, check: bool = True, timeout: float = 60) -> str:
    """Run `command` inside as an operator would (system PATH); return its stdout."""
    return box.run(["sh", "-c", command], env=SYSTEM_PATH, check=check, timeout=timeout).stdout


def is_installed(box: Container) -> bool:
    status = sh(box, "dpkg-query -W -f '${Status}' pazuzu 2>/dev/null", check=False)
    return status == "install ok installed"


@pytest.fixture
def installed(container: OverlayUsrContainer) -> OverlayUsrContainer:
    """The container with the package installed (again, after a test that removed it)."""
    if not is_installed(container):
        sh(container, f"{DPKG} -i {DEB_IN_CONTAINER}", timeout=120)
    return container


def status(box: Container) -> dict[str, Any]:
    """`pazuzu --json status` from the packaged CLI."""
    result = box.run(["/usr/bin/pazuzu", "--json", "status"], env=SYSTEM_PATH, check=False)
    assert result.returncode in (0, 3), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def running_instances(document: dict[str, Any]) -> set[str]:
    return {
        f"{app['name']}.{worker['name']}.{instance['number']}"
        for app in document["applications"]
        for worker in app["workers"]
        for instance in worker["instances"]
        if instance["state"] == "running"
    }


def run_example(box: Container) -> None:
    """Enable the packaged example application as the README says, and wait for it to run."""
    sh(box, f"cp {EXAMPLE_CONF} /etc/pazuzu/conf.d/ && systemctl restart pazuzud")
    wait_until(
        lambda: running_instances(status(box)) == EXAMPLE_INSTANCES,
        timeout=30,
        message="the example's four instances run",
    )


def example_units(box: Container) -> list[str]:
    """The example's instance units that systemd says are running."""
    out = sh(box, "systemctl list-units 'pazuzu-example-*' --state=running --plain --no-legend")
    return [line.split()[0] for line in out.splitlines()]


def main_pid(box: Container, unit: str) -> int:
    return int(sh(box, f"systemctl show -p MainPID --value {unit}").strip())


def http_get(box: Container, port: int) -> str:
    """The body that the web worker on `port` answers with."""
    return sh(
        box,
        f"python3 -c 'import urllib.request; "
        f'print(urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=5).read().decode())\'',
    )


def test_package_installs_the_programs_units_and_configuration(
    installed: OverlayUsrContainer,
) -> None:
    """dpkg -i puts pazuzu on the PATH, the units under /lib/systemd/system, /etc/pazuzu as
    conffiles, and enables and starts pazuzud with a configuration that is valid as shipped."""
    box = installed

    found = sh(box, "command -v pazuzu; command -v pazuzud").split()
    assert found == ["/usr/bin/pazuzu", "/usr/sbin/pazuzud"]
    assert sh(box, "pazuzu --version").strip() == f"pazuzu, version {__version__}"
    # The programs run from the package's own virtualenv, not from this checkout.
    module = sh(box, "/opt/pazuzu/bin/python -c 'import pazuzu; print(pazuzu.__file__)'")
    assert module.startswith("/opt/pazuzu/lib/python3")
    unit = sh(box, "systemctl cat pazuzud.service")
    assert "# /lib/systemd/system/pazuzud.service" in unit
    assert "ExecStart=/usr/sbin/pazuzud -c /etc/pazuzu/pazuzu.conf" in unit
    conffiles = sh(box, "dpkg-query -W -f '${Conffiles}' pazuzu").split()
    assert "/etc/pazuzu/pazuzu.conf" in conffiles
    assert "/etc/init.d/pazuzud" in conffiles
    assert sh(box, "pazuzu check").startswith("/etc/pazuzu/pazuzu.conf: OK")
    files = sh(box, "dpkg -L pazuzu").split()
    for path in (
        "/usr/share/man/man5/pazuzu.conf.5.gz",
        "/usr/share/bash-completion/completions/pazuzu",
        "/etc/init.d/pazuzud",
    ):
        assert path in files
        assert box.host_path(path).is_file()
    assert sh(box, "dpkg --verify pazuzu") == ""
    assert sh(box, "systemctl is-enabled pazuzud").strip() == "enabled"
    assert sh(box, "systemctl is-active pazuzud").strip() == "active"


def test_packaged_service_runs_the_packaged_example(installed: OverlayUsrContainer) -> None:
    """`systemctl start pazuzud` returns once pazuzud sent READY=1 (Type=notify), with the
    example application copied into conf.d running: status says so, and so do systemd and the
    web workers themselves."""
    box = installed
    run_example(box)
    sh(box, "systemctl stop pazuzud")

    sh(box, "systemctl start pazuzud")

    # Type=notify: `start` returned, so READY=1 came, after re-attaching to the instances.
    show = sh(box, "systemctl show -p ActiveState -p Type -p StatusText -p MainPID pazuzud")
    properties = dict(line.split("=", 1) for line in show.splitlines())
    assert properties["ActiveState"] == "active"
    assert properties["Type"] == "notify"
    assert properties["StatusText"]
    cmdline = box.host_path(f"/proc/{properties['MainPID']}/cmdline").read_bytes().split(b"\0")
    assert b"/usr/sbin/pazuzud" in cmdline
    assert running_instances(status(box)) == EXAMPLE_INSTANCES
    assert len(example_units(box)) == 4
    assert "Directory listing" in http_get(box, 5000)
    assert "Directory listing" in http_get(box, 5001)


def test_removing_the_package_stops_pazuzud_but_not_the_workers(
    installed: OverlayUsrContainer,
) -> None:
    """dpkg -r stops the daemon and removes its files; every worker keeps running, same PIDs."""
    box = installed
    run_example(box)
    before = {unit: main_pid(box, unit) for unit in example_units(box)}
    assert len(before) == 4

    sh(box, f"{DPKG} -r pazuzu", timeout=120)

    assert not is_installed(box)
    assert sh(box, "systemctl is-active pazuzud", check=False).strip() in {"inactive", "unknown"}
    assert sh(box, "command -v pazuzu; command -v pazuzud", check=False) == ""
    assert not box.host_path("/opt/pazuzu").exists()
    # Conffiles stay until the package is purged.
    assert box.host_path("/etc/pazuzu/pazuzu.conf").is_file()
    after = {unit: main_pid(box, unit) for unit in before}
    assert after == before
    assert all(box.pid_exists(pid) for pid in after.values())
    assert sorted(example_units(box)) == sorted(before)
    # web.1 still serves (its files went with the package, its listening socket did not).
    sh(box, "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 5000), 5)'")
