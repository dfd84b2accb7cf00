"""pazuzu: the control CLI. Each command parses, calls the daemon, renders, exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pazuzu import __version__, protocol
from pazuzu.defaults import DEFAULT_SOCKET_PATH
from pazuzu.errors import PazuzuError, SpecError
from pazuzu.options import config_option
from pazuzu.quick import use_color

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # systemctl's convention: something that should run does not


class Context:
    def __init__(self, socket_path: Path, as_json: bool) -> None:
        self.socket_path = socket_path
        self.as_json = as_json

    def call(self, command: protocol.Command, **args: Any) -> Any:
        from pazuzu import client

        return client.call(self.socket_path, command, **args)

    def emit(self, result: Any, text: str) -> None:
        click.echo(json.dumps(result, indent=2) if self.as_json else text)


pass_context = click.make_pass_decorator(Context)


def fail(error: PazuzuError, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"pazuzu: {error}", err=True)
    if error.hint:
        click.echo(f"hint: {error.hint}", err=True)
    sys.exit(code)


# Shell completion asks the running daemon what exists; a shell must never hang on it.
COMPLETION_TIMEOUT = 0.5


def known_specs(
    socket_path: Path, timeout: float = COMPLETION_TIMEOUT
) -> dict[str, dict[str, list[int]]]:
    """What the daemon at `socket_path` supervises: `{app: {worker: [instance numbers]}}`.

    For shell completion: empty, quietly, when the daemon cannot be asked within `timeout`.
    """
    import socket

    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(protocol.encode_request(protocol.Command.STATUS, specs=[]))
            reply = b""
            while not reply.endswith(b"\n"):
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        result = protocol.decode_reply(reply)
        return {
            app["name"]: {
                worker["name"]: [instance["number"] for instance in worker["instances"]]
                for worker in app["workers"]
            }
            for app in result["applications"]
        }
    except (OSError, PazuzuError, LookupError, TypeError):
        return {}


def _completion_socket(ctx: click.Context) -> Path:
    # The group's callback does not run while completing, but its parameters are parsed.
    value = ctx.find_root().params.get("socket_path")
    return Path(value) if value else DEFAULT_SOCKET_PATH


def complete_spec(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete a SPEC with `app`, `app.worker` and `app.worker.N` from the running daemon."""
    from click.shell_completion import CompletionItem

    candidates: list[str] = []
    for app, workers in known_specs(_completion_socket(ctx)).items():
        candidates.append(app)
        for worker, numbers in workers.items():
            candidates.append(f"{app}.{worker}")
            candidates.extend(f"{app}.{worker}.{number}" for number in numbers)
    given = set(ctx.params.get(param.name or "") or ())
    return [
        CompletionItem(spec)
        for spec in candidates
        if spec.startswith(incomplete) and spec not in given
    ]


