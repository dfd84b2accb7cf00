"""The control socket: JSON lines in, JSON lines out; nothing a client sends stops the daemon.

The socket is 0660, owned by root and `socket_group`. The user of an application may control
that application without being in any group: the socket carries a POSIX ACL entry granting each
application user the right to connect, so `ls -l` shows `srw-rw----+`. What a connected client
may do is decided per request, from the kernel's SO_PEERCRED credentials the server attaches to
it (see `pazuzu.access`). The socket is bound 0600 under a umask and opened up only once it is
in place and owned right.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pazuzu import protocol
from pazuzu.access import AccessError, Caller
from pazuzu.errors import PazuzuError, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[protocol.Request], Awaitable[Any]]

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SOCKET_MODE = 0o660  # root and socket_group; application users through an ACL entry each
# Open connections one unprivileged user may hold at once: the socket is world-connectable,
# and no user may tie up the daemon's memory or file descriptors.
MAX_CONNECTIONS_PER_USER = 32
# Connections the kernel queues before accept: a burst of clients (an autoscaler, a monitoring
# fleet) must wait their turn, not be refused (the kernel caps it at net.core.somaxconn).
_BACKLOG = 1024
_REFUSAL_READ_TIMEOUT = 1.0  # seconds a refused client has to finish its request line


class ControlServer:
    """Serves requests on a unix socket; each request carries its sender's credentials."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        group: str | None = None,
        users: Iterable[str] = (),
    ) -> None:
        self._path = path
        self._handler = handler
        self._users = tuple(users)
        self._gid = _group_id(group) if group else None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[int, int] = {}  # uid -> open connections

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.is_socket():
            if _answers(self._path):
                raise PazuzuError(
                    f"another pazuzud already listens on {self._path}",
                    hint="stop it first (systemctl stop pazuzud), or give this one --socket PATH",
                )
            self._path.unlink()  # left behind by a daemon that died
        # umask before bind: the socket is born 0600, and opened up only once it is ours.
        previous = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve,
                path=str(self._path),
                limit=protocol.MAX_REQUEST_BYTES + 1,
                backlog=_BACKLOG,
            )
        finally:
            os.umask(previous)
        if self._gid is not None:
            os.chown(self._path, -1, self._gid)
        os.chmod(self._path, SOCKET_MODE)
        self.grant(self._users)
        log.info("listening on %s", self._path)

    def grant(self, users: Iterable[str]) -> None:
        """Let exactly these (application) users connect, through the socket's ACL."""
        self._users = tuple(users)
        uids = sorted({uid for uid in map(_user_id, self._users) if uid not in (None, 0)})
        try:
            os.setxattr(self._path, _ACL_XATTR, _access_acl(uids))
        except OSError as exc:
            if uids:
                log.warning(
                    "application users cannot connect to %s: no ACL support there (%s)",
                    self._path,
                    exc,
                )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        caller: Caller | None = None
        try:
            caller = await _peer(writer)
            if caller is None:
                refusal = AccessError("permission denied: cannot tell who is connecting")
                await _refuse(reader, writer, refusal)
                return
            if not self._admit_connection(caller):
                caller = None  # not counted, so not to be released
                busy = PazuzuError(
                    f"too many connections: at most {MAX_CONNECTIONS_PER_USER} per user",
                    hint="close some, or send several requests over one connection",
                )
                await _refuse(reader, writer, busy)
                return
            while True:
                try:
                    async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
                        line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    too_big = ProtocolError(
                        f"request longer than {protocol.MAX_REQUEST_BYTES} bytes"
                    )
                    await self._send(writer, protocol.encode_error(too_big))
                    return
                if not line.endswith(b"\n"):
                    return  # end of stream, or half a line: nothing to answer
                reply, refused = await self._answer(line, caller)
                await self._send(writer, reply)
                if refused:
                    return  # who may not, gets one answer and no second try on this line
        except (TimeoutError, ConnectionError):
            pass  # a slow or vanished client: drop it
        except Exception:
            log.exception("control connection failed")
        finally:
            if caller is not None:
                self._release_connection(caller)
            writer.close()

    def _admit_connection(self, caller: Caller) -> bool:
        """Count the connection against its user's limit; False if that is reached."""
        privileged = caller.uid in (0, os.geteuid())
        open_now = self._connections.get(caller.uid, 0)
        if not privileged and open_now >= MAX_CONNECTIONS_PER_USER:
            log.warning("refused a connection of %s: %d already open", caller, open_now)
            return False
        self._connections[caller.uid] = open_now + 1
        return True

    def _release_connection(self, caller: Caller) -> None:
        left = self._connections.get(caller.uid, 1) - 1
        if left > 0:
            self._connections[caller.uid] = left
        else:
            self._connections.pop(caller.uid, None)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
            await writer.drain()

    async def _answer(self, line: bytes, caller: Caller) -> tuple[bytes, bool]:
        """The reply to one request line, and whether it was refused for lack of rights."""
        try:
            request = replace(protocol.decode_request(line), caller=caller)
            result = await self._handler(request)
        except AccessError as error:
            log.warning("refused %s: %s", caller, error)
            return protocol.encode_error(error), True
        except PazuzuError as error:
            return protocol.encode_error(error), False
        except Exception as exc:
            log.exception("request failed: %r", line[:200])
            return protocol.encode_error(PazuzuError(f"internal error: {exc}")), False
        return protocol.encode_result(result), False


