"""`pazuzu status` and `pazuzu scale` without click: same output and exit status as the click
commands, or click.

The fast path and the click CLI are run against one real unix socket served by a fake daemon
that answers every request with a canned reply; their stdout, stderr and exit status must be
identical.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pazuzu import quick
from pazuzu.cli import main as click_main
from pazuzu.defaults import DEFAULT_SOCKET_PATH
from pazuzu.errors import SpecError
from pazuzu.spec import parse_scale, parse_spec

LONG_AGO = 1_000_000_000.0  # uptime of years: the same text whenever the test runs


def instance(number: int, state: str = "running", **fields: Any) -> dict[str, Any]:
    return {
        "number": number,
        "state": state,
        "should_run": True,
        "pid": 4000 + number if state == "running" else None,
        "started_at": LONG_AGO if state == "running" else None,
        "restarts": 2,
        "last_exit": None,
        "memory_bytes": 52_428_800,
        "cpu_seconds": 1.5,
        "next_try_in": None,
        **fields,
    }


def result(*instances: dict[str, Any], warning: str | None = None) -> dict[str, Any]:
    daemon: dict[str, Any] = {"pid": 1, "backend": "fake", "version": "0.1.0"}
    if warning:
        daemon["warning"] = warning
    worker = {"name": "web", "command_line": "x", "desired": 2, "instances": list(instances)}
    return {"daemon": daemon, "applications": [{"name": "shop", "workers": [worker]}]}


class Daemon:
    """A unix socket answering each connection's request line with `reply`; keeps requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reply: dict[str, Any] = {"ok": True, "result": result()}
        self.requests: list[dict[str, Any]] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(json.loads(data))
                connection.sendall(json.dumps(self.reply).encode() + b"\n")

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    # A short directory: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="pzq") as directory:
        fake = Daemon(Path(directory) / "d.socket")
        try:
            yield fake
        finally:
            fake.close()


def run_quick(argv: list[str], environ: dict[str, str]) -> tuple[str, str, int]:
    plan = quick.fast_request(argv, environ)
    assert plan is not None, f"{argv} should take the fast path"
    command, socket_path, as_json, args = plan
    out, err = io.StringIO(), io.StringIO()
    answer = quick.status if command == "status" else quick.scale
    code = answer(socket_path, as_json, args, out, err)
    return out.getvalue(), err.getvalue(), code


def run_click(argv: list[str], environ: dict[str, str]) -> tuple[str, str, int]:
    outcome = CliRunner().invoke(click_main, argv, env=environ)
    if outcome.exception and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return outcome.stdout, outcome.stderr, outcome.exit_code


def run_both(
    daemon: Daemon, reply: dict[str, Any], argv: list[str]
) -> tuple[list[str], tuple[str, str, int]]:
    """Run argv through the fast path and through click against the same reply.

    Both must print the same and exit the same, and send the daemon the same request.
    """
    daemon.reply = reply
    argv = [arg.replace("{socket}", str(daemon.path)) for arg in argv]
    environ = {"PAZUZU_SOCKET": str(daemon.path), "NO_COLOR": ""}
    fast = run_quick(argv, environ)
    assert fast == run_click(argv, environ)
    assert len(daemon.requests) == 2
    assert daemon.requests[0] == daemon.requests[1]
    return argv, fast


REPLIES = {
    "all running": {"ok": True, "result": result(instance(1), instance(2))},
    "one not running": {"ok": True, "result": result(instance(1), instance(2, "backoff"))},
    "a warning": {"ok": True, "result": result(instance(1), warning="state file unreadable")},
    "refused": {
        "ok": False,
        "error": {"code": "unknown_spec", "message": "nothing matches 'x'", "hint": "see status"},
    },
}


@pytest.mark.parametrize("reply", sorted(REPLIES))
@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["--json", "status"],
        ["status", "shop", "shop.web", "shop.web.2", "sh*.w?b.*"],
        ["--json", "--socket", "{socket}", "status", "shop.web"],
    ],
)
def test_fast_path_prints_and_exits_as_the_click_command(
    daemon: Daemon, reply: str, argv: list[str]
) -> None:
    """Same stdout, stderr and exit status, and the same request reaches the daemon."""
    argv, fast = run_both(daemon, REPLIES[reply], argv)
    shown = '"pid": 4001' if "--json" in argv else "web.1  running 4001"
    assert (shown in fast[0]) == (reply != "refused")
    assert fast[2] == {"all running": 0, "one not running": 3, "a warning": 0, "refused": 1}[reply]


SCALE_REPLIES = {
    "scaled": {"ok": True, "result": {"formation": {"shop.queue": 0, "shop.web": 4}}},
    "refused": {
        "ok": False,
        "error": {"code": "unknown_spec", "message": "no worker shop.x", "hint": "known: web"},
    },
}


