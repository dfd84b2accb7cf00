"""Man pages pazuzu(1), pazuzud(8) and pazuzu.conf(5), and the shell completion scripts.

The pages are generated from what the programs themselves know: the click commands and options
of `pazuzu.cli.main` and `pazuzu.daemon.main` (the text of `--help`), and `CONFIG_REFERENCE`,
the configuration reference, which a test holds to the keys `pazuzu.config` accepts. Regenerate
the committed copies after changing either:

    python -m pazuzu.manpages contrib/man contrib/completions
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pazuzu import __version__


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One configuration key: where it goes, what it takes, its default and what it does."""

    section: str  # the mapping it belongs in: "" (top level), "cgroups", "applications.NAME", …
    name: str
    type: str
    default: str
    meaning: str

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


TOP = ""
CGROUPS = "cgroups"
WORKER_LOGS = "worker_logs"
APPLICATION = "applications.NAME"
WORKER = "applications.NAME.workers.WORKER"
LIMITS = "limits"  # under an application, and under a worker

SECTION_TITLES = {
    TOP: "TOP-LEVEL KEYS",
    CGROUPS: "CGROUPS KEYS",
    WORKER_LOGS: "WORKER_LOGS KEYS",
    APPLICATION: "APPLICATION KEYS",
    WORKER: "WORKER KEYS",
    LIMITS: "LIMITS KEYS",
}

