"""The CLI's own behaviour: offline `check`, usage errors, an unreachable daemon, --watch."""

from __future__ import annotations

import io
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from pazuzu import protocol
from pazuzu.cli import EXIT_USAGE, Context, known_specs, main, watch_status
from pazuzu.errors import PazuzuError
from pazuzu.quick import use_color


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


class FakeDaemon(Context):
    """A Context whose daemon answers `status` from a list of results, or fails."""

    def __init__(self, *results: dict[str, Any] | PazuzuError, as_json: bool = False) -> None:
        super().__init__(Path("/nonexistent"), as_json)
        self.results = list(results)
        self.requests: list[dict[str, Any]] = []

    def call(self, command: protocol.Command, **args: Any) -> Any:
        self.requests.append({"command": command, **args})
        result = self.results.pop(0)
        if isinstance(result, PazuzuError):
            raise result
        return result


def status_result(state: str = "running") -> dict[str, Any]:
    instance = {
        "number": 1,
        "state": state,
        "pid": 4712,
        "started_at": 1.0,
        "restarts": 0,
        "last_exit": None,
        "memory_bytes": None,
        "cpu_seconds": None,
        "next_try_in": None,
        "should_run": True,
    }
    worker = {"name": "web", "command_line": "sleep 1", "desired": 1, "instances": [instance]}
    return {
        "daemon": {"pid": 1, "backend": "fake", "version": "0.1.0"},
        "applications": [{"name": "shop", "workers": [worker]}],
    }


def test_watch_without_a_terminal_prints_tables_separated_by_a_blank_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three refreshes to a pipe are three tables, one after the other, paced by --interval."""
    daemon = FakeDaemon(status_result(), status_result("backoff"), status_result())
    sleeps: list[float] = []
    watch_status(daemon, ("shop",), 1.5, 3, terminal=False, sleep=sleeps.append)
    frames = capsys.readouterr().out.split("\n\nEvery ")
    assert len(frames) == 3
    assert frames[0].startswith("Every 1.5s: pazuzu status shop  ")
    assert "backoff" in frames[1]
    assert all("web.1" in frame for frame in frames)
    assert sleeps == [1.5, 1.5]
    assert daemon.requests == [{"command": protocol.Command.STATUS, "specs": ["shop"]}] * 3


def test_watch_without_a_terminal_writes_no_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    """A pipe gets no colour and no cursor movement."""
    watch_status(FakeDaemon(status_result()), (), 1.0, 1, terminal=False, sleep=lambda _: None)
    assert "\x1b" not in capsys.readouterr().out


def test_watch_on_a_terminal_redraws_in_place(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal every frame homes the cursor and clears what the last one left."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    daemon = FakeDaemon(status_result(), status_result())
    watch_status(daemon, (), 1.0, 2, terminal=True, sleep=lambda _: None)
    out = capsys.readouterr().out
    assert out.count("\x1b[H") >= 2
    assert out.endswith("\x1b[K\x1b[J")


def test_watch_keeps_going_while_the_daemon_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A daemon restart during --watch shows the error in that frame; the next one recovers."""
    lost = PazuzuError("cannot reach pazuzud: nothing listens", hint="start it")
    watch_status(
        FakeDaemon(lost, status_result()), (), 1.0, 2, terminal=False, sleep=lambda _: None
    )
    out = capsys.readouterr().out
    assert "pazuzu: cannot reach pazuzud: nothing listens\nhint: start it" in out
    assert "web.1" in out