@pytest.mark.parametrize("reply", sorted(SCALE_REPLIES))
@pytest.mark.parametrize(
    "argv",
    [
        ["scale", "shop.web=4"],
        ["--json", "scale", "shop.web+2", "shop.queue-1", "my-app.web-2=3"],
        ["--socket", "{socket}", "scale", "shop.web-12"],
    ],
)
def test_fast_scale_prints_and_exits_as_the_click_command(
    daemon: Daemon, reply: str, argv: list[str]
) -> None:
    argv, fast = run_both(daemon, SCALE_REPLIES[reply], argv)
    if reply == "scaled":
        shown = '"shop.web": 4' if "--json" in argv else "shop.queue=0 shop.web=4\n"
        assert shown in fast[0]
        assert fast[2] == 0
    else:
        assert fast[0] == ""
        assert fast[1] == "pazuzu: no worker shop.x\nhint: known: web\n"
        assert fast[2] == 1
    changes = argv[argv.index("scale") + 1 :]
    assert daemon.requests[0] == {"command": "scale", "args": {"changes": changes}}


def test_an_unreachable_daemon_reads_as_with_click(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.socket")
    argv = ["--socket", missing, "status"]
    fast = run_quick(argv, {})
    assert fast == run_click(argv, {})
    assert fast[2] == 1
    assert "is pazuzud running?" in fast[1]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["--version"],
        ["status", "--help"],
        ["status", "-w"],
        ["status", "--watch"],
        ["status", "--interval", "1"],
        ["scale"],
        ["scale", "--help"],
        ["scale", "shop", "web=2"],
        ["scale", "web=2"],
        ["scale", "shop.web"],
        ["scale", "shop.w*=2"],
        ["scale", "shop.web=-1"],
        ["scale", "shop.web.1=2"],
        ["scale", "shop.web=2", "queue=1"],
        ["scale", "shop.web=\uff12"],  # a full-width digit
        ["stop", "shop.web"],
        ["--socket"],
        ["--socket", "", "status"],
        ["--bogus", "status"],
        ["status", "shop..web"],
        ["status", "shop.web.0"],
        ["status", "shop.web.two"],
        ["status", "a.b.c.d"],
        ["status", "shop.web."],
        ["status", "sh op"],
        ["status", "--", "shop"],
    ],
)
def test_everything_but_a_plain_status_or_scale_goes_to_click(argv: list[str]) -> None:
    assert quick.fast_request(argv, {}) is None


def test_shell_completion_goes_to_click() -> None:
    assert quick.fast_request(["status"], {"_PAZUZU_COMPLETE": "bash_complete"}) is None
    assert quick.fast_request(["scale", "a.b=1"], {"_PAZUZU_COMPLETE": "zsh_complete"}) is None


def test_socket_comes_from_the_option_then_the_environment_then_the_default() -> None:
    default = str(DEFAULT_SOCKET_PATH)
    assert quick.fast_request(["status"], {}) == ("status", default, False, [])
    assert default == quick.DEFAULT_SOCKET
    assert quick.fast_request(["status"], {"PAZUZU_SOCKET": "/e"}) == ("status", "/e", False, [])
    option = ["--socket=/o", "scale", "shop.web=1"]
    plan = quick.fast_request(option, {"PAZUZU_SOCKET": "/e"})
    assert plan == ("scale", "/o", False, ["shop.web=1"])


@given(st.text(alphabet="ab*?-_.0123 /é", max_size=12))
def test_every_spec_the_fast_path_takes_is_one_the_cli_accepts(text: str) -> None:
    """The fast path vouches only for specs `parse_spec` accepts; the rest go to click."""
    if quick.plain_spec(text):
        try:
            parse_spec(text)
        except SpecError as error:
            pytest.fail(f"{text!r} taken by the fast path but refused by parse_spec: {error}")


@given(st.text(alphabet="ab*?-_.=+0123 /é٣", max_size=12))
def test_every_change_the_fast_path_takes_is_one_the_cli_accepts(text: str) -> None:
    """The fast path vouches only for changes `parse_scale` accepts, read the same way."""
    if quick.plain_change(text):
        try:
            [change] = parse_scale([text])
        except SpecError as error:
            pytest.fail(f"{text!r} taken by the fast path but refused by parse_scale: {error}")
        prefix = f"{change.app}.{change.worker}{change.op.value}"
        assert text.startswith(prefix)
        assert int(text[len(prefix) :]) == change.amount


def test_the_fast_path_loads_neither_click_nor_the_daemons_modules(tmp_path: Path) -> None:
    """What makes it fast: a status or scale call imports none of these."""
    code = (
        "import sys\n"
        "from pazuzu import quick\n"
        f"quick.status({str(tmp_path / 'none')!r}, False, [], sys.stdout, sys.stderr)\n"
        f"quick.scale({str(tmp_path / 'none')!r}, False, ['a.b=1'], sys.stdout, sys.stderr)\n"
        "heavy = ('click', 'yaml', 'pazuzu.model', 'pazuzu.protocol', 'pazuzu.cli',"
        " 'dataclasses', 'typing', 'pathlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert out.stdout.strip() == "[]"
