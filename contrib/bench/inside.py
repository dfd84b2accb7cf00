"""Run inside the systemd container (the checkout's venv): the D-Bus references and timers.

Each subcommand prints one JSON object; times are CLOCK_MONOTONIC nanoseconds, the clock of
the host and of the kernel's process events.

    python -m contrib.bench.inside raw-start COUNT PREFIX MARKER [FIRST]
    python -m contrib.bench.inside stop-unit UNIT
    python -m contrib.bench.inside call SOCKET COMMAND ARG...   (scale CHANGE... / stop SPEC...)
    python -m contrib.bench.inside time-cmd REPS ARGV...
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pystemd.dbuslib import DBus, apply_signature

from pazuzu import client, protocol
from pazuzu.backends.systemd import _property_array, _unit_properties
from pazuzu.model import InstanceId, InstanceSpec

_SYSTEMD = b"org.freedesktop.systemd1"
_PATH = b"/org/freedesktop/systemd1"
_MANAGER = b"org.freedesktop.systemd1.Manager"
TIMEOUT = 120.0


class JobWaiter:
    """One bus connection, subscribed to JobRemoved: a method call, then wait for its jobs."""

    def __init__(self) -> None:
        self.bus = DBus()
        self.bus.open()
        self.done: set[bytes] = set()

        # pystemd stores data on the callback, which a bound method cannot hold, and keeps no
        # reference to it: a plain function, kept here.
        def callback(message: Any, error: Any = None, userdata: Any = None) -> None:
            self._on_job_removed(message)

        self._callback = callback
        self.bus.match_signal(_SYSTEMD, _PATH, _MANAGER, b"JobRemoved", self._callback)
        self.call(b"Subscribe", [])

    def _on_job_removed(self, message: Any) -> None:
        message.process_reply(False)
        self.done.add(message.body[1])

    def call(self, method: bytes, args: list[Any]) -> Any:
        return self.bus.call_method(_SYSTEMD, _PATH, _MANAGER, method, args).body

    def wait_jobs(self, jobs: set[bytes]) -> None:
        deadline = time.monotonic() + TIMEOUT
        fd = self.bus.get_fd()
        while not jobs <= self.done:
            # Drain everything queued, then sleep on the fd.
            while True:
                message = self.bus.process()
                if message.is_empty():
                    break
            if jobs <= self.done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(jobs - self.done)} jobs still running")
            select.select([fd], [], [], 0.5)


def raw_start(count: int, prefix: str, marker: str, first: int = 1) -> dict[str, Any]:
    """StartTransientUnit for COUNT units in a loop on one connection, the same properties
    pazuzu gives its units; returns when every start job is done."""
    waiter = JobWaiter()
    slice_name = f"{prefix}.slice"
    calls = []
    for number in range(first, first + count):
        spec = InstanceSpec(
            id=InstanceId(prefix, "web", number),
            command_line=f"exec /bin/sleep {marker}",
            directory=Path("/"),
            environment=(("PORT", str(5000 + number - 1)),),
        )
        args = apply_signature(b"ss", [f"{prefix}-web@{number}.service".encode(), b"fail"])
        args += _property_array(_unit_properties(spec, 0.0, slice_name))
        args += [(ord("a"), b"(sa(sv))"), (-1, None)]
        calls.append(args)
    t0 = time.monotonic_ns()
    jobs = {waiter.call(b"StartTransientUnit", args) for args in calls}
    t_sent = time.monotonic_ns()
    waiter.wait_jobs(jobs)
    return {"t0": t0, "t_sent": t_sent, "t1": time.monotonic_ns()}


def stop_unit(unit: str) -> dict[str, Any]:
    waiter = JobWaiter()
    t0 = time.monotonic_ns()
    job = waiter.call(b"StopUnit", apply_signature(b"ss", [unit.encode(), b"replace"]))
    waiter.wait_jobs({job})
    return {"t0": t0, "t1": time.monotonic_ns()}


def call(socket_path: str, command: str, args: list[str]) -> dict[str, Any]:
    t0 = time.monotonic_ns()
    if command == "scale":
        result = client.call(Path(socket_path), protocol.Command.SCALE, changes=args)
    elif command == "stop":
        result = client.call(Path(socket_path), protocol.Command.STOP, specs=args)
    elif command == "status":
        result = client.call(Path(socket_path), protocol.Command.STATUS, specs=args)
    else:
        raise SystemExit(f"unknown command {command}")
    t1 = time.monotonic_ns()
    return {"t0": t0, "t1": t1, "size": len(json.dumps(result))}


def time_cmd(reps: int, argv: list[str]) -> dict[str, Any]:
    """Wall time of `argv`, from spawn to exit, seen by a pidfd: no polling.

    (subprocess's wait with a timeout polls with growing sleeps, 0.5 ms doubling up to 50 ms,
    which rounds a 33 ms command up to 63.5 ms.)
    """
    seconds = []
    codes = []
    for _ in range(reps):
        t0 = time.monotonic_ns()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pidfd = os.pidfd_open(child.pid)
        try:
            ready, _, _ = select.select([pidfd], [], [], 60.0)
            end = time.monotonic_ns()
        finally:
            os.close(pidfd)
        if not ready:
            child.kill()
        codes.append(child.wait())
        seconds.append((end - t0) / 1e9)
    return {"seconds": seconds, "codes": codes}


def main(argv: list[str]) -> None:
    command, rest = argv[0], argv[1:]
    if command == "raw-start":
        out = raw_start(int(rest[0]), rest[1], rest[2], int(rest[3]) if rest[3:] else 1)
    elif command == "stop-unit":
        out = stop_unit(rest[0])
    elif command == "call":
        out = call(rest[0], rest[1], rest[2:])
    elif command == "time-cmd":
        out = time_cmd(int(rest[0]), rest[1:])
    else:
        raise SystemExit(f"unknown subcommand {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