# The configuration reference: the man page is made from it, and a test fails when
# pazuzu.config accepts a key that is not here.
CONFIG_REFERENCE: tuple[ConfigKey, ...] = (
    ConfigKey(
        TOP,
        "applications",
        "mapping",
        "none",
        "NAME: {application keys}; names are [A-Za-z0-9_-]+.",
    ),
    ConfigKey(
        TOP,
        "procfile",
        "path",
        "none",
        "Shorthand for one application with default settings, named after the Procfile's "
        "directory (`procfile: /srv/myapp` defines `myapp`). It may stand beside "
        "`applications`, but not define the same name twice.",
    ),
    ConfigKey(
        TOP,
        "include",
        "path or glob, or a list of them",
        "none",
        "Further files merged over this one, in the order listed (a glob's matches sorted): "
        "mappings merge key by key, recursively; any other value is replaced. A glob may "
        "match nothing; a plain path must exist. Included files may include others; a loop "
        "is refused.",
    ),
    ConfigKey(
        TOP,
        "log_path",
        "string",
        "stderr (the journal under systemd)",
        "`syslog` (via /dev/log), or a file to append pazuzud's own log to.",
    ),
    ConfigKey(TOP, "socket_path", "path", "/var/run/pazuzud.socket", "The control socket."),
    ConfigKey(
        TOP,
        "socket_group",
        "group name",
        "none (root only)",
        "A group whose members may use the control socket (mode 0660).",
    ),
    ConfigKey(
        TOP,
        "state_path",
        "path",
        "/var/lib/pazuzu/state.json",
        "Where the formation (scale, stop, start) is persisted across restarts and reboots.",
    ),
    ConfigKey(TOP, "cgroups", "mapping", "see below", "Names and cgroups: the cgroups keys."),
    ConfigKey(
        TOP,
        "worker_logs",
        "mapping",
        "see below",
        "Instance output of the libcgroup backend: the worker_logs keys.",
    ),
    ConfigKey(
        CGROUPS,
        "hierarchy_root",
        "string",
        "pazuzu",
        "The root of pazuzu's tree: on systemd the root slice `<hierarchy_root>.slice` and the "
        "unit prefix (`pazuzu-<app>-<worker>@<n>.service`); with libcgroup the top cgroup. "
        "`hiearchy_root`, the original Pazuzu's spelling, is accepted as an alias, but not both "
        "together. Changing it needs a daemon restart, and units under the old root are no "
        "longer seen.",
    ),
    ConfigKey(
        CGROUPS,
        "subsystems",
        "list of strings",
        "[memory, cpu, cpuacct, blkio]",
        "libcgroup backend: the controllers each instance gets a cgroup in (those not mounted "
        "are skipped; freezer is added when mounted).",
    ),
    ConfigKey(
        CGROUPS,
        "fs_root",
        "path",
        "/sys/fs/cgroup",
        "libcgroup backend: where the cgroup filesystems are mounted.",
    ),
    ConfigKey(
        WORKER_LOGS,
        "directory",
        "path",
        "/var/log/pazuzu",
        "libcgroup backend: instance output goes to <directory>/<app>/<worker>.<n>/current.",
    ),
    ConfigKey(
        WORKER_LOGS,
        "max_bytes",
        "integer >= 1",
        "10485760 (10 MiB)",
        "libcgroup backend: the size at which an instance's log is rotated.",
    ),
    ConfigKey(
        WORKER_LOGS,
        "keep",
        "integer >= 1",
        "5",
        "libcgroup backend: rotated files kept per instance.",
    ),
    ConfigKey(
        APPLICATION,
        "procfile",
        "path",
        "required",
        "The Procfile, or a directory holding a file named Procfile.",
    ),
    ConfigKey(APPLICATION, "user", "name or uid", "systemd's default (root)", "The workers' user."),
    ConfigKey(APPLICATION, "group", "name or gid", "the user's group", "The workers' group."),
    ConfigKey(
        APPLICATION,
        "environment",
        "mapping of strings",
        "none",
        "Variables for every worker; they override the .env file.",
    ),
    ConfigKey(
        APPLICATION,
        "stop_timeout",
        "seconds (> 0)",
        "10",
        "The default stop_timeout of the application's workers.",
    ),
    ConfigKey(
        APPLICATION, "workers", "mapping", "none", "Per-worker settings, WORKER: {worker keys}."
    ),
    ConfigKey(
        APPLICATION,
        "limits",
        "mapping",
        "none",
        "Limits on all the application's instances together (limits keys): on systemd "
        "properties of its slice, with libcgroup the files of its cgroup. A reload applies "
        "changes without restarting anything.",
    ),
    ConfigKey(
        APPLICATION,
        "systemd",
        "mapping of systemd unit properties",
        "none",
        "Sandboxing and other systemd unit properties for the instances of every worker, "
        "passed through as given (`NoNewPrivileges: true`, `ProtectSystem: strict`, "
        "`PrivateTmp: true`, `ReadWritePaths: [/srv/app/tmp]`); a worker's own `systemd` "
        "overrides them property by property. Only the properties pazuzu knows are accepted, "
        "with their value checked. A change restarts the instances. The libcgroup backend "
        "cannot apply them: it logs a warning per worker and runs the instances without them.",
    ),
    ConfigKey(
        WORKER,
        "num_instances",
        "integer >= 0",
        "1",
        "Instances to run; 0 keeps the worker defined but stopped.",
    ),
    ConfigKey(
        WORKER,
        "command_line",
        "string",
        "the Procfile's command",
        "Replaces the Procfile's command; required for a worker that is not in the Procfile "
        "(such a worker comes after the Procfile's, in configuration order, for PORT).",
    ),
    ConfigKey(
        WORKER,
        "stop_timeout",
        "seconds (> 0)",
        "the application's",
        "Time between SIGTERM and SIGKILL when stopping an instance.",
    ),
    ConfigKey(
        WORKER,
        "environment",
        "mapping of strings",
        "none",
        "Variables for this worker; they override the application's.",
    ),
    ConfigKey(
        WORKER,
        "notify",
        "true or false",
        "false",
        "The worker says when it is ready by sending READY=1 to $NOTIFY_SOCKET (sd_notify(3)): "
        "starts and rolling restarts wait for it (systemd Type=notify; with libcgroup pazuzud "
        "serves the socket). Otherwise an instance is ready once started.",
    ),
    ConfigKey(
        WORKER,
        "start_timeout",
        "seconds (> 0)",
        "60",
        "How long a notify worker may take to send READY=1 before its start counts as failed.",
    ),
    ConfigKey(
        WORKER,
        "limits",
        "mapping",
        "none",
        "Limits on each instance of the worker (limits keys): on systemd properties of its "
        "unit, with libcgroup the files of its cgroup. A reload applies changes to running "
        "instances without restarting them.",
    ),
    ConfigKey(
        WORKER,
        "systemd",
        "mapping of systemd unit properties",
        "the application's",
        "systemd unit properties of each instance, over the application's `systemd` (see "
        "there): e.g. `{NoNewPrivileges: true, PrivateTmp: true}`. systemd backend only.",
    ),
    ConfigKey(
        LIMITS,
        "memory",
        "bytes, or a size like 512M, 2G",
        "none",
        "Memory limit (systemd MemoryMax=; memory.limit_in_bytes or memory.max).",
    ),
    ConfigKey(
        LIMITS,
        "cpu",
        "percent like 50%, or CPUs like 1.5",
        "none",
        "CPU time quota; 100% is one CPU (systemd CPUQuota=; cpu.cfs_quota_us or cpu.max).",
    ),
    ConfigKey(
        LIMITS,
        "tasks",
        "integer >= 1",
        "none",
        "Processes and threads at most, a guard against fork bombs (systemd TasksMax=; pids.max).",
    ),
)

