"""The control socket: what clients see, and that no client can stop it serving others."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pazuzu import protocol
from pazuzu.errors import SpecError
from pazuzu.protocol import Request
from pazuzu.server import ControlServer

DEADLINE = 5.0  # seconds any single wait in these tests may take before it fails

Handler = Callable[[Request], Awaitable[Any]]


async def echo(request: Request) -> Any:
    """Answers every request with its command and arguments."""
    return {"command": str(request.command), "args": request.args}


@asynccontextmanager
async def serving(
    path: Path, handler: Handler = echo, users: tuple[str, ...] | list[str] = ()
) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, handler, users=users)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def connected(path: Path) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        yield reader, writer
    finally:
        writer.close()


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    """Send one line and read the one reply line, within the deadline."""
    writer.write(line)
    await writer.drain()
    async with asyncio.timeout(DEADLINE):
        reply = await reader.readline()
    return json.loads(reply)


def test_the_socket_is_0660_with_an_acl_entry_per_application_user(tmp_path: Path) -> None:
    """Mode 0660 (root and socket_group); each application user gets `user:UID:rw-` by ACL."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> tuple[int, bytes]:
        async with serving(path, users=["nobody"]):
            return stat.S_IMODE(path.stat().st_mode), os.getxattr(path, "system.posix_acl_access")

    mode, acl = asyncio.run(scenario())
    assert mode == 0o660
    entries = [struct.unpack_from("<HHI", acl, 4 + 8 * i) for i in range((len(acl) - 4) // 8)]
    assert (0x02, 0o6, pwd.getpwnam("nobody").pw_uid) in entries  # ACL_USER nobody rw-
    assert (0x20, 0, 0xFFFFFFFF) in entries  # ACL_OTHER: nothing


def test_a_socket_left_by_a_dead_daemon_is_replaced(tmp_path: Path) -> None:
    """A stale socket file at the path does not stop the server from starting."""
    path = tmp_path / "pazuzud.socket"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def scenario() -> Any:
        async with serving(path), connected(path) as (reader, writer):
            return await ask(reader, writer, b'{"command": "ping"}\n')

    assert asyncio.run(scenario())["ok"] is True


def test_a_valid_request_gets_an_ok_reply_with_the_result(tmp_path: Path) -> None:
    """The handler's return value comes back as `result`."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> Any:
        async with serving(path), connected(path) as (reader, writer):
            return await ask(reader, writer, protocol.encode_request(protocol.Command.PING))

    assert asyncio.run(scenario()) == {"ok": True, "result": {"command": "ping", "args": {}}}


def test_several_requests_are_answered_in_order_on_one_connection(tmp_path: Path) -> None:
    """A client may send request after request on the same connection."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> list[Any]:
        async with serving(path), connected(path) as (reader, writer):
            return [
                await ask(reader, writer, b'{"command": "status", "args": {"specs": ["a"]}}\n'),
                await ask(reader, writer, b'{"command": "status", "args": {"specs": ["b"]}}\n'),
            ]

    first, second = asyncio.run(scenario())
    assert first["result"]["args"] == {"specs": ["a"]}
    assert second["result"]["args"] == {"specs": ["b"]}


def test_malformed_json_gets_an_error_and_the_connection_keeps_serving(tmp_path: Path) -> None:
    """A bad line is answered with bad_request; the next good line is answered normally."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> list[Any]:
        async with serving(path), connected(path) as (reader, writer):
            return [
                await ask(reader, writer, b"{this is not json\n"),
                await ask(reader, writer, b'{"command": "ping"}\n'),
            ]

    refused, answered = asyncio.run(scenario())
    assert refused["ok"] is False
    assert refused["error"]["code"] == "bad_request"
    assert refused["error"]["message"].startswith("request is not JSON")
    assert answered == {"ok": True, "result": {"command": "ping", "args": {}}}


def test_a_handler_error_is_sent_back_with_its_code_and_hint(tmp_path: Path) -> None:
    """A PazuzuError raised by the handler becomes the error reply."""
    path = tmp_path / "pazuzud.socket"

    async def refuse(request: Request) -> Any:
        raise SpecError("nothing matches nope", hint="known workers: myapp.web")

    async def scenario() -> Any:
        async with serving(path, refuse), connected(path) as (reader, writer):
            return await ask(reader, writer, b'{"command": "stop", "args": {"specs": ["nope"]}}\n')

    assert asyncio.run(scenario()) == {
        "ok": False,
        "error": {
            "code": "unknown_spec",
            "message": "nothing matches nope",
            "hint": "known workers: myapp.web",
        },
    }


def test_an_unexpected_handler_failure_is_an_internal_error_reply(tmp_path: Path) -> None:
    """A bug in the handler is reported to the client, and the connection keeps serving."""
    path = tmp_path / "pazuzud.socket"

    async def broken(request: Request) -> Any:
        if request.command is protocol.Command.PING:
            return "pong"
        raise RuntimeError("boom")

    async def scenario() -> list[Any]:
        async with serving(path, broken), connected(path) as (reader, writer):
            return [
                await ask(reader, writer, b'{"command": "reload"}\n'),
                await ask(reader, writer, b'{"command": "ping"}\n'),
            ]

    failed, answered = asyncio.run(scenario())
    assert failed["ok"] is False
    assert failed["error"]["message"] == "internal error: boom"
    assert answered == {"ok": True, "result": "pong"}


def test_an_oversized_request_is_refused_and_the_server_keeps_serving(tmp_path: Path) -> None:
    """A line over 1 MiB gets an error or a closed connection; a new client is still answered."""
    path = tmp_path / "pazuzud.socket"
    huge = b'{"command": "status", "args": {"specs": ["' + b"a" * (1024 * 1024) + b'"]}}\n'

    async def send_huge() -> bytes:
        async with connected(path) as (reader, writer):
            try:
                writer.write(huge)
                async with asyncio.timeout(DEADLINE):
                    await writer.drain()
                    return await reader.readline()
            except ConnectionError:
                return b""  # closed on us while we were still sending: also a refusal

    async def scenario() -> tuple[bytes, Any]:
        async with serving(path):
            refused = await send_huge()
            async with connected(path) as (reader, writer):
                return refused, await ask(reader, writer, b'{"command": "ping"}\n')

    refused, answered = asyncio.run(scenario())
    if refused:
        reply = json.loads(refused)
        assert reply["ok"] is False
        assert reply["error"]["message"] == "request longer than 1048576 bytes"
    assert answered["ok"] is True


def test_a_client_holding_half_a_line_does_not_block_another(tmp_path: Path) -> None:
    """While one client sits on an unfinished request, a second one is answered at once."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> Any:
        async with serving(path), connected(path) as (_, slow_writer):
            slow_writer.write(b'{"command": "status", "args": {"spe')
            await slow_writer.drain()
            async with connected(path) as (reader, writer):
                return await ask(reader, writer, b'{"command": "ping"}\n')

    assert asyncio.run(scenario())["ok"] is True


def test_a_client_too_slow_to_finish_its_line_is_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After REQUEST_TIMEOUT without a full line the server closes the connection."""
    monkeypatch.setattr(protocol, "REQUEST_TIMEOUT", 0.1)
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> bytes:
        async with serving(path), connected(path) as (reader, writer):
            writer.write(b'{"command": "ping"')
            await writer.drain()
            async with asyncio.timeout(DEADLINE):
                return await reader.read()

    assert asyncio.run(scenario()) == b""


def test_a_half_line_then_end_of_stream_gets_no_answer(tmp_path: Path) -> None:
    """A client that gives up mid-line is closed without a reply."""
    path = tmp_path / "pazuzud.socket"

    async def scenario() -> bytes:
        async with serving(path), connected(path) as (reader, writer):
            writer.write(b'{"command": "ping"')
            writer.write_eof()
            async with asyncio.timeout(DEADLINE):
                return await reader.read()

    assert asyncio.run(scenario()) == b""
