"""`pazuzu run`: a one-off command placed, configured and exiting like the application's own."""

from __future__ import annotations

from tests.integration.deployment import Target
from tests.integration.test_daemon import deployment

__all__ = ["deployment"]  # the fixture, parametrized over both backends


def test_run_uses_the_application_environment_placement_and_exit_status(
    deployment: Target,
) -> None:
    """The command sees .env and DYNO=run.N, runs in the app's directory and slice or cgroup,
    and its exit status is pazuzu's."""
    deployment.write_procfile("shop", "web: exec sleep 1000\n", env="GREETING=hello\n")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n")
    deployment.start_daemon()
    result = deployment.cli(
        "run",
        "shop",
        "--",
        "echo greeting=$GREETING dyno=$DYNO app=$PAZUZU_APP; pwd; cat /proc/self/cgroup; exit 7",
        check=False,
    )
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("greeting=hello dyno=run.")
    assert lines[0].endswith("app=shop")
    assert lines[1] == str(deployment.app_dir("shop"))
    cgroups = "\n".join(lines[2:])
    if deployment.backend == "systemd":
        assert "/pazuzu.slice/pazuzu-shop.slice/pazuzu-shop-run-" in cgroups
    else:
        assert f"memory:/{deployment.hierarchy}/shop/run-" in cgroups  # type: ignore[attr-defined]
    # The one-off command is not an instance: the formation is untouched.
    assert deployment.running() == {"shop.web.1"}


def test_run_of_an_unknown_application_is_an_error(deployment: Target) -> None:
    """`pazuzu run nope -- true` exits 1 and lists the applications."""
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n")
    deployment.start_daemon()
    result = deployment.cli("run", "nope", "--", "true", check=False)
    assert result.returncode == 1
    assert "applications: shop" in result.stderr
