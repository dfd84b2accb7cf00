"""Loading pazuzu.conf: the YAML and its includes, then every application's Procfile and `.env`.

The YAML is composed, not loaded: every value keeps the file and line it was written on, so
that an error can say where it is, even after included files have been merged in.
"""

from __future__ import annotations

import difflib
import glob
import grp
import math
import os
import pwd
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from pazuzu.defaults import DEFAULT_SOCKET_PATH
from pazuzu.errors import ConfigError
from pazuzu.model import (
    BASE_PORT,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STATE_PATH,
    DEFAULT_STOP_TIMEOUT,
    AppConfig,
    CgroupsConfig,
    Config,
    InstanceId,
    InstanceSpec,
    Limits,
    WorkerConfig,
    WorkerLogsConfig,
)
from pazuzu.naming import escape
from pazuzu.procfile import ENV_KEY_PATTERN, NAME_PATTERN, parse_dotenv, parse_procfile
from pazuzu.unit_properties import OWNED, PROPERTIES, PropertyError, UnitProperties, check_value

_TOP_KEYS = (
    "applications",
    "cgroups",
    "include",
    "log_path",
    "procfile",
    "socket_group",
    "socket_path",
    "state_path",
    "worker_logs",
)
_WORKER_LOGS_KEYS = ("directory", "keep", "max_bytes")
_CGROUPS_KEYS = ("fs_root", "hierarchy_root", "subsystems")
_HIERARCHY_ROOT_ALIAS = "hiearchy_root"  # the original Pazuzu's spelling
_APP_KEYS = (
    "environment",
    "group",
    "limits",
    "procfile",
    "stop_timeout",
    "systemd",
    "user",
    "workers",
)
_WORKER_KEYS = (
    "command_line",
    "environment",
    "limits",
    "notify",
    "num_instances",
    "start_timeout",
    "stop_timeout",
    "systemd",
)
_LIMITS_KEYS = ("cpu", "memory", "tasks")
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Configuration files, Procfiles and `.env` files are read whole; a bigger one is a mistake.
MAX_FILE_BYTES = 16 * 1024 * 1024
# systemd refuses unit names longer than this (UNIT_NAME_MAX).
UNIT_NAME_MAX = 255
# Room kept in unit names for instance numbers: `@99999` allows scaling to 99999.
_INSTANCE_DIGITS = 5

T = TypeVar("T")
D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class _Node:
    """A YAML value with the file and line it was written on.

    `value` is a dict of `_Node` for a mapping, a list of `_Node` for a sequence, else the
    scalar as YAML reads it; `text` is a scalar as written (`010`, `yes`), for environments.
    """

    value: object
    file: Path
    line: int
    text: str | None = None


def load_config(path: Path) -> Config:
    """Read a configuration, its includes, Procfiles and `.env` files; ConfigError if invalid."""
    root = _load_tree(path, (path.resolve(),))
    fields = _mapping(root, "", _TOP_KEYS)
    config = Config(
        path=path,
        log_path=_field(fields, "log_path", "", _log_path, None),
        socket_path=_field(fields, "socket_path", "", _file_path, DEFAULT_SOCKET_PATH),
        socket_group=_field(fields, "socket_group", "", _account, None),
        state_path=_field(fields, "state_path", "", _file_path, DEFAULT_STATE_PATH),
        cgroups=_cgroups(fields.get("cgroups")),
        worker_logs=_worker_logs(fields.get("worker_logs")),
        applications=_applications(fields),
    )
    _check_unit_names(config, fields)
    return config


def instance_spec(app: AppConfig, worker: WorkerConfig, number: int) -> InstanceSpec:
    """Everything a backend needs to run instance `number` (1-based) of `worker`."""
    return instance_specs(app, worker, (number,))[0]


