"""The `pazuzu` command's entry point: `pazuzu status` and `pazuzu scale` without click.

`status` is what operators, monitoring checks and shell prompts run most, `scale` what
autoscalers and deploy scripts run, and importing click takes longer (about 35 ms here) than
the whole round trip to the daemon. So their plain forms,
`pazuzu [--socket PATH] [--json] status [SPEC...]` and
`pazuzu [--socket PATH] [--json] scale APP.WORKER=N...` (or `+N`, `-N`), are parsed here and
answered by `status` and `scale` below, which the click commands call too (the unit tests
compare the two paths). Everything else (another command, --help, --version, --watch, a spec
or change this module does not vouch for, shell completion) goes to `pazuzu.cli`, the click
CLI. Nothing here imports more than the standard library's socket and json and pazuzu's
`client` and `render`.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs a status call 10 ms of imports
if TYPE_CHECKING:
    from typing import Any, TextIO

    from pazuzu.errors import PazuzuError

DEFAULT_SOCKET = "/var/run/pazuzud.socket"  # defaults.DEFAULT_SOCKET_PATH, without pathlib
SOCKET_ENV = "PAZUZU_SOCKET"
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3  # systemctl's convention: something that should run does not

_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-*?")
_NUMBER_CHARACTERS = frozenset("0123456789*?")
_WILDCARDS = frozenset("*?")


def main() -> None:
    """`pazuzu`: the fast path when it applies, else the click CLI."""
    plan = fast_request(sys.argv[1:], os.environ)
    if plan is None:
        from pazuzu.cli import main as cli

        cli()
        return
    command, socket_path, as_json, args = plan
    answer = status if command == "status" else scale
    try:
        code = answer(socket_path, as_json, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("Aborted!\n")
        code = EXIT_ERROR
    except BrokenPipeError:  # `pazuzu status | head`: the reader left, as click handles it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing to flush
        code = EXIT_ERROR
    sys.exit(code)


def fast_request(
    argv: list[str], environ: dict[str, str] | os._Environ[str]
) -> tuple[str, str, bool, list[str]] | None:
    """(command, socket, --json, arguments) when `argv` is a plain `status` or `scale` this
    module answers, else None."""
    if any(key.startswith("_PAZUZU_COMPLETE") for key in environ):
        return None  # shell completion is click's
    socket_path = environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    as_json = False
    rest = list(argv)
    while rest and rest[0] not in ("status", "scale"):
        option = rest.pop(0)
        if option == "--json":
            as_json = True
        elif option == "--socket" and rest and rest[0]:
            socket_path = rest.pop(0)
        elif option.startswith("--socket=") and len(option) > len("--socket="):
            socket_path = option[len("--socket=") :]
        else:
            return None
    if not rest:
        return None
    command, args = rest[0], rest[1:]
    if command == "status" and all(plain_spec(spec) for spec in args):
        return command, socket_path, as_json, args
    if command == "scale" and args and all(plain_change(change) for change in args):
        return command, socket_path, as_json, args
    return None


def plain_spec(text: str) -> bool:
    """Whether `text` is a spec that `spec.parse_spec` surely accepts (a subset of them)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or text.startswith("-"):
        return False
    if not all(part and _NAME_CHARACTERS.issuperset(part) for part in parts[:2]):
        return False
    if len(parts) == 3:
        number = parts[2]
        if not number or not _NUMBER_CHARACTERS.issuperset(number):
            return False
        if number.isdigit() and int(number) < 1:
            return False
    return True


def plain_change(text: str) -> bool:
    """Whether `text` is `APP.WORKER=N` (or `+N`, `-N`) that `spec.parse_scale` surely accepts
    (a subset of them)."""
    cut = max(text.rfind("="), text.rfind("+"), text.rfind("-"))
    target, amount = text[:cut], text[cut + 1 :]
    if cut < 0 or not amount.isascii() or not amount.isdigit():
        return False
    parts = target.split(".")
    return len(parts) == 2 and all(
        part
        and _NAME_CHARACTERS.issuperset(part)
        and part[0] != "-"
        and part[-1] != "-"
        and not _WILDCARDS.intersection(part)
        for part in parts
    )


def scale(socket_path: str, as_json: bool, changes: list[str], out: TextIO, err: TextIO) -> int:
    """Ask the daemon to apply `changes`, print the new formation, return the exit status."""
    import json

    from pazuzu import client
    from pazuzu.errors import PazuzuError

    try:
        result = client.call(socket_path, "scale", changes=changes)
    except PazuzuError as error:
        return _refused(error, err)
    formation = result["formation"]
    text = " ".join(f"{name}={count}" for name, count in formation.items())
    out.write((json.dumps(result, indent=2) if as_json else text) + "\n")
    out.flush()
    return 0


def _refused(error: PazuzuError, err: TextIO) -> int:
    err.write(f"pazuzu: {error}\n")
    if error.hint:
        err.write(f"hint: {error.hint}\n")
    return EXIT_ERROR


def status(socket_path: str, as_json: bool, specs: list[str], out: TextIO, err: TextIO) -> int:
    """Ask the daemon for the status of `specs`, print it, return the exit status."""
    import json

    from pazuzu import client, render
    from pazuzu.errors import PazuzuError

    try:
        result = client.call(socket_path, "status", specs=specs)
    except PazuzuError as error:
        return _refused(error, err)
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        out.write(render.status_table(result, color=use_color(out)) + "\n")
    out.flush()
    if warning := result["daemon"].get("warning"):
        err.write(f"warning: {warning}\n")
    return EXIT_NOT_RUNNING if not_running(result) else 0


def use_color(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when $NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def not_running(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances of a status result that should run but do not."""
    return [
        instance
        for app in result["applications"]
        for worker in app["workers"]
        for instance in worker["instances"]
        if instance["should_run"] and instance["state"] != "running"
    ]
