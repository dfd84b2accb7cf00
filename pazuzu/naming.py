"""The systemd names of applications and instances: the one place that makes and parses them.

An application runs in `pazuzu-<app>.slice` inside `pazuzu.slice`; an instance is the unit
`pazuzu-<app>-<worker>@<n>.service`. Application and worker names are escaped as
`systemd-escape` does, so a `-` inside a name (`my-app` -> `my\\x2dapp`) never reads as a
separator and never creates a bogus parent slice. These names are a stable interface: users
set resource limits on them with `systemctl set-property`.
"""

from __future__ import annotations

import functools
import re
import string

from pazuzu.model import InstanceId

PREFIX = "pazuzu"
ROOT_SLICE = f"{PREFIX}.slice"

# What systemd leaves alone in a unit-name component (`VALID_CHARS` in systemd's
# unit-name.c, minus `-` and `\`, which carry meaning there).
_PLAIN = frozenset(string.ascii_letters + string.digits + ":_.")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


@functools.cache
def _unit_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-([^-@]+)-([^-@]+)@([1-9][0-9]*)\.service")


@functools.cache
def _app_slice_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-([^-@]+)\.slice")


def escape(name: str) -> str:
    """Escape one name component as `systemd-escape NAME` prints it (`my-app` -> `my\\x2dapp`).

    Letters, digits, `:`, `_` and `.` stay; a leading `.` and every other byte of the UTF-8
    encoding become `\\xNN`. Unlike `systemd-escape`, a `/` is escaped too (`\\x2f`) instead of
    becoming `-`: these names are not paths, and a `-` must only ever separate components.
    """
    out: list[str] = []
    for i, char in enumerate(name):
        if char in _PLAIN and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def unescape(escaped: str) -> str:
    """Undo `escape`: decode every `\\xNN`; raise ValueError if the result is not UTF-8."""
    if "\\" in _ESCAPE.sub("", escaped):
        raise ValueError(f"malformed escape in {escaped!r}")
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(escaped):
        raw += escaped[position : match.start()].encode()
        raw.append(int(match.group(1), 16))
        position = match.end()
    raw += escaped[position:].encode()
    return raw.decode()


def root_slice(prefix: str = PREFIX) -> str:
    """The slice that holds every application: `pazuzu.slice` (`cgroups.hierarchy_root`)."""
    return f"{prefix}.slice"


def app_slice(app: str, prefix: str = PREFIX) -> str:
    """The slice of one application: `pazuzu-my\\x2dapp.slice` for `my-app`."""
    return f"{prefix}-{escape(app)}.slice"


def parse_app_slice(name: str, prefix: str = PREFIX) -> str | None:
    """The application whose slice `name` is, or None for any other unit."""
    match = _app_slice_re(prefix).fullmatch(name)
    if match is None:
        return None
    return _component(match.group(1))


def unit_name(instance: InstanceId, prefix: str = PREFIX) -> str:
    """The service unit of one instance: `pazuzu-my\\x2dapp-web@2.service`."""
    if not instance.app or not instance.worker or instance.number < 1:
        raise ValueError(f"no unit name for {instance!r}")
    return f"{prefix}-{escape(instance.app)}-{escape(instance.worker)}@{instance.number}.service"


def parse_unit_name(name: str, prefix: str = PREFIX) -> InstanceId | None:
    """The instance that unit `name` runs, or None if `name` is not a pazuzu instance unit.

    Only the exact form `unit_name` makes is ours: a unit whose escaping differs (upper-case
    hex, an escaped letter) or whose number has a leading zero was not made by pazuzu.
    """
    match = _unit_re(prefix).fullmatch(name)
    if match is None:
        return None
    app = _component(match.group(1))
    worker = _component(match.group(2))
    if app is None or worker is None:
        return None
    return InstanceId(app, worker, int(match.group(3)))


def unit_pattern(prefix: str = PREFIX) -> str:
    """A glob for `ListUnitsByPatterns` that matches every instance unit pazuzu makes."""
    return f"{prefix}-*@*.service"


def syslog_identifier(instance: InstanceId) -> str:
    """The journal's `SyslogIdentifier=` of an instance's output: `myapp.web.2`."""
    return str(instance)


def _component(escaped: str) -> str | None:
    """The name an escaped component stands for, if `escape` would have produced it."""
    try:
        name = unescape(escaped)
    except ValueError:
        return None
    return name if name and escape(name) == escaped else None