def test_watch_with_json_prints_one_document_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`--json status --watch` is a stream of JSON lines, errors included."""
    lost = PazuzuError("cannot reach pazuzud", hint="start it")
    daemon = FakeDaemon(status_result(), lost, as_json=True)
    watch_status(daemon, (), 1.0, 2, terminal=False, sleep=lambda _: None)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line).keys() for line in lines] == [
        {"daemon", "applications"},
        {"error"},
    ]


def test_watch_option_runs_until_count_against_an_unreachable_daemon(tmp_path: Path) -> None:
    """`status --watch --count 2` exits 0 after two frames, even with no daemon."""
    result = CliRunner().invoke(
        main,
        ["--socket", str(tmp_path / "none"), "status", "--watch", "-i", "0.1", "--count", "2"],
    )
    assert result.exit_code == 0
    assert result.output.count("is pazuzud running?") == 2


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal gets colour; a pipe never does; NO_COLOR turns it off everywhere."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Stream(tty=True))
    assert not use_color(Stream(tty=False))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Stream(tty=True))


SHOP = {
    "daemon": {"pid": 1, "backend": "fake", "version": "0.1.0"},
    "applications": [
        {
            "name": "shop",
            "workers": [
                {"name": "web", "instances": [{"number": 1}, {"number": 2}]},
                {"name": "queue", "instances": [{"number": 1}]},
            ],
        }
    ],
}


@pytest.fixture
def daemon_socket() -> Iterator[Path]:
    """A unix socket that answers every request with the status of `shop`, like pazuzud."""
    directory = Path(tempfile.mkdtemp(prefix="pz-"))  # short: sun_path holds 108 bytes
    path = directory / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(protocol.encode_result(SHOP))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join()
        server.close()
        shutil.rmtree(directory)


def completions(args: list[str], incomplete: str) -> list[str]:
    """What `pazuzu ARGS INCOMPLETE<TAB>` offers."""
    complete = ShellComplete(main, {}, "pazuzu", "_PAZUZU_COMPLETE")
    return [item.value for item in complete.get_completions(args, incomplete)]


def test_spec_completion_offers_applications_workers_and_instances(daemon_socket: Path) -> None:
    """`pazuzu status sh<TAB>` offers every spec of the running daemon that starts so."""
    assert completions(["--socket", str(daemon_socket), "status"], "sh") == [
        "shop",
        "shop.web",
        "shop.web.1",
        "shop.web.2",
        "shop.queue",
        "shop.queue.1",
    ]
    assert completions(["--socket", str(daemon_socket), "log"], "shop.q") == [
        "shop.queue",
        "shop.queue.1",
    ]


def test_spec_completion_leaves_out_specs_already_given(daemon_socket: Path) -> None:
    """`pazuzu stop shop.web.1 shop.web<TAB>` does not offer shop.web.1 again."""
    args = ["--socket", str(daemon_socket), "stop", "shop.web.1"]
    assert completions(args, "shop.web") == ["shop.web", "shop.web.2"]


def test_spec_completion_reads_the_socket_from_the_environment(
    daemon_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$PAZUZU_SOCKET names the daemon to ask, as it does for the commands themselves."""
    monkeypatch.setenv("PAZUZU_SOCKET", str(daemon_socket))
    assert completions(["restart"], "shop.web.") == ["shop.web.1", "shop.web.2"]


def test_scale_completion_offers_worker_assignments(daemon_socket: Path) -> None:
    """`pazuzu scale shop.<TAB>` offers `shop.web=` and `shop.queue=`; after `shop`, `web=`."""
    scale = ["--socket", str(daemon_socket), "scale"]
    assert completions(scale, "shop.") == ["shop.web=", "shop.queue="]
    assert completions([*scale, "shop"], "q") == ["queue="]


def test_spec_completion_is_silent_and_quick_without_a_daemon(tmp_path: Path) -> None:
    """No daemon, or one that does not answer: no completions, within the short timeout."""
    assert completions(["--socket", str(tmp_path / "none"), "status"], "") == []
    directory = Path(tempfile.mkdtemp(prefix="pz-"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
            mute.bind(str(directory / "s"))
            mute.listen()  # connections wait in the backlog, never answered
            started = time.monotonic()
            assert known_specs(directory / "s", timeout=0.2) == {}
            assert time.monotonic() - started < 1.0
    finally:
        shutil.rmtree(directory)


def test_commands_and_options_complete() -> None:
    """Commands and options come from click's own definitions."""
    assert completions([], "st") == ["start", "status", "stop"]
    assert "--watch" in completions(["status"], "--w")