def instance_specs(
    app: AppConfig, worker: WorkerConfig, numbers: Iterable[int]
) -> list[InstanceSpec]:
    """instance_spec for several numbers of one worker; what they share is worked out once."""
    systemd = tuple(sorted({**dict(app.systemd), **dict(worker.systemd)}.items()))
    shared = {
        **app.environment,  # the `.env` file, overridden by the application's `environment`
        **worker.environment,
        "PAZUZU_APP": app.name,
        "PAZUZU_WORKER": worker.name,
    }
    directory = app.directory
    specs = []
    for number in numbers:
        instance = InstanceId(app.name, worker.name, number)
        environment = {
            **shared,
            "PORT": str(BASE_PORT + 100 * worker.index + number - 1),  # foreman's rule
            "PAZUZU_INSTANCE": str(number),
            "DYNO": instance.dyno,
        }
        specs.append(
            InstanceSpec(
                id=instance,
                command_line=worker.command_line,
                directory=directory,
                environment=tuple(sorted(environment.items())),
                user=app.user,
                group=app.group,
                stop_timeout=worker.stop_timeout,
                limits=worker.limits,
                app_limits=app.limits,
                notify=worker.notify,
                start_timeout=worker.start_timeout,
                systemd=systemd,
            )
        )
    return specs


# Reading files, YAML and includes


def _load_tree(path: Path, including: tuple[Path, ...]) -> _Node:
    """Read one configuration file and merge its includes over it, in order of inclusion."""
    hint = "create it, or name another file with `pazuzud -c PATH` or PAZUZU_CONFIG"
    root = _parse_yaml(_read(path, missing_hint=hint), path)
    if not isinstance(root.value, dict):
        raise ConfigError(
            f"the configuration must be a mapping of keys, got {_kind(root.value)}",
            file=path,
            line=root.line,
            hint="write `key: value` lines, e.g. `applications:`",
        )
    own = {key: node for key, node in root.value.items() if key != "include"}
    merged = _Node(own, root.file, root.line)
    for item, included in _included_paths(root.value.get("include"), path):
        if included.resolve() in including:
            raise _fail(
                item, "include", f"{included} is already being read", "remove the include loop"
            )
        merged = _merge(merged, _load_tree(included, (*including, included.resolve())))
    return merged


def _read(path: Path, *, missing_hint: str) -> str:
    """The text of a regular file; never blocks on a FIFO, never reads a device or a huge file."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer would otherwise wait for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("no such file", file=path, hint=missing_hint) from None
    except OSError as error:
        raise ConfigError(
            f"cannot read: {error.strerror}",
            file=path,
            hint="check that it is a regular file that pazuzud (root) may read",
        ) from None
    with open(fd, "rb", closefd=True) as file:
        kind = _file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise ConfigError(
                f"cannot read: it is {kind}, not a regular file",
                file=path,
                hint="name a regular file: reading a FIFO or a device could block or never end",
            )
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise ConfigError(
                f"cannot read: {error.strerror}", file=path, hint="check the file"
            ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
            file=path,
            hint="is this the right file? configuration files and Procfiles are small",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {error.start})",
            file=path,
            hint="save the file as UTF-8",
        ) from None


def _file_kind(mode: int) -> str | None:
    """What a file that is not a regular one is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((words for test, words in kinds.items() if test(mode)), "not a regular file")


