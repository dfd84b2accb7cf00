"""The control socket: JSON lines in, JSON lines out; nothing a client sends stops the daemon."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pazuzu import protocol
from pazuzu.errors import PazuzuError, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[protocol.Request], Awaitable[Any]]

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlServer:
    """Serves requests on a unix socket created 0660, root and `socket_group` only."""

    def __init__(self, path: Path, handler: Handler, group: str | None = None) -> None:
        self._path = path
        self._handler = handler
        self._gid = _group_id(group) if group else None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.is_socket():
            if _answers(self._path):
                raise PazuzuError(
                    f"another pazuzud already listens on {self._path}",
                    hint="stop it first (systemctl stop pazuzud), or give this one --socket PATH",
                )
            self._path.unlink()  # left behind by a daemon that died
        # umask before bind: the socket never exists with wider permissions than 0660.
        previous = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self._path), limit=protocol.MAX_REQUEST_BYTES + 1
            )
        finally:
            os.umask(previous)
        if self._gid is not None:
            os.chown(self._path, 0, self._gid)
        log.info("listening on %s", self._path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _allowed(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return False
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        _pid, uid, gid = _PEERCRED.unpack(raw)
        if uid == 0 or uid == os.geteuid():
            return True
        if self._gid is None:
            return False
        return gid == self._gid or self._gid in os.getgrouplist(_user_name(uid), gid)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._allowed(writer):
                refusal = PazuzuError(
                    "permission denied: only root and members of socket_group may control pazuzud",
                    hint="set socket_group in the configuration, or run as root",
                )
                writer.write(protocol.encode_error(refusal))
                await writer.drain()
                return
            while True:
                try:
                    async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
                        line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    too_big = ProtocolError(
                        f"request longer than {protocol.MAX_REQUEST_BYTES} bytes"
                    )
                    writer.write(protocol.encode_error(too_big))
                    await writer.drain()
                    return
                if not line.endswith(b"\n"):
                    return  # end of stream, or half a line: nothing to answer
                writer.write(await self._answer(line))
                async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a slow or vanished client: drop it
        except Exception:
            log.exception("control connection failed")
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = protocol.decode_request(line)
            result = await self._handler(request)
        except PazuzuError as error:
            return protocol.encode_error(error)
        except Exception as exc:
            log.exception("request failed: %r", line[:200])
            return protocol.encode_error(PazuzuError(f"internal error: {exc}"))
        return protocol.encode_result(result)


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _group_id(group: str) -> int:
    """The gid of `socket_group`, given by name or number."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PazuzuError(
            f"socket_group: no group named {group!r} on this host",
            hint="create the group (groupadd), or fix socket_group in the configuration",
        ) from None