# The aliases a section accepts besides its keys, documented with the key they stand for.
CONFIG_ALIASES = {CGROUPS: ("hiearchy_root",)}


# roff


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, `code` in bold, no control lines."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    # A line that starts with `.` or `'` would be read as a request.
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    """Click help text as paragraphs, each joined onto one line."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text.strip()) if block]


def _header(name: str, section: int, title: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "" "pazuzu {__version__}" "{title}"',
        # Ragged right, no hyphenation: unit names and paths must stay whole.
        ".ad l",
        ".nh",
        ".SH NAME",
        f"{roff(name)} \\- {roff(_NAMES[name])}",
    ]


_NAMES = {
    "pazuzu": "control pazuzud, the supervisor of Procfile applications",
    "pazuzud": "supervise the applications of a pazuzu configuration",
    "pazuzu.conf": "configuration of pazuzud, the supervisor of Procfile applications",
}


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    """A `.TP` entry per option, with the text and defaults of `--help`."""
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:  # an argument (named in the synopsis), or a hidden option
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{roff(names)}\\fR", roff(" ".join(help_text.split()))]
    return lines


def _usage(command: click.Command, ctx: click.Context) -> str:
    return roff(" ".join(command.collect_usage_pieces(ctx)))


def pazuzu_page() -> str:
    """pazuzu(1), from the click group `pazuzu.cli.main`."""
    from pazuzu.cli import main

    root = click.Context(main, info_name="pazuzu", **main.context_settings)
    lines = _header("pazuzu", 1, "User Commands")
    lines += [".SH SYNOPSIS", f"\\fBpazuzu\\fR {_usage(main, root)}", ".SH DESCRIPTION"]
    for paragraph in _paragraphs(main.help or ""):
        lines += [".PP", roff(paragraph)]
    lines += [".PP", roff(_DESCRIPTION)]
    lines += [".SH OPTIONS", *_options(main, root), ".SH COMMANDS"]
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        if command is None or command.hidden:
            continue
        ctx = click.Context(command, info_name=name, parent=root)
        lines.append(f'.SS "pazuzu {roff(name)} {_usage(command, ctx)}"')
        for index, paragraph in enumerate(_paragraphs(command.help or "")):
            lines += [".PP" if index else "", roff(paragraph)]
        lines += _options(command, ctx)
    lines = [line for line in lines if line != ""]
    lines += _sections(_PAZUZU_SECTIONS)
    return "\n".join(lines) + "\n"


_DESCRIPTION = (
    "pazuzu talks to pazuzud over its control socket; check and export need no daemon. "
    "Every command works without a terminal, and --json prints the result as JSON."
)

_PAZUZU_SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "SPECS",
        "A spec names targets: APP, APP.WORKER or APP.WORKER.N, where * and ? match any text "
        "and one character in each part: `myapp`, `myapp.web`, `myapp.web.2`, `'myapp.web*'`, "
        "`'*'`. A spec stops short to mean everything below it. A spec without wildcards that "
        "names nothing is an error; a glob may match nothing. Quote globs from the shell.\n\n"
        "Scale changes: APP.WORKER=N sets, APP.WORKER+N adds, APP.WORKER-N removes (never "
        "below 0); or give the application once, first: `pazuzu scale myapp web=3 queue-1`.",
    ),
    (
        "SHELL COMPLETION",
        "Completion for bash, zsh and fish completes commands, options, and the specs of the "
        "running daemon (asked with a short timeout; nothing is offered when it cannot be "
        "reached). Install contrib/completions/pazuzu.bash, _pazuzu or pazuzu.fish, or load "
        'it from the program: `eval "$(_PAZUZU_COMPLETE=bash_source pazuzu)"` '
        "(zsh_source, fish_source).",
    ),
    (
        "ENVIRONMENT",
        "PAZUZU_SOCKET: the control socket, as --socket.\n\n"
        "PAZUZU_CONFIG: the configuration of check and export, as --config.\n\n"
        "NO_COLOR: when set and not empty, status prints no colour; without a terminal it "
        "never does.",
    ),
    (
        "EXIT STATUS",
        "0: done. 1: an error (unknown spec, invalid configuration, daemon unreachable or "
        "refusing). 2: usage error. 3: status found an instance that should run but does not "
        "(systemctl's convention).",
    ),
    ("SEE ALSO", "pazuzud(8), pazuzu.conf(5), systemctl(1), journalctl(1)"),
)


def pazuzud_page() -> str:
    """pazuzud(8), from the click command `pazuzu.daemon.main`."""
    from pazuzu.daemon import main

    ctx = click.Context(main, info_name="pazuzud", **main.context_settings)
    lines = _header("pazuzud", 8, "System Administration")
    lines += [".SH SYNOPSIS", f"\\fBpazuzud\\fR {_usage(main, ctx)}", ".SH DESCRIPTION"]
    for paragraph in [*_paragraphs(main.help or ""), *_paragraphs(_DAEMON_DESCRIPTION)]:
        lines += [".PP", roff(paragraph)]
    lines += [".SH OPTIONS", *_options(main, ctx)]
    lines += _sections(_PAZUZUD_SECTIONS)
    return "\n".join(lines) + "\n"


_DAEMON_DESCRIPTION = """
pazuzud keeps the desired number of instances of every worker of every configured application
running. On a host booted with systemd each instance is a transient service,
pazuzu-<app>-<worker>@<n>.service in pazuzu-<app>.slice; elsewhere each runs in its own
cgroup, in the layout libcgroup's cgcreate and cgexec use.

