"""The persisted formation: what `scale`, `stop` and `start` changed at run time.

The file (`state_path`, default `/var/lib/pazuzu/state.json`) is JSON:

    {"version": 1, "workers": [{"app": "myapp", "worker": "web", "count": 3,
                                "configured": 1, "stopped": [2]}]}

It is replaced atomically, so a crash or power loss leaves either the old or the new file. A
file that cannot be understood is moved aside and reported, never replaced by defaults: the
defaults could stop workers that a runtime scale started.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pazuzu.errors import PazuzuError
from pazuzu.model import WorkerFormation

VERSION = 1
MAX_BYTES = 16 * 1024 * 1024  # a formation of thousands of workers is well below this
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755

WorkerKey = tuple[str, str]  # (app, worker)


class _Corrupt(Exception):
    """The state file's content is not a formation this version understands."""


def load_state(path: Path) -> dict[WorkerKey, WorkerFormation]:
    """Read the saved formation; an absent file is an empty one.

    A file that does not parse, or has another version, is moved aside to
    `<name>.corrupt-<unix time>` and reported as PazuzuError.
    """
    try:
        text = _read(path)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise PazuzuError(
            f"cannot read the state file {path}: {error.strerror or error}",
            hint="check that it is a readable regular file, or set state_path in the configuration",
        ) from error
    try:
        return _decode(text)
    except _Corrupt as error:
        aside = _move_aside(path, str(error))
        raise PazuzuError(
            f"the state file {path} is unusable ({error}); moved it aside to {aside}",
            hint=(
                f"inspect {aside}; the configured num_instances apply from now on, or put a good"
                f" copy back at {path} before the daemon starts"
            ),
        ) from error


def save_state(path: Path, formation: Mapping[WorkerKey, WorkerFormation]) -> None:
    """Replace the saved formation atomically, creating the directory if needed."""
    text = _encode(formation)
    directory = path.parent
    temp: str | None = None
    try:
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        temp = None
        _fsync_directory(directory)
    except OSError as error:
        raise PazuzuError(
            f"cannot save the formation to {path}: {error}",
            hint=f"check that {directory} exists and is writable, or set state_path",
        ) from error
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def effective_formation(
    configured: Mapping[WorkerKey, int], saved: Mapping[WorkerKey, WorkerFormation]
) -> dict[WorkerKey, WorkerFormation]:
    """The formation in force: the saved one where the configuration has not changed since.

    `configured` holds each worker's `num_instances`. A saved entry wins while its `configured`
    still equals that; otherwise the configuration changed and wins, with nothing stopped.
    Workers that are no longer configured are dropped.
    """
    effective: dict[WorkerKey, WorkerFormation] = {}
    for key, count in configured.items():
        kept = saved.get(key)
        if kept is not None and kept.configured == count:
            effective[key] = kept
        else:
            effective[key] = WorkerFormation(count=count, configured=count)
    return effective


def _read(path: Path) -> str | bytes:
    """The file's content: text if it is UTF-8, else the bytes (which `_decode` refuses).

    Raises OSError if it cannot be read, or is not a regular file (a FIFO must not block us).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = file.read(MAX_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _encode(formation: Mapping[WorkerKey, WorkerFormation]) -> str:
    workers = [
        {
            "app": app,
            "worker": worker,
            "count": entry.count,
            "configured": entry.configured,
            "stopped": sorted(entry.stopped),
        }
        for (app, worker), entry in sorted(formation.items())
    ]
    return json.dumps({"version": VERSION, "workers": workers}, indent=2) + "\n"


def _decode(text: str | bytes) -> dict[WorkerKey, WorkerFormation]:
    if isinstance(text, bytes):
        raise _Corrupt("not UTF-8 text")
    if len(text) > MAX_BYTES:
        raise _Corrupt(f"larger than {MAX_BYTES} bytes")
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _Corrupt(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise _Corrupt("not a JSON object")
    version = document.get("version")
    if version != VERSION:
        raise _Corrupt(f"version {version!r}, expected {VERSION}")
    workers = document.get("workers")
    if not isinstance(workers, list):
        raise _Corrupt("'workers' is not a list")
    formation: dict[WorkerKey, WorkerFormation] = {}
    for index, entry in enumerate(workers):
        key, value = _decode_worker(index, entry)
        if key in formation:
            raise _Corrupt(f"workers[{index}]: {key[0]}.{key[1]} appears twice")
        formation[key] = value
    return formation


def _decode_worker(index: int, entry: Any) -> tuple[WorkerKey, WorkerFormation]:
    where = f"workers[{index}]"
    if not isinstance(entry, dict):
        raise _Corrupt(f"{where} is not an object")
    app, worker = entry.get("app"), entry.get("worker")
    if not isinstance(app, str) or not app or not isinstance(worker, str) or not worker:
        raise _Corrupt(f"{where} lacks an app or worker name")
    count = _count(entry.get("count"), f"{where}.count")
    configured = _count(entry.get("configured"), f"{where}.configured")
    stopped = entry.get("stopped", [])
    if not isinstance(stopped, list) or not all(_is_int(n) and n >= 1 for n in stopped):
        raise _Corrupt(f"{where}.stopped is not a list of instance numbers")
    return (app, worker), WorkerFormation(count, configured, frozenset(stopped))


def _count(value: Any, where: str) -> int:
    if not _is_int(value) or value < 0:
        raise _Corrupt(f"{where} is not a count")
    count: int = value
    return count


def _is_int(value: Any) -> bool:
    # bool is an int to Python, but `true` is no instance count.
    return isinstance(value, int) and not isinstance(value, bool)


def _move_aside(path: Path, reason: str) -> Path:
    """Rename the unusable file out of the way, keeping any earlier copy."""
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{suffix}")
        suffix += 1
    try:
        os.replace(path, aside)
    except OSError as error:
        raise PazuzuError(
            f"the state file {path} is unusable ({reason}) and cannot be moved aside: {error}",
            hint=f"move or delete {path} by hand, then start the daemon again",
        ) from error
    with contextlib.suppress(OSError):  # the rename happened; durability is best effort here
        _fsync_directory(path.parent)
    return aside


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