def _parse_yaml(text: str, path: Path) -> _Node:
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise ConfigError(
            f"invalid YAML: {error.problem or error.context}",
            file=path,
            line=mark.line + 1 if mark else None,
            hint="check the indentation, quoting and `key: value` syntax there",
        ) from None
    except ReaderError as error:
        raise ConfigError(
            f"invalid YAML: character U+{error.character:04X} is not allowed",
            file=path,
            line=text.count("\n", 0, error.position) + 1,
            hint="remove the control character, or write it as an escape in double quotes",
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML: {error}", file=path, hint="fix the YAML syntax") from None
    if document is None:  # an empty file, or only comments
        return _Node({}, path, 1)
    return _YamlReader(path).read(document, document.start_mark.line + 1, "", frozenset())


class _YamlReader:
    """Turns the composed YAML of one file into `_Node`s, keeping lines."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.constructor = SafeConstructor()

    def read(self, node: yaml.Node, line: int, key: str, active: frozenset[int]) -> _Node:
        if id(node) in active:  # an alias inside its own anchor
            raise ConfigError(
                "recursive YAML alias",
                file=self.file,
                line=line,
                key=key or None,
                hint="an alias (*name) cannot refer to the node that contains it",
            )
        active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            return _Node(self._mapping(node, key, active), self.file, line)
        if isinstance(node, yaml.SequenceNode):
            items = [self.read(item, item.start_mark.line + 1, key, active) for item in node.value]
            return _Node(items, self.file, line)
        return self._scalar(node, line, key)

    def _mapping(
        self, node: yaml.MappingNode, key: str, active: frozenset[int]
    ) -> dict[str, _Node]:
        self._reject_duplicate_keys(node, key)
        try:
            # Resolves `<<: *anchor` merge keys; explicit keys come last, so they win.
            self.constructor.flatten_mapping(node)
        except yaml.YAMLError as error:
            raise self._error(error, node, key) from None
        children: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            name = self._key(key_node, key)
            line = key_node.start_mark.line + 1
            children[name] = self.read(value_node, line, _join(key, name), active)
        return children

    def _reject_duplicate_keys(self, node: yaml.MappingNode, key: str) -> None:
        # PyYAML keeps the last of two equal keys without a word; a typo must not pass.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    raise ConfigError(
                        "duplicate key",
                        file=self.file,
                        line=key_node.start_mark.line + 1,
                        key=_join(key, key_node.value),
                        hint="keep one of them",
                    )
                seen.add(key_node.value)

    def _key(self, node: yaml.Node, parent: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError(
                "a key must be a plain name, not a list or a mapping",
                file=self.file,
                line=node.start_mark.line + 1,
                key=parent or None,
                hint="write `name: value`",
            )
        # The text as written, so that `123:` or `yes:` name an application as typed.
        return str(node.value)

    def _scalar(self, node: yaml.Node, line: int, key: str) -> _Node:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as error:
            raise self._error(error, node, key) from None
        return _Node(value, self.file, line, text=str(node.value))

    def _error(self, error: Exception, node: yaml.Node, key: str) -> ConfigError:
        problem = error.problem if isinstance(error, yaml.MarkedYAMLError) else None
        return ConfigError(
            f"invalid value: {problem or error}",
            file=self.file,
            line=node.start_mark.line + 1,
            key=key or None,
            hint="write a plain string, number, list or mapping",
        )


def _included_paths(node: _Node | None, including: Path) -> list[tuple[_Node, Path]]:
    """The files an `include` names, each with the entry that names it, in inclusion order."""
    if node is None:
        return []
    items = node.value if isinstance(node.value, list) else [node]
    paths: list[tuple[_Node, Path]] = []
    directory = including.parent
    for item in items:
        pattern = _string(item, "include")
        if any(char in pattern for char in "*?["):
            # A glob may match nothing: an empty conf.d is a valid configuration.
            matches = sorted(glob.glob(pattern, root_dir=directory))
            paths.extend((item, directory / match) for match in matches)
        elif (directory / pattern).exists():
            paths.append((item, directory / pattern))
        else:
            raise _fail(
                item,
                "include",
                f"{directory / pattern} does not exist",
                "fix the path, or use a glob (conf.d/*.conf) if it may match nothing",
            )
    for item, path in paths:
        # Reading a FIFO or a device would block or never end.
        if not path.is_file():
            raise _fail(item, "include", f"{path} is not a file", "include files only")
    return paths


def _merge(base: _Node, over: _Node) -> _Node:
    """Merge `over` into `base`: mappings merge recursively, anything else is replaced."""
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    merged = dict(base.value)
    for key, node in over.value.items():
        merged[key] = _merge(merged[key], node) if key in merged else node
    return _Node(merged, base.file, base.line)


# Sections


def _worker_logs(node: _Node | None) -> WorkerLogsConfig:
    fields = _mapping(node, "worker_logs", _WORKER_LOGS_KEYS)
    default = WorkerLogsConfig()
    return WorkerLogsConfig(
        directory=_field(fields, "directory", "worker_logs", _file_path, default.directory),
        max_bytes=_field(fields, "max_bytes", "worker_logs", _positive_int, default.max_bytes),
        keep=_field(fields, "keep", "worker_logs", _positive_int, default.keep),
    )


def _positive_int(node: _Node, key: str) -> int:
    value = node.value
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(node, key, f"must be an integer >= 1, got {value!r}", "e.g. `5`")
    return value


def _cgroups(node: _Node | None) -> CgroupsConfig:
    fields = _mapping(node, "cgroups", _CGROUPS_KEYS, aliases=(_HIERARCHY_ROOT_ALIAS,))
    default = CgroupsConfig()
    if "hierarchy_root" in fields and _HIERARCHY_ROOT_ALIAS in fields:
        raise _fail(
            fields[_HIERARCHY_ROOT_ALIAS],
            f"cgroups.{_HIERARCHY_ROOT_ALIAS}",
            "given together with cgroups.hierarchy_root",
            f"keep hierarchy_root only; {_HIERARCHY_ROOT_ALIAS} is its old misspelling",
        )
    if _HIERARCHY_ROOT_ALIAS in fields:
        fields = {**fields, "hierarchy_root": fields[_HIERARCHY_ROOT_ALIAS]}
    return CgroupsConfig(
        hierarchy_root=_field(
            fields, "hierarchy_root", "cgroups", _hierarchy_root, default.hierarchy_root
        ),
        subsystems=_field(fields, "subsystems", "cgroups", _strings, default.subsystems),
        fs_root=_field(fields, "fs_root", "cgroups", _file_path, default.fs_root),
    )


def _applications(fields: Mapping[str, _Node]) -> tuple[AppConfig, ...]:
    applications: list[AppConfig] = []
    if "procfile" in fields:
        applications.append(_shorthand_application(fields["procfile"]))
    for name, node in _mapping(fields.get("applications"), "applications").items():
        key = f"applications.{name}"
        _check_name(name, node, key, "application")
        if any(app.name == name for app in applications):
            raise _fail(
                node,
                key,
                f"application {name!r} is also defined by the top-level procfile",
                "define it in one place only",
            )
        applications.append(_application(name, node, key))
    return tuple(applications)


def _shorthand_application(node: _Node) -> AppConfig:
    """`procfile: /srv/myapp` alone: one application named after the Procfile's directory."""
    procfile = _procfile_path(node, "procfile")
    name = procfile.parent.name
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(
            node,
            "procfile",
            f"the directory name {name!r} cannot name an application",
            "name it under `applications:` instead, e.g. `applications: {myapp: {procfile: …}}`",
        )
    return _application_from(name, procfile, {}, node, "")


def _application(name: str, node: _Node, key: str) -> AppConfig:
    fields = _mapping(node, key, _APP_KEYS)
    if "procfile" not in fields:
        raise _fail(
            node,
            key,
            "procfile is required",
            "add `procfile:` with the Procfile, or the directory holding it",
        )
    procfile = _procfile_path(fields["procfile"], f"{key}.procfile")
    return _application_from(name, procfile, fields, node, key)


def _application_from(
    name: str, procfile: Path, fields: Mapping[str, _Node], node: _Node, key: str
) -> AppConfig:
    entries = parse_procfile(_read(procfile, missing_hint="create the Procfile"), procfile)
    environment = {
        **_dotenv(procfile.parent / ".env"),
        **_field(fields, "environment", key, _environment, {}),
    }
    stop_timeout = _field(fields, "stop_timeout", key, _seconds, DEFAULT_STOP_TIMEOUT)
    workers_key = _join(key, "workers")
    return AppConfig(
        name=name,
        procfile=procfile,
        workers=_workers(entries, fields.get("workers"), workers_key, stop_timeout, procfile),
        user=_field(fields, "user", key, _user, None),
        group=_field(fields, "group", key, _group, None),
        environment=environment,
        limits=_field(fields, "limits", key, _limits, Limits()),
        systemd=_field(fields, "systemd", key, _unit_properties, ()),
    )


def _dotenv(path: Path) -> dict[str, str]:
    if not path.exists():  # `.env` is optional
        return {}
    return parse_dotenv(_read(path, missing_hint="create it, or remove it"), path)


def _workers(
    entries: Sequence[tuple[str, str]],
    node: _Node | None,
    key: str,
    stop_timeout: float,
    procfile: Path,
) -> tuple[WorkerConfig, ...]:
    """Procfile workers in file order with their overrides, then config-only workers."""
    overrides = _mapping(node, key)
    workers = [
        _worker(
            name,
            index,
            procfile_command=command,
            node=overrides.get(name),
            key=f"{key}.{name}",
            stop_timeout=stop_timeout,
        )
        for index, (name, command) in enumerate(entries)
    ]
    in_procfile = {name for name, _ in entries}
    extras = [(name, node) for name, node in overrides.items() if name not in in_procfile]
    for index, (name, extra) in enumerate(extras, start=len(entries)):
        worker_key = f"{key}.{name}"
        command = _extra_command(name, extra, worker_key, procfile)
        workers.append(
            _worker(
                name,
                index,
                procfile_command=command,
                node=extra,
                key=worker_key,
                stop_timeout=stop_timeout,
            )
        )
    return tuple(workers)


def _extra_command(name: str, node: _Node, key: str, procfile: Path) -> str:
    """The command of a worker the configuration defines but the Procfile does not."""
    _check_name(name, node, key, "worker")
    fields = _mapping(node, key, _WORKER_KEYS)
    if "command_line" not in fields:
        raise _fail(
            node,
            key,
            f"worker {name!r} is not in {procfile} and has no command_line",
            f"fix the name, add `{name}: …` to the Procfile, or give it a command_line",
        )
    return _command(fields["command_line"], f"{key}.command_line")


def _worker(
    name: str,
    index: int,
    *,
    procfile_command: str,
    node: _Node | None,
    key: str,
    stop_timeout: float,
) -> WorkerConfig:
    fields = _mapping(node, key, _WORKER_KEYS)
    return WorkerConfig(
        name=name,
        command_line=_field(fields, "command_line", key, _command, procfile_command),
        num_instances=_field(fields, "num_instances", key, _num_instances, 1),
        index=index,
        stop_timeout=_field(fields, "stop_timeout", key, _seconds, stop_timeout),
        environment=_field(fields, "environment", key, _environment, {}),
        limits=_field(fields, "limits", key, _limits, Limits()),
        notify=_field(fields, "notify", key, _boolean, False),
        start_timeout=_field(fields, "start_timeout", key, _seconds, DEFAULT_START_TIMEOUT),
        systemd=_field(fields, "systemd", key, _unit_properties, ()),
    )


# Values: each takes a node and its dotted key, and returns the value or raises ConfigError


def _boolean(node: _Node, key: str) -> bool:
    if not isinstance(node.value, bool):
        raise _fail(node, key, f"must be true or false, got {node.value!r}", "e.g. `true`")
    return node.value


def _limits(node: _Node, key: str) -> Limits:
    fields = _mapping(node, key, _LIMITS_KEYS)
    return Limits(
        memory_bytes=_field(fields, "memory", key, _memory, None),
        cpu_percent=_field(fields, "cpu", key, _cpu, None),
        tasks=_field(fields, "tasks", key, _positive_int, None),
    )


def _unit_properties(node: _Node, key: str) -> UnitProperties:
    """systemd unit properties, checked against the table of those pazuzu passes through."""
    properties = {}
    for name, child in _mapping(node, key).items():
        property_key = _join(key, name)
        prop = PROPERTIES.get(name)
        if prop is None:
            if name in OWNED:
                hint = f"pazuzu sets {name} itself; use {OWNED[name]}"
            else:
                close = difflib.get_close_matches(name, list(PROPERTIES), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"pazuzu passes these: {', '.join(sorted(PROPERTIES))}"
                )
            raise _fail(child, property_key, "unknown or unsupported systemd property", hint)
        try:
            properties[name] = check_value(prop, _plain(child), child.text)
        except PropertyError as error:
            raise _fail(child, property_key, str(error), error.hint) from None
    return tuple(sorted(properties.items()))


def _plain(node: _Node) -> object:
    """The value of a node with the nodes inside it unwrapped."""
    if isinstance(node.value, dict):
        return {name: _plain(child) for name, child in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(child) for child in node.value]
    return node.value


def _memory(node: _Node, key: str) -> int:
    """Bytes, as a number or with a binary suffix as systemd reads it: `512M`, `2G`."""
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None or float(match["number"]) <= 0:
        raise _fail(node, key, f"must be a size, got {value!r}", "e.g. `512M`, `2G` or bytes")
    return int(float(match["number"]) * _SIZE_UNITS[match["unit"].upper()])


def _cpu(node: _Node, key: str) -> float:
    """A CPU quota: `150%`, or a number of CPUs (`1.5`); 100% is one CPU's time."""
    value = node.value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            percent = -1.0
    elif isinstance(value, int | float) and not isinstance(value, bool):
        percent = float(value) * 100
    else:
        percent = -1.0
    if not (math.isfinite(percent) and percent > 0):
        raise _fail(
            node, key, f"must be a CPU quota, got {value!r}", "e.g. `50%`, `150%`, or `1.5` CPUs"
        )
    return percent


def _field(
    fields: Mapping[str, _Node],
    name: str,
    parent: str,
    convert: Callable[[_Node, str], T],
    default: D,
) -> T | D:
    node = fields.get(name)
    return default if node is None else convert(node, _join(parent, name))


def _mapping(
    node: _Node | None,
    key: str,
    known: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
) -> dict[str, _Node]:
    """The entries of a mapping (none if absent or empty), checked against `known` keys."""
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        raise _fail(node, key, f"must be a mapping, got {_kind(node.value)}", "write `key: value`")
    if known is not None:
        for name, child in node.value.items():
            if name not in known and name not in aliases:
                raise _unknown_key(child, _join(key, name), name, known)
    return dict(node.value)


def _unknown_key(node: _Node, key: str, name: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(known)}"
    return _fail(node, key, "unknown key", hint)


def _string(node: _Node, key: str) -> str:
    if isinstance(node.value, str) and node.value.strip():
        return node.value
    got = "an empty string" if node.value == "" else _kind(node.value)
    scalar = isinstance(node.value, int | float) and node.text is not None
    hint = f"quote it: '{node.text}'" if scalar else "give a value"
    raise _fail(node, key, f"must be a non-empty string, got {got}", hint)


def _strings(node: _Node, key: str) -> tuple[str, ...]:
    if not isinstance(node.value, list):
        raise _fail(node, key, f"must be a list, got {_kind(node.value)}", "write `[a, b]`")
    return tuple(_string(item, key) for item in node.value)


def _hierarchy_root(node: _Node, key: str) -> str:
    """The prefix of every slice and cgroup pazuzu makes: a name, never a path."""
    value = _string(node, key)
    if not NAME_PATTERN.fullmatch(value):
        raise _fail(
            node,
            key,
            f"invalid name {value!r}",
            "use letters, digits, '_' and '-' only: it names the slice and the cgroup "
            "directory that hold every application",
        )
    return value


def _account(node: _Node, key: str) -> str:
    """A user or group: a name, or a numeric id."""
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        return str(node.value)
    return _string(node, key)


def _user(node: _Node, key: str) -> str:
    """An application's user: it must exist here, or its instances could never start."""
    user = _account(node, key)
    if not user.isdigit():
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise _fail(
                node,
                key,
                f"no user named {user!r} on this host",
                f"create it (useradd --system {user}), or fix the name",
            ) from None
    return user


def _group(node: _Node, key: str) -> str:
    """An application's group: it must exist here, or its instances could never start."""
    group = _account(node, key)
    if not group.isdigit():
        try:
            grp.getgrnam(group)
        except KeyError:
            raise _fail(
                node,
                key,
                f"no group named {group!r} on this host",
                f"create it (groupadd --system {group}), or fix the name",
            ) from None
    return group


def _command(node: _Node, key: str) -> str:
    command = _string(node, key).strip()
    if "\0" in command:
        raise _fail(node, key, "contains a NUL byte", "remove it")
    return command


def _num_instances(node: _Node, key: str) -> int:
    value = node.value
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(node, key, f"must be an integer, got {_kind(value)}", "e.g. `2`")
    if value < 0:
        raise _fail(
            node, key, f"must be >= 0, got {value}", "use 0 to keep the worker defined but stopped"
        )
    return value


def _seconds(node: _Node, key: str) -> float:
    value = node.value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(node, key, f"must be a number of seconds, got {_kind(value)}", "e.g. `10`")
    if not (math.isfinite(value) and value > 0):
        raise _fail(node, key, f"must be > 0, got {value}", "give the seconds to wait, e.g. `10`")
    return float(value)


def _file_path(node: _Node, key: str) -> Path:
    """A path; a relative one is relative to the directory of the file it is written in."""
    return (node.file.parent / _string(node, key)).absolute()


def _log_path(node: _Node, key: str) -> str:
    value = _string(node, key)
    return value if value == "syslog" else str(_file_path(node, key))


def _procfile_path(node: _Node, key: str) -> Path:
    """The Procfile that `procfile:` names: the file itself, or `Procfile` in a directory."""
    path = _file_path(node, key)
    if path.is_dir():
        if not (path / "Procfile").exists():
            raise _fail(
                node,
                key,
                f"{path} holds no Procfile",
                f"create {path / 'Procfile'}, or name the Procfile itself",
            )
        path = path / "Procfile"
    try:
        kind = _file_kind(path.stat().st_mode)
    except OSError as error:
        missing = isinstance(error, FileNotFoundError)
        raise _fail(
            node,
            key,
            f"{path} does not exist" if missing else f"{path}: {error.strerror}",
            f"fix the path; a relative one is relative to {node.file.parent.absolute()}",
        ) from None
    if kind is not None:
        raise _fail(
            node,
            key,
            f"{path} is {kind}, not a regular file",
            "name the Procfile itself, or the directory that holds it",
        )
    return path


def _environment(node: _Node, key: str) -> dict[str, str]:
    environment: dict[str, str] = {}
    for name, value in _mapping(node, key).items():
        variable_key = _join(key, name)
        if not ENV_KEY_PATTERN.fullmatch(name):
            raise _fail(
                value,
                variable_key,
                "invalid variable name",
                "use letters, digits and '_', not starting with a digit",
            )
        environment[name] = _environment_value(value, variable_key)
    return environment


def _environment_value(node: _Node, key: str) -> str:
    if isinstance(node.value, str):
        text = node.value
    elif isinstance(node.value, int | float) and node.text is not None:
        text = node.text  # `DEBUG: true` and `WORKERS: 010` mean what they say
    else:
        raise _fail(
            node, key, f"must be a string, got {_kind(node.value)}", "quote it; '' is empty"
        )
    if "\0" in text:
        raise _fail(node, key, "contains a NUL byte", "remove it")
    return text


def _check_name(name: str, node: _Node, key: str, what: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(
            node,
            key,
            f"invalid {what} name {name!r}",
            "use letters, digits, '_' and '-' only: the name becomes part of unit names",
        )


def _check_unit_names(config: Config, fields: Mapping[str, _Node]) -> None:
    """Refuse application and worker names whose systemd unit names would be too long."""
    prefix = config.cgroups.hierarchy_root
    applications = _mapping(fields.get("applications"), "applications")
    for app in config.applications:
        node = applications.get(app.name) or fields.get("procfile")
        for worker in app.workers:
            digits = max(_INSTANCE_DIGITS, len(str(worker.num_instances)))
            unit = f"{prefix}-{escape(app.name)}-{escape(worker.name)}@{'9' * digits}.service"
            if len(unit) <= UNIT_NAME_MAX:
                continue
            key = f"applications.{app.name}.workers.{worker.name}"
            message = (
                f"application {app.name!r} and worker {worker.name!r} make systemd unit names "
                f"of up to {len(unit)} characters; systemd allows {UNIT_NAME_MAX}"
            )
            hint = (
                f"shorten the application or worker name by {len(unit) - UNIT_NAME_MAX} "
                "characters (each '-' counts 4: it is escaped as \\x2d)"
            )
            if node is None:
                raise ConfigError(message, file=app.procfile, key=key, hint=hint)
            raise _fail(node, key, message, hint)


def _fail(node: _Node, key: str, message: str, hint: str) -> ConfigError:
    return ConfigError(message, file=node.file, line=node.line, key=key or None, hint=hint)


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _kind(value: object) -> str:
    """How an error names the type of a YAML value."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