def complete_change(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete a scale CHANGE with `app.worker=`, or `worker=` after an application given once."""
    from click.shell_completion import CompletionItem

    specs = known_specs(_completion_socket(ctx))
    given = list(ctx.params.get(param.name or "") or ())
    if given and given[0] in specs:  # `pazuzu scale myapp web=3 queue-1`
        candidates = [f"{worker}=" for worker in specs[given[0]]]
    else:
        candidates = [f"{app}.{worker}=" for app, workers in specs.items() for worker in workers]
    return [CompletionItem(change) for change in candidates if change.startswith(incomplete)]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    # No readability check here: the client explains a refused connection better.
    type=click.Path(path_type=Path, readable=False),
    envvar="PAZUZU_SOCKET",
    default=DEFAULT_SOCKET_PATH,
    show_default=True,
    help="pazuzud's control socket (also $PAZUZU_SOCKET).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.version_option(__version__, prog_name="pazuzu")
@click.pass_context
def main(ctx: click.Context, socket_path: Path, as_json: bool) -> None:
    """Control pazuzud: status, start, stop, restart, scale, log, reload, check, export."""
    ctx.obj = Context(socket_path, as_json)


@main.command()
@click.argument("specs", nargs=-1, shell_complete=complete_spec)
@click.option(
    "-w", "--watch", is_flag=True, help="Refresh until Ctrl-C, like top (in place on a terminal)."
)
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    default=2.0,
    show_default=True,
    help="With --watch: seconds between refreshes.",
)
# For tests and scripts: stop --watch after N refreshes.
@click.option("--count", type=click.IntRange(min=1), default=None, hidden=True)
@pass_context
def status(
    ctx: Context, specs: tuple[str, ...], watch: bool, interval: float, count: int | None
) -> None:
    """Show instances: state, pid, uptime, restarts, last exit, memory, cpu.

    Exits 3 when an instance that should run does not. With --watch, refreshes every
    --interval seconds until Ctrl-C: in place on a terminal, else as successive tables
    separated by a blank line (with --json, one JSON document per line).
    """
    check_specs(specs)
    if watch:
        try:
            watch_status(ctx, specs, interval, count, terminal=sys.stdout.isatty())
        except KeyboardInterrupt:
            click.echo()
        return
    from pazuzu import quick  # one implementation for both entries to status

    code = quick.status(str(ctx.socket_path), ctx.as_json, list(specs), sys.stdout, sys.stderr)
    if code:
        sys.exit(code)


def _status_text(result: dict[str, Any], *, color: bool) -> str:
    from pazuzu import render

    text = render.status_table(result, color=color)
    if warning := result["daemon"].get("warning"):
        text += f"\nwarning: {warning}"
    return text


def watch_status(
    ctx: Context,
    specs: tuple[str, ...],
    interval: float,
    count: int | None,
    *,
    terminal: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print status every `interval` seconds, `count` times or until Ctrl-C.

    On a terminal each frame is redrawn in place, as top does; otherwise frames follow each
    other, separated by a blank line, so a log or a pipe reads them in order. An unreachable
    daemon is shown in the frame and asked again next time: a daemon restart does not end the
    watch.
    """
    color = terminal and use_color(sys.stdout)
    frame = 0
    while count is None or frame < count:
        try:
            result = ctx.call(protocol.Command.STATUS, specs=list(specs))
        except PazuzuError as error:
            document: dict[str, Any] = {"error": {"message": str(error), "hint": error.hint}}
            body = f"pazuzu: {error}" + (f"\nhint: {error.hint}" if error.hint else "")
        else:
            document = result
            body = _status_text(result, color=color)
        if ctx.as_json:
            click.echo(json.dumps(document))
        else:
            header = f"Every {interval:g}s: pazuzu status {' '.join(specs)}".rstrip()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            text = f"{header}  {stamp}\n\n{body}"
            if terminal:
                _redraw(text, first=frame == 0)
            else:
                click.echo(("\n" if frame else "") + text)
        sys.stdout.flush()
        frame += 1
        if count is None or frame < count:
            sleep(interval)


def _redraw(text: str, *, first: bool) -> None:
    """Draw a frame over the last one: home the cursor, clear each line's rest and below."""
    if first:
        click.clear()
    # Writing over the old frame instead of clearing the screen first does not flicker.
    click.echo("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J", nl=False, color=True)


def check_specs(specs: tuple[str, ...]) -> None:
    """A malformed spec is a usage error (exit 2), found before the daemon is asked."""
    from pazuzu.spec import parse_spec

    try:
        for text in specs:
            parse_spec(text)
    except SpecError as error:
        fail(error, EXIT_USAGE)


def _simple(command: protocol.Command, key: str, specs: tuple[str, ...], ctx: Context) -> None:
    check_specs(specs)
    try:
        result = ctx.call(command, specs=list(specs))
    except PazuzuError as error:
        fail(error)
    names = result.get(key, [])
    ctx.emit(result, f"{key}: {' '.join(names)}" if names else f"{key}: nothing")


@main.command()
@click.argument("specs", nargs=-1, required=True, shell_complete=complete_spec)
@pass_context
def start(ctx: Context, specs: tuple[str, ...]) -> None:
    """Start instances stopped with `pazuzu stop` (APP, APP.WORKER, APP.WORKER.N, globs)."""
    _simple(protocol.Command.START, "started", specs, ctx)


@main.command()
@click.argument("specs", nargs=-1, required=True, shell_complete=complete_spec)
@pass_context
def stop(ctx: Context, specs: tuple[str, ...]) -> None:
    """Stop instances and keep them stopped, across daemon restarts, until `start`."""
    _simple(protocol.Command.STOP, "stopped", specs, ctx)


@main.command()
@click.argument("specs", nargs=-1, required=True, shell_complete=complete_spec)
@click.option("--rolling", is_flag=True, help="One instance at a time, per worker.")
@pass_context
def restart(ctx: Context, specs: tuple[str, ...], rolling: bool) -> None:
    """Restart instances; stopped ones are started."""
    check_specs(specs)
    try:
        result = ctx.call(protocol.Command.RESTART, specs=list(specs), rolling=rolling)
    except PazuzuError as error:
        fail(error)
    names = result.get("restarted", [])
    ctx.emit(result, f"restarted: {' '.join(names)}" if names else "restarted: nothing")


@main.command()
@click.argument("changes", nargs=-1, required=True, shell_complete=complete_change)
@pass_context
def scale(ctx: Context, changes: tuple[str, ...]) -> None:
    """Set instance counts: `myapp.web=3 myapp.queue+1`, or `myapp web=3 queue-1`."""
    from pazuzu.spec import parse_scale

    try:
        parse_scale(changes)  # a typo is a usage error, found before the daemon is asked
    except SpecError as error:
        fail(error, EXIT_USAGE)
    from pazuzu import quick  # one implementation for both entries to scale

    code = quick.scale(str(ctx.socket_path), ctx.as_json, list(changes), sys.stdout, sys.stderr)
    if code:
        sys.exit(code)


@main.command()
@click.argument("specs", nargs=-1, shell_complete=complete_spec)
@click.option("-n", "--lines", default=100, show_default=True, help="How many recent lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@pass_context
def log(ctx: Context, specs: tuple[str, ...], lines: int, follow: bool) -> None:
    """Show the recent output of instances (all when no SPEC is given)."""
    check_specs(specs)
    try:
        source = ctx.call(protocol.Command.LOG, specs=list(specs))
    except PazuzuError as error:
        fail(error)
    identifiers = source.get("journal_identifiers", [])
    files = source.get("files", [])
    if files:
        argv = _tail_argv(files, lines, follow)
    elif identifiers:
        argv = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "-n", str(lines)]
        if follow:
            argv.append("--follow")
        if ctx.as_json:
            argv[argv.index("short-iso")] = "json"
        argv += [f"SYSLOG_IDENTIFIER={identifier}" for identifier in identifiers]
    else:
        fail(PazuzuError("no instance matches", hint="see `pazuzu status` for what exists"))
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        fail(PazuzuError(f"cannot run journalctl: {exc}", hint="install systemd's journalctl"))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("app")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_context
def run(ctx: Context, app: str, command: tuple[str, ...]) -> None:
    """Run a one-off command like APP's instances: `pazuzu run myapp -- rake db:migrate`.

    In the application's directory, environment (.env included, DYNO=run.N), user and slice
    (systemd) or cgroup (libcgroup), attached to the terminal; exits with the command's status.
    One argument is a shell command line; several are quoted as they are. Needs root.
    """
    from pazuzu import oneoff

    if os.geteuid() != 0:
        fail(
            PazuzuError(
                "pazuzu run needs root: it places the command in the application's slice or "
                "cgroup and switches to the application's user",
                hint="run it with sudo",
            )
        )
    try:
        spec = ctx.call(protocol.Command.RUN, app=app)
    except PazuzuError as error:
        fail(error)
    token = str(os.getpid())
    line = oneoff.command_line(command)
    env = oneoff.environment(spec, os.environ, token)
    try:
        if spec["backend"] == "systemd":
            oneoff.exec_in_scope(spec, line, env, token)
        sys.exit(oneoff.run_in_cgroup(spec, line, env, token))
    except (OSError, subprocess.CalledProcessError) as exc:
        fail(PazuzuError(f"cannot run the command: {exc}"))


@main.command()
@pass_context
def reload(ctx: Context) -> None:
    """Re-read the configuration and Procfiles; apply only what changed."""
    try:
        result = ctx.call(protocol.Command.RELOAD)
    except PazuzuError as error:
        fail(error)
    formation = result["formation"]
    ctx.emit(result, "reloaded: " + " ".join(f"{k}={v}" for k, v in formation.items()))


@main.command()
@config_option("Configuration file to check")
@pass_context
def check(ctx: Context, config_path: Path) -> None:
    """Validate a configuration and its Procfiles, without a daemon."""
    from pazuzu.config import load_config

    try:
        config = load_config(config_path)
    except PazuzuError as error:
        fail(error)
    summary = {
        "config": str(config_path),
        "applications": {
            app.name: {worker.name: worker.num_instances for worker in app.workers}
            for app in config.applications
        },
    }
    workers = sum(len(app.workers) for app in config.applications)
    ctx.emit(
        summary,
        f"{config_path}: OK ({len(config.applications)} applications, {workers} workers)",
    )


@main.command("export")
@click.argument("output_format", metavar="FORMAT", type=click.Choice(["systemd"]))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@config_option("Configuration to export")
@click.option(
    "--prefix",
    help="Unit name prefix.  [default: cgroups.hierarchy_root, i.e. the names pazuzud uses]",
)
@pass_context
def export(
    ctx: Context, output_format: str, directory: Path, config_path: Path, prefix: str | None
) -> None:
    """Write static unit files that run the configuration without pazuzud (like foreman export).

    For every application: <prefix>-<app>.target, which wants each configured instance;
    a template <prefix>-<app>-<worker>@.service per worker; a drop-in
    <prefix>-<app>-<worker>@<n>.service.d/port.conf per instance with foreman's PORT; and
    <prefix>-<app>.slice. Existing files of the same names are replaced. The units have the
    names pazuzud gives its own: use them instead of pazuzud, not beside it.
    """
    from pazuzu.config import load_config
    from pazuzu.export import app_target, systemd_units

    try:
        config = load_config(config_path.absolute())
    except PazuzuError as error:
        fail(error)
    files = systemd_units(config, prefix)
    try:
        for name, text in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as error:
        fail(PazuzuError(f"cannot write {error.filename}: {error.strerror}"))
    targets = [
        app_target(app.name, prefix or config.cgroups.hierarchy_root) for app in config.applications
    ]
    ctx.emit(
        {"directory": str(directory), "files": sorted(files), "targets": targets},
        "\n".join(
            [
                *(f"wrote {directory / name}" for name in files),
                "then: systemctl daemon-reload && systemctl enable --now "
                + " ".join(f"'{target}'" for target in targets),
            ]
        ),
    )


def _tail_argv(files: list[str], lines: int, follow: bool) -> list[str]:
    """tail(1) over the instances' log files; `-F` also waits for files not written yet."""
    if follow:
        return ["tail", "-n", str(lines), "-F", *files]
    present = [path for path in files if os.path.exists(path)]
    if not present:
        fail(PazuzuError("no output yet", hint="the instances have not written anything"))
    return ["tail", "-n", str(lines), *present]
