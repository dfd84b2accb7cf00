"""The systemd unit properties a worker may set with `systemd:`, with their D-Bus signatures.

Pure: the configuration checks values against this table, and the systemd backend encodes them
with the signatures written here; neither pystemd nor D-Bus is imported. The properties are
mostly systemd's sandboxing (systemd.exec(5)); they pass through to the transient unit as given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# What a property's value is once checked: the Python value the D-Bus signature encodes.
PropertyValue = bool | int | str | tuple[str, ...] | tuple[bool, tuple[str, ...]]
# A worker's properties, sorted by name: part of its definition (and fingerprint).
UnitProperties = tuple[tuple[str, PropertyValue], ...]


class Kind(StrEnum):
    """How a value is written in the configuration, and checked."""

    BOOLEAN = "boolean"  # true or false
    CHOICE = "choice"  # one of `choices`; true/false mean yes/no where those are choices
    PATHS = "paths"  # absolute paths, each optionally prefixed with `-` (may be missing)
    NAMES = "names"  # a list of words
    LIST = "list"  # allow-list of names, or deny-list when the first starts with `~`
    MODE = "mode"  # a file mode in octal: `0027`
    INTEGER = "integer"  # between `minimum` and `maximum`
    LIMIT = "limit"  # a count, or `infinity`


@dataclass(frozen=True, slots=True)
class UnitProperty:
    name: str
    signature: str  # D-Bus type of the value, as systemd's StartTransientUnit reads it
    kind: Kind
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = 2**64 - 1


class PropertyError(ValueError):
    """A value that does not fit its property: what is wrong, and an example that fits."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


INFINITY = 2**64 - 1  # systemd's "no limit" for resource limits


def _table(*properties: UnitProperty) -> dict[str, UnitProperty]:
    return {p.name: p for p in properties}


def _booleans(*names: str) -> list[UnitProperty]:
    return [UnitProperty(name, "b", Kind.BOOLEAN) for name in names]


def _paths(*names: str) -> list[UnitProperty]:
    return [UnitProperty(name, "as", Kind.PATHS) for name in names]


# Signatures as systemd 252 reads them in StartTransientUnit (src/core/dbus-execute.c).
PROPERTIES: Mapping[str, UnitProperty] = _table(
    *_booleans(
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "NoNewPrivileges",
        "PrivateDevices",
        "PrivateIPC",
        "PrivateMounts",
        "PrivateNetwork",
        "PrivateTmp",
        "PrivateUsers",
        "ProtectClock",
        "ProtectControlGroups",
        "ProtectHostname",
        "ProtectKernelLogs",
        "ProtectKernelModules",
        "ProtectKernelTunables",
        "RemoveIPC",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ),
    UnitProperty("ProtectSystem", "s", Kind.CHOICE, ("yes", "no", "full", "strict")),
    UnitProperty("ProtectHome", "s", Kind.CHOICE, ("yes", "no", "read-only", "tmpfs")),
    UnitProperty(
        "ProtectProc", "s", Kind.CHOICE, ("default", "invisible", "ptraceable", "noaccess")
    ),
    UnitProperty("ProcSubset", "s", Kind.CHOICE, ("all", "pid")),
    UnitProperty("KeyringMode", "s", Kind.CHOICE, ("inherit", "private", "shared")),
    *_paths("ExecPaths", "InaccessiblePaths", "NoExecPaths", "ReadOnlyPaths", "ReadWritePaths"),
    UnitProperty("SupplementaryGroups", "as", Kind.NAMES),
    UnitProperty("SystemCallArchitectures", "as", Kind.NAMES),
    UnitProperty("RestrictAddressFamilies", "(bas)", Kind.LIST),
    UnitProperty("SystemCallFilter", "(bas)", Kind.LIST),
    UnitProperty("UMask", "u", Kind.MODE, maximum=0o777),
    UnitProperty("Nice", "i", Kind.INTEGER, minimum=-20, maximum=19),
    UnitProperty("OOMScoreAdjust", "i", Kind.INTEGER, minimum=-1000, maximum=1000),
    UnitProperty("LimitCORE", "t", Kind.LIMIT),
    UnitProperty("LimitNOFILE", "t", Kind.LIMIT),
    UnitProperty("LimitNPROC", "t", Kind.LIMIT),
)

