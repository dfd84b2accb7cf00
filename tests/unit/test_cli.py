"""The CLI's own behaviour: offline `check`, usage errors, and an unreachable daemon."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pazuzu.cli import EXIT_USAGE, main


def write_app(tmp_path: Path, procfile: str) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Procfile").write_text(procfile)
    config = tmp_path / "pazuzu.conf"
    config.write_text(f"applications:\n  shop:\n    procfile: {tmp_path / 'app'}\n")
    return config


def test_check_accepts_a_valid_configuration(tmp_path: Path) -> None:
    """`pazuzu check -c` exits 0 and counts applications and workers."""
    config = write_app(tmp_path, "web: exec sleep 1\nqueue: sleep 1\n")
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0
    assert "OK (1 applications, 2 workers)" in result.output


def test_check_names_the_file_and_line_of_a_bad_procfile(tmp_path: Path) -> None:
    """A Procfile line without a colon fails `check` with exit 1, file and line number."""
    config = write_app(tmp_path, "web: exec sleep 1\nbroken line\n")
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'app' / 'Procfile'}:2:" in result.output
    assert "hint:" in result.output


def test_check_json_lists_the_formation(tmp_path: Path) -> None:
    """`pazuzu --json check` prints each worker's configured instance count."""
    config = write_app(tmp_path, "web: exec sleep 1\n")
    result = CliRunner().invoke(main, ["--json", "check", "-c", str(config)])
    assert result.exit_code == 0
    assert '"web": 1' in result.output


def test_unreachable_daemon_names_the_socket_and_the_likely_cause(tmp_path: Path) -> None:
    """With no daemon, `status` exits 1 and says which socket it tried and why it failed."""
    socket_path = tmp_path / "missing.socket"
    result = CliRunner().invoke(main, ["--socket", str(socket_path), "status"])
    assert result.exit_code == 1
    assert str(socket_path) in result.output
    assert "is pazuzud running?" in result.output


def test_malformed_scale_is_a_usage_error(tmp_path: Path) -> None:
    """`pazuzu scale web=three` exits 2 without asking the daemon."""
    result = CliRunner().invoke(
        main, ["--socket", str(tmp_path / "none"), "scale", "shop.web=three"]
    )
    assert result.exit_code == EXIT_USAGE
    assert "hint:" in result.output