async def _refuse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: PazuzuError
) -> None:
    """Answer a connection that will not be served: after its first line, so that a client
    that writes before it reads gets the reason rather than a broken pipe."""
    with contextlib.suppress(TimeoutError, ValueError, asyncio.LimitOverrunError):
        async with asyncio.timeout(_REFUSAL_READ_TIMEOUT):
            await reader.readline()
    writer.write(protocol.encode_error(error))
    async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
        await writer.drain()


async def _peer(writer: asyncio.StreamWriter) -> Caller | None:
    """Who is at the other end, from SO_PEERCRED and the group database; None if unknown."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    _pid, uid, gid = _PEERCRED.unpack(raw)
    if uid in (0, os.geteuid()):
        # An administrator whatever its groups (access.is_administrator): no lookup, so the
        # commonest caller costs no thread hop.
        return Caller(uid=uid, gid=gid, groups=frozenset({gid}), name="root" if uid == 0 else None)
    # Name service lookups may block (LDAP, sssd): off the event loop, and bounded.
    async with asyncio.timeout(protocol.REQUEST_TIMEOUT):
        return await asyncio.to_thread(_caller, uid, gid)


def _caller(uid: int, gid: int) -> Caller:
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    groups = {gid}
    if name is not None:
        with contextlib.suppress(OSError):  # else the primary group alone
            groups.update(os.getgrouplist(name, gid))
    return Caller(uid=uid, gid=gid, groups=frozenset(groups), name=name)


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


# POSIX access ACL, as the kernel takes it in the system.posix_acl_access extended attribute
# (linux/posix_acl_xattr.h): a version, then (tag, permissions, id) entries ordered by tag, id.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_NO_ID = 0xFFFFFFFF
_READ_WRITE = 0o6


def _access_acl(uids: list[int]) -> bytes:
    """The ACL of mode 0660 plus `user:<uid>:rw-` for each uid (its mask keeps 0660)."""
    entries = [(_ACL_USER_OBJ, _READ_WRITE, _ACL_NO_ID)]
    entries += [(_ACL_USER, _READ_WRITE, uid) for uid in uids]
    entries += [
        (_ACL_GROUP_OBJ, _READ_WRITE, _ACL_NO_ID),
        (_ACL_MASK, _READ_WRITE, _ACL_NO_ID),
        (_ACL_OTHER, 0, _ACL_NO_ID),
    ]
    return struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", *entry) for entry in entries
    )


def _user_id(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
