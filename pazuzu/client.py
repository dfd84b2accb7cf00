"""The CLI's side of the control socket: one request, one reply."""

from __future__ import annotations

import socket

from pazuzu import wire
from pazuzu.errors import PazuzuError

TYPE_CHECKING = False  # `pazuzu status` imports this module: only what a call needs, at run time
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from pazuzu.protocol import Command

# Replies to scale, stop and restart come once the instances are up or down: allow for
# stop_timeout plus systemd's SIGKILL.
REPLY_TIMEOUT = 120.0


class DaemonUnreachable(PazuzuError):
    code = "unreachable"


def call(socket_path: Path | str, command: Command | str, **args: Any) -> Any:
    """Send one request to pazuzud and return its result; refusals raise PazuzuError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        try:
            sock.connect(str(socket_path))
        except FileNotFoundError:
            raise DaemonUnreachable(
                f"cannot reach pazuzud: {socket_path} does not exist",
                hint="is pazuzud running? (systemctl status pazuzud); or pass --socket PATH "
                "if it listens elsewhere",
            ) from None
        except ConnectionRefusedError:
            raise DaemonUnreachable(
                f"cannot reach pazuzud: nothing listens on {socket_path}",
                hint="pazuzud is not running, or died and left its socket behind: start it "
                "(systemctl start pazuzud)",
            ) from None
        except PermissionError:
            raise DaemonUnreachable(
                f"cannot reach pazuzud: permission denied on {socket_path}",
                hint="pazuzud serves root, members of the configuration's socket_group, and the "
                "user of an application (for that application)",
            ) from None
        sock.sendall(wire.encode_request(command, **args))
        reply = _read_line(sock)
    return wire.decode_reply(reply)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise PazuzuError(
                f"pazuzud did not answer within {REPLY_TIMEOUT:.0f} s",
                hint="see its log (journalctl -u pazuzud)",
            ) from None
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    data = b"".join(chunks)
    if not data:
        raise PazuzuError(
            "pazuzud closed the connection without answering",
            hint="see its log (journalctl -u pazuzud)",
        )
    return data