Workers outlive the daemon: stopping, killing or crashing pazuzud leaves them running, and
the next pazuzud re-attaches to them by cgroup membership and starts no duplicate. Crashed
instances are respawned at once, then with a backoff of up to a minute, for ever.

pazuzud is a Type=notify service: READY=1 after re-attach and the first reconcile, STATUS=
with the formation, RELOADING=1 around a reload, STOPPING=1, and WATCHDOG=1 when the service
sets WatchdogSec.
"""

_PAZUZUD_SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "SIGNALS",
        "SIGHUP: reload the configuration, as `pazuzu reload`; an invalid one is rejected "
        "whole.\n\nSIGTERM, SIGINT: exit, leaving every worker running.",
    ),
    (
        "FILES",
        "/etc/pazuzu/pazuzu.conf: the configuration, see pazuzu.conf(5).\n\n"
        "/var/run/pazuzud.socket: the control socket (socket_path).\n\n"
        "/var/lib/pazuzu/state.json: the persisted formation (state_path).",
    ),
    (
        "ENVIRONMENT",
        "PAZUZU_CONFIG: the configuration, as --config.\n\n"
        "NOTIFY_SOCKET: where readiness and status are sent (sd_notify).",
    ),
    ("SEE ALSO", "pazuzu(1), pazuzu.conf(5), systemd.service(5), sd_notify(3)"),
)


def pazuzu_conf_page() -> str:
    """pazuzu.conf(5), from CONFIG_REFERENCE."""
    lines = _header("pazuzu.conf", 5, "File Formats")
    lines += [".SH SYNOPSIS", "/etc/pazuzu/pazuzu.conf", ".SH DESCRIPTION"]
    for paragraph in _paragraphs(_CONF_DESCRIPTION):
        lines += [".PP", roff(paragraph)]
    for section, title in SECTION_TITLES.items():
        lines.append(f".SH {title}")
        if section:
            lines += [".PP", roff(f"Under `{section}`.")]
        for key in CONFIG_REFERENCE:
            if key.section == section:
                lines += [
                    ".TP",
                    f"\\fB{roff(key.name)}\\fR ({roff(key.type)}; default: {roff(key.default)})",
                    roff(key.meaning),
                ]
    lines += _sections(_CONF_SECTIONS)
    return "\n".join(lines) + "\n"


_CONF_DESCRIPTION = """
pazuzud reads a YAML configuration: /etc/pazuzu/pazuzu.conf, or the file named by -c PATH or
$PAZUZU_CONFIG. `pazuzu check` validates it, with its Procfiles, without a daemon.