# Properties pazuzu sets itself, and the key that controls each instead.
OWNED: Mapping[str, str] = {
    "CPUQuota": "limits.cpu",
    "Environment": "environment",
    "ExecStart": "command_line (or the Procfile)",
    "Group": "group",
    "KillMode": "stop_timeout (pazuzu always stops the whole cgroup)",
    "MemoryMax": "limits.memory",
    "Restart": "nothing: pazuzu always respawns, with its own backoff",
    "Slice": "nothing: the slice is the application's",
    "TasksMax": "limits.tasks",
    "TimeoutStopSec": "stop_timeout",
    "Type": "notify",
    "User": "user",
    "WorkingDirectory": "procfile (instances run in its directory)",
}

_WORD = re.compile(r"[A-Za-z0-9_@:.+-]+")
_OCTAL = re.compile(r"0?[0-7]{1,3}")


def check_value(prop: UnitProperty, value: object, text: str | None) -> PropertyValue:
    """The value of `prop` that `value` (as YAML read it; `text` as written) stands for."""
    if prop.kind is Kind.BOOLEAN:
        if isinstance(value, bool):
            return value
        raise PropertyError(f"must be true or false, got {value!r}", "e.g. `true`")
    if prop.kind is Kind.CHOICE:
        if isinstance(value, bool) and "yes" in prop.choices:
            return "yes" if value else "no"
        if isinstance(value, str) and value in prop.choices:
            return value
        raise PropertyError(
            f"must be one of {', '.join(prop.choices)}, got {value!r}", f"e.g. `{prop.choices[-1]}`"
        )
    if prop.kind is Kind.PATHS:
        paths = _words(value, "a list of absolute paths", "e.g. `[/srv/app/tmp]`")
        for path in paths:
            if not path.lstrip("-+").startswith("/"):
                raise PropertyError(
                    f"{path!r} is not an absolute path",
                    "write /full/path; prefix it with - if it may be missing",
                )
        return paths
    if prop.kind is Kind.NAMES:
        return _words(value, "a list of names", "e.g. `[native]`")
    if prop.kind is Kind.LIST:
        names = _words(value, "a list of names", "e.g. `[AF_UNIX, AF_INET, AF_INET6]`")
        deny = names[0].startswith("~")
        names = (names[0].removeprefix("~"), *names[1:]) if deny else names
        if not all(_WORD.fullmatch(name) for name in names):
            raise PropertyError(
                f"must be a list of names, got {value!r}",
                "start the first with ~ to deny the ones listed: `[~AF_PACKET]`",
            )
        return (not deny, names)
    if prop.kind is Kind.MODE:
        written = text if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(written, str) and _OCTAL.fullmatch(written):
            return int(written, 8)
        raise PropertyError(f"must be an octal file mode, got {value!r}", "e.g. `'0027'`")
    if prop.kind is Kind.LIMIT and value == "infinity":
        return INFINITY
    if isinstance(value, int) and not isinstance(value, bool):
        if prop.minimum <= value <= prop.maximum:
            return value
        raise PropertyError(
            f"must be between {prop.minimum} and {prop.maximum}, got {value}",
            f"e.g. `{max(prop.minimum, 0)}`",
        )
    extra = " or infinity" if prop.kind is Kind.LIMIT else ""
    raise PropertyError(f"must be an integer{extra}, got {value!r}", "e.g. `1024`")


def _words(value: object, what: str, hint: str) -> tuple[str, ...]:
    """A list of non-empty strings; a single string is its whitespace-separated words."""
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = value
    else:
        raise PropertyError(f"must be {what}, got {value!r}", hint)
    if not items or not all(isinstance(i, str) and i.strip() and "\0" not in i for i in items):
        raise PropertyError(f"must be {what}, got {value!r}", hint)
    return tuple(str(i).strip() for i in items)
