"""The control protocol: newline-delimited JSON over a unix socket, shared by client and server.

A request is `{"command": NAME, "args": {...}}`; the reply is `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"code", "message", "hint"}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pazuzu.errors import PazuzuError, ProtocolError
from pazuzu.wire import decode_reply, encode_request

__all__ = ["Command", "Request", "decode_reply", "decode_request", "encode_request"]

if TYPE_CHECKING:
    from pazuzu.access import Caller

MAX_REQUEST_BYTES = 1024 * 1024
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send one request line


class Command(StrEnum):
    STATUS = "status"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SCALE = "scale"
    LOG = "log"
    RELOAD = "reload"
    PING = "ping"
    RUN = "run"  # how to run a one-off command in an application's environment


# The arguments each command takes, with their JSON types.
_ARGS: dict[Command, dict[str, type]] = {
    Command.STATUS: {"specs": list},
    Command.START: {"specs": list},
    Command.STOP: {"specs": list},
    Command.RESTART: {"specs": list, "rolling": bool},
    Command.SCALE: {"changes": list},
    Command.LOG: {"specs": list},
    Command.RELOAD: {},
    Command.PING: {},
    Command.RUN: {"app": str},
}
# Commands that need at least one spec or change.
_NEEDS_TARGET = {
    Command.START: "specs",
    Command.STOP: "specs",
    Command.RESTART: "specs",
    Command.SCALE: "changes",
    Command.RUN: "app",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request; `caller` is who sent it, set by the server (None: from inside)."""

    command: Command
    args: dict[str, Any]
    caller: Caller | None = None

    def strings(self, name: str) -> list[str]:
        """A list-of-strings argument, empty when absent."""
        value: list[str] = self.args.get(name, [])
        return value


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line; a bad one raises ProtocolError saying why."""
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"request is not JSON: {exc}", hint=_FORMAT_HINT) from exc
    if not isinstance(document, dict):
        raise ProtocolError("request must be a JSON object", hint=_FORMAT_HINT)
    name = document.get("command")
    try:
        command = Command(str(name))
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise ProtocolError(f"unknown command {_short(name)}", hint=f"commands: {known}") from None
    args = document.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("'args' must be a JSON object", hint=_FORMAT_HINT)
    expected = _ARGS[command]
    for key, value in args.items():
        kind = expected.get(key)
        if kind is None:
            raise ProtocolError(
                f"{command}: unknown argument {_short(key)}",
                hint=f"{command} takes: {', '.join(expected) or 'no arguments'}",
            )
        if not isinstance(value, kind) or (
            isinstance(value, list) and not all(isinstance(item, str) for item in value)
        ):
            raise ProtocolError(f"{command}: argument {key!r} must be {_type_name(kind)}")
    target = _NEEDS_TARGET.get(command)
    if target and not args.get(target):
        raise ProtocolError(f"{command}: needs at least one item in {target!r}")
    return Request(command, args)


def encode_result(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}).encode() + b"\n"


def encode_error(error: PazuzuError) -> bytes:
    body = {"code": error.code, "message": error.message, "hint": error.hint}
    return json.dumps({"ok": False, "error": body}).encode() + b"\n"


_FORMAT_HINT = 'send one JSON object per line: {"command": "status", "args": {}}'


def _short(value: object, limit: int = 80) -> str:
    """A value as an error quotes it: its repr, cut short (a request may be a megabyte)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(kind: type) -> str:
    return {list: "a list of strings", bool: "true or false"}.get(kind, kind.__name__)