Unknown keys and duplicate keys are errors that name the file, the line and the key, with a
suggestion. Relative paths are relative to the directory of the file they are written in.
Environment values are strings; numbers and booleans are taken as written. YAML anchors,
aliases and merge keys work.
"""

_CONF_SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "PROCFILE",
        "One `name: command line` per line; blank lines and # comments are ignored; names are "
        "[A-Za-z0-9_-]+. A line that does not parse, or a duplicate name, is an error with "
        "its line number. Each command runs as `/bin/sh -c COMMAND` in the Procfile's "
        "directory, as the application's user and group. A .env file beside the Procfile "
        "(KEY=value lines) is loaded into every worker.",
    ),
    (
        "INSTANCE ENVIRONMENT",
        "Lowest precedence first: the .env file, the application's environment, the worker's "
        "environment, then PORT (foreman's rule: 5000 + 100 x the worker's index + instance "
        "number - 1), PAZUZU_APP, PAZUZU_WORKER, PAZUZU_INSTANCE and DYNO (web.2), which "
        "cannot be overridden.",
    ),
    (
        "EXAMPLE",
        "applications:\n  example:\n    procfile: /srv/example\n    user: www-data\n"
        "    workers:\n      web:\n        num_instances: 2",
    ),
    ("SEE ALSO", "pazuzud(8), pazuzu(1)"),
)


def _sections(sections: tuple[tuple[str, str], ...]) -> list[str]:
    lines: list[str] = []
    for title, body in sections:
        lines.append(f".SH {title}")
        if title == "EXAMPLE":
            lines += [".PP", ".nf", *(roff(line) for line in body.split("\n")), ".fi"]
            continue
        for paragraph in _paragraphs(body):
            lines += [".PP", roff(paragraph)]
    return lines


def man_pages() -> dict[str, str]:
    """Every man page: `{file name: roff}`."""
    return {
        "pazuzu.1": pazuzu_page(),
        "pazuzud.8": pazuzud_page(),
        "pazuzu.conf.5": pazuzu_conf_page(),
    }


COMPLETION_FILES = {"bash": "pazuzu.bash", "zsh": "_pazuzu", "fish": "pazuzu.fish"}


def completion_scripts() -> dict[str, str]:
    """The completion script of each shell, as `_PAZUZU_COMPLETE=<shell>_source pazuzu` prints."""
    from click.shell_completion import get_completion_class

    from pazuzu.cli import main

    scripts: dict[str, str] = {}
    for shell, name in COMPLETION_FILES.items():
        completion = get_completion_class(shell)
        assert completion is not None, shell  # click ships these three
        scripts[name] = completion(main, {}, "pazuzu", "_PAZUZU_COMPLETE").source()
    return scripts


def write(files: dict[str, str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
        print(directory / name)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m pazuzu.manpages MAN_DIR [COMPLETIONS_DIR]")
    write(man_pages(), Path(sys.argv[1]))
    if len(sys.argv) == 3:
        write(completion_scripts(), Path(sys.argv[2]))
