"""sd_notify(3) for pazuzud: readiness, status text, reload, stop and watchdog pings."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class Notifier:
    """Talks to whatever supervises pazuzud through $NOTIFY_SOCKET; silent when it is unset."""

    def __init__(self, ready_fd: int | None = None) -> None:
        # With --daemon, the process that started us waits on this pipe for readiness.
        self._ready_fd = ready_fd
        self._socket_path = os.environ.get("NOTIFY_SOCKET")
        self._notifier = None
        if self._socket_path:
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def watchdog_interval(self) -> float | None:
        """Half of WatchdogSec, when the service manager asked for pings; None otherwise."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def send(self, **fields: str) -> None:
        """Send `KEY=value` lines, e.g. send(READY="1", STATUS="3 instances running")."""
        if fields.get("READY") == "1" and self._ready_fd is not None:
            os.write(self._ready_fd, b"READY\n")
            os.close(self._ready_fd)
            self._ready_fd = None
        if self._notifier is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        self._notifier.notify(message)
        log.debug("sd_notify: %s", message.replace("\n", "; "))
