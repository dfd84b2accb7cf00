"""The kernel's view of processes: exec and exit events from the proc connector.

A netlink socket (NETLINK_CONNECTOR, CN_IDX_PROC) receives an event for every exec and exit on
the host, containers included (they share the host's network namespace), stamped by the kernel
with CLOCK_MONOTONIC. Measuring this way polls nobody: the supervisors under test are never
woken by the benchmark.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_NETLINK_CONNECTOR = 11
_CN_IDX_PROC = 1
_CN_VAL_PROC = 1
_PROC_CN_MCAST_LISTEN = 1
_PROC_CN_MCAST_IGNORE = 2
_NLMSG_DONE = 3
_EVENT_EXEC = 0x00000002
_EVENT_EXIT = 0x80000000
_HEADER = 16 + 20  # nlmsghdr + cn_msg


@dataclass(frozen=True, slots=True)
class Event:
    pid: int
    ns: int  # CLOCK_MONOTONIC, as the kernel stamped it
    cmdline: str  # for exec: read right away ("" once the process is gone)


def cmdline_of(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def pids_matching(marker: str) -> set[int]:
    """Live processes whose command line contains `marker` (a scan of /proc, not timed)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and marker in cmdline_of(int(entry.name)):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                if stat.rpartition(")")[2].split()[0] != "Z":
                    found.add(int(entry.name))
    return found


class ProcWatch:
    """Collects exec events whose command line contains one of the markers, and every exit."""

    def __init__(self, markers: tuple[str, ...]) -> None:
        self.markers = markers
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_CONNECTOR)
        self._sock.bind((0, _CN_IDX_PROC))
        self._sock.settimeout(0.2)
        self._cond = threading.Condition()
        self._execs: list[Event] = []
        self._exits: dict[int, int] = {}
        self._stop = threading.Event()
        self._send(_PROC_CN_MCAST_LISTEN)
        self._thread = threading.Thread(target=self._run, name="procwatch", daemon=True)
        self._thread.start()

    def _send(self, op: int) -> None:
        payload = struct.pack("I", op)
        cn = struct.pack("IIIIHH", _CN_IDX_PROC, _CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self._sock.send(struct.pack("IHHII", 16 + len(cn), _NLMSG_DONE, 0, 0, 0) + cn)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue  # ENOBUFS: events were dropped under load; waits are bounded
            if len(data) < _HEADER + 16:
                continue
            what, _cpu, stamp = struct.unpack_from("IIQ", data, _HEADER)
            if what == _EVENT_EXEC:
                pid = struct.unpack_from("i", data, _HEADER + 16)[0]
                line = cmdline_of(pid)
                if any(m in line for m in self.markers):
                    with self._cond:
                        self._execs.append(Event(pid, stamp, line))
                        self._cond.notify_all()
            elif what == _EVENT_EXIT:
                pid, tgid = struct.unpack_from("ii", data, _HEADER + 16)
                if pid == tgid:
                    with self._cond:
                        self._exits[pid] = stamp
                        if len(self._exits) > 200_000:
                            self._exits.clear()
                        self._cond.notify_all()

    def mark(self) -> int:
        """A position in the exec log: wait_* calls look only at events after it."""
        with self._cond:
            return len(self._execs)

    def new_pids(self, marker: str, since: int, count: int, timeout: float) -> dict[int, int]:
        """Wait until `count` distinct pids exec'd `marker` after `since`; pid -> first exec ns.

        Returns what was seen when the timeout passes.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                first: dict[int, int] = {}
                for event in self._execs[since:]:
                    if marker in event.cmdline:
                        first.setdefault(event.pid, event.ns)
                remaining = deadline - time.monotonic()
                if len(first) >= count or remaining <= 0:
                    return first
                self._cond.wait(min(remaining, 0.5))

    def exit_of(self, pid: int, timeout: float) -> int | None:
        """The kernel's time of `pid`'s exit, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while pid not in self._exits:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
            return self._exits[pid]

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._send(_PROC_CN_MCAST_IGNORE)
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> ProcWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
