"""`pazuzu run`: a one-off command in an application's environment, slice or cgroup and user.

Like `heroku run` and `foreman run`: the command runs attached to the terminal, through
`/bin/sh -c` in the application's directory, with its `.env` and `environment`, and its exit
status is the CLI's. On systemd it is a transient scope in the application's slice (via
`systemd-run --scope`); with libcgroup it runs in a cgroup of its own under the application's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pazuzu import naming
from pazuzu.errors import PazuzuError

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the caller's terminal needs to keep working inside the command.
_PASSED_THROUGH = ("TERM", "LANG", "LC_ALL", "COLORTERM")


def command_line(args: Sequence[str]) -> str:
    """One argument is a shell command line as written (`'echo $PORT'`); several are quoted."""
    return args[0] if len(args) == 1 else shlex.join(args)


def environment(spec: Mapping[str, Any], caller: Mapping[str, str], token: str) -> dict[str, str]:
    """The application's variables, `DYNO=run.<token>` as on Heroku, a PATH, the terminal's."""
    env = {key: caller[key] for key in _PASSED_THROUGH if key in caller}
    env["PATH"] = SANE_PATH
    env.update({str(k): str(v) for k, v in spec["environment"].items()})
    env["DYNO"] = f"run.{token}"
    return env


def systemd_argv(spec: Mapping[str, Any], command: str, token: str) -> list[str]:
    """systemd-run --scope in the application's slice, as its user."""
    prefix, app = spec["hierarchy_root"], spec["app"]
    argv = [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        f"--unit={prefix}-{naming.escape(app)}-run-{token}.scope",
        f"--slice={naming.app_slice(app, prefix)}",
    ]
    if spec.get("user"):
        argv.append(f"--uid={spec['user']}")
    if spec.get("group"):
        argv.append(f"--gid={spec['group']}")
    return [*argv, "--", "/bin/sh", "-c", command]


def credentials(spec: Mapping[str, Any]) -> list[str]:
    """setpriv to the application's user and group, as the libcgroup backend runs instances."""
    user, group = spec.get("user"), spec.get("group")
    if not user and not group:
        return []
    argv = ["setpriv"]
    if user:
        argv += ["--reuid", str(user)]
    if group:
        argv += ["--regid", str(group)]
    elif user:
        import pwd

        argv += ["--regid", str(pwd.getpwnam(str(user)).pw_gid)]
    argv.append("--init-groups" if user else "--clear-groups")
    return argv


def cgroup_controllers(spec: Mapping[str, Any]) -> list[str]:
    """The mounted cgroup v1 controllers the application's instances use."""
    fs_root = Path(spec["fs_root"])
    names = dict.fromkeys([*spec["subsystems"], "freezer", "pids"])
    return [name for name in names if (fs_root / name / "cgroup.procs").is_file()]


def run_in_cgroup(spec: Mapping[str, Any], command: str, env: Mapping[str, str], token: str) -> int:
    """Run `command` in `<root>/<app>/run-<token>`; remove that cgroup afterwards."""
    controllers = cgroup_controllers(spec)
    if not controllers:
        raise PazuzuError(
            f"no cgroup v1 controller of {spec['subsystems']} is mounted under {spec['fs_root']}",
            hint="pazuzu run places one-off commands with cgcreate/cgexec (cgroup v1)",
        )
    path = f"{spec['hierarchy_root']}/{spec['app']}/run-{token}"
    group = f"{','.join(controllers)}:/{path}"
    subprocess.run(["cgcreate", "-g", group], check=True)
    try:
        argv = ["cgexec", "-g", group, *credentials(spec), "/bin/sh", "-c", command]
        with subprocess.Popen(argv, env=dict(env), cwd=spec["directory"]) as child:
            while True:
                try:
                    return child.wait()
                except KeyboardInterrupt:
                    continue  # the command got the terminal's SIGINT too: wait for its exit
    finally:
        for name in controllers:
            with contextlib.suppress(OSError):
                (Path(spec["fs_root"]) / name / path).rmdir()


def exec_in_scope(
    spec: Mapping[str, Any], command: str, env: Mapping[str, str], token: str
) -> None:
    """Become `systemd-run --scope ...`: its exit status is the command's."""
    os.chdir(spec["directory"])
    argv = systemd_argv(spec, command, token)
    os.execvpe(argv[0], argv, dict(env))
