"""`pazuzu run`'s pure parts: the command line, the environment, the systemd-run command."""

from __future__ import annotations

from typing import Any

from pazuzu import oneoff

SPEC: dict[str, Any] = {
    "backend": "systemd",
    "app": "my-app",
    "directory": "/srv/my-app",
    "environment": {"GREETING": "hello", "PAZUZU_APP": "my-app"},
    "user": "deploy",
    "group": None,
    "hierarchy_root": "pazuzu",
    "fs_root": "/sys/fs/cgroup",
    "subsystems": ["memory"],
}


def test_one_argument_is_a_shell_line_and_several_are_quoted() -> None:
    """`run app -- 'echo $X'` keeps the line; `run app -- rake db:migrate "a b"` quotes words."""
    assert oneoff.command_line(["echo $PORT"]) == "echo $PORT"
    assert oneoff.command_line(["rake", "db:migrate", "a b"]) == "rake db:migrate 'a b'"


def test_the_environment_is_the_applications_plus_dyno_and_the_terminals() -> None:
    """The app's variables, DYNO=run.N, a PATH and TERM; nothing else of the caller's."""
    caller = {"TERM": "xterm", "SECRET": "x", "PATH": "/home/me/bin"}
    env = oneoff.environment(SPEC, caller, "42")
    assert env["GREETING"] == "hello"
    assert env["DYNO"] == "run.42"
    assert env["TERM"] == "xterm"
    assert env["PATH"] == oneoff.SANE_PATH
    assert "SECRET" not in env


def test_systemd_run_places_the_command_in_the_escaped_application_slice() -> None:
    """A scope named after the app (escaped) in its slice, as the application's user."""
    assert oneoff.systemd_argv(SPEC, "true", "42") == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=pazuzu-my\\x2dapp-run-42.scope",
        "--slice=pazuzu-my\\x2dapp.slice",
        "--uid=deploy",
        "--",
        "/bin/sh",
        "-c",
        "true",
    ]
