"""The control protocol: one JSON request per line, one JSON reply per line."""

from __future__ import annotations

import json
import re

import pytest

from pazuzu.errors import PazuzuError, ProtocolError, SpecError
from pazuzu.protocol import (
    Command,
    Request,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"command": "ping"}\n', Request(Command.PING, {})),
        (b'{"command": "status", "args": {}}\n', Request(Command.STATUS, {})),
        (
            b'{"command": "status", "args": {"specs": ["myapp.web*"]}}\n',
            Request(Command.STATUS, {"specs": ["myapp.web*"]}),
        ),
        (
            b'{"command": "stop", "args": {"specs": ["myapp.web.2"]}}\n',
            Request(Command.STOP, {"specs": ["myapp.web.2"]}),
        ),
        (
            b'{"command": "restart", "args": {"specs": ["myapp"], "rolling": true}}\n',
            Request(Command.RESTART, {"specs": ["myapp"], "rolling": True}),
        ),
        (
            b'{"command": "scale", "args": {"changes": ["myapp.web=3", "myapp.queue+1"]}}\n',
            Request(Command.SCALE, {"changes": ["myapp.web=3", "myapp.queue+1"]}),
        ),
        (b'{"command": "reload", "args": {}}', Request(Command.RELOAD, {})),
    ],
)
def test_a_valid_request_decodes(line: bytes, expected: Request) -> None:
    """Well-formed requests decode to their command and arguments."""
    assert decode_request(line) == expected


def test_an_encoded_request_decodes_to_itself() -> None:
    """What the client sends is what the server reads, ending in one newline."""
    line = encode_request(Command.SCALE, changes=["myapp.web=3"])
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert decode_request(line) == Request(Command.SCALE, {"changes": ["myapp.web=3"]})


def test_request_strings_are_empty_when_absent() -> None:
    """A status without specs has an empty list of specs."""
    assert decode_request(b'{"command": "status"}').strings("specs") == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"status\n", "request is not JSON"),
        (b'{"command": "status"\n', "request is not JSON"),
        (b"\xff\xfe\n", "request is not JSON"),
        (b'["status"]\n', "request must be a JSON object"),
        (b'"status"\n', "request must be a JSON object"),
        (b'{"command": "explode"}\n', "unknown command 'explode'"),
        (b'{"args": {}}\n', "unknown command None"),
        (b'{"command": "status", "args": []}\n', "'args' must be a JSON object"),
        (b'{"command": "status", "args": {"spec": []}}\n', "status: unknown argument 'spec'"),
        (b'{"command": "ping", "args": {"specs": []}}\n', "ping: unknown argument 'specs'"),
        (
            b'{"command": "stop", "args": {"specs": "myapp"}}\n',
            "stop: argument 'specs' must be a list of strings",
        ),
        (
            b'{"command": "stop", "args": {"specs": ["myapp", 2]}}\n',
            "stop: argument 'specs' must be a list of strings",
        ),
        (
            b'{"command": "restart", "args": {"specs": ["myapp"], "rolling": 1}}\n',
            "restart: argument 'rolling' must be true or false",
        ),
        (b'{"command": "start", "args": {}}\n', "start: needs at least one item in 'specs'"),
        (b'{"command": "stop", "args": {"specs": []}}\n', "stop: needs at least one item"),
        (b'{"command": "restart"}\n', "restart: needs at least one item in 'specs'"),
        (b'{"command": "scale", "args": {}}\n', "scale: needs at least one item in 'changes'"),
    ],
)
def test_a_bad_request_is_refused_saying_why(line: bytes, message: str) -> None:
    """Malformed, unknown or mistyped requests raise ProtocolError naming the problem."""
    with pytest.raises(ProtocolError, match="^" + re.escape(message)) as caught:
        decode_request(line)
    assert caught.value.code == "bad_request"


def test_an_unknown_command_hint_lists_the_commands() -> None:
    """The hint of an unknown command names every command there is."""
    with pytest.raises(ProtocolError) as caught:
        decode_request(b'{"command": "explode"}')
    assert caught.value.hint == (
        "commands: status, start, stop, restart, scale, log, reload, ping, run"
    )


def test_a_deeply_nested_request_is_refused_as_not_json() -> None:
    """A line of 100000 `[` is refused with ProtocolError, not a RecursionError."""
    with pytest.raises(ProtocolError):
        decode_request(b"[" * 100_000 + b"\n")


def test_a_result_reply_round_trips() -> None:
    """decode_reply returns what encode_result was given."""
    result = {"formation": {"myapp.web": 3}, "stopped": ["myapp.web.2"]}
    line = encode_result(result)
    assert line.endswith(b"\n")
    assert json.loads(line) == {"ok": True, "result": result}
    assert decode_reply(line) == result


def test_an_error_reply_raises_with_message_hint_and_code() -> None:
    """A refusal comes back as PazuzuError carrying the daemon's message, hint and code."""
    line = encode_error(SpecError("nothing matches nope", hint="known workers: myapp.web"))
    assert json.loads(line) == {
        "ok": False,
        "error": {
            "code": "unknown_spec",
            "message": "nothing matches nope",
            "hint": "known workers: myapp.web",
        },
    }
    with pytest.raises(PazuzuError) as caught:
        decode_reply(line)
    assert caught.value.message == "nothing matches nope"
    assert caught.value.hint == "known workers: myapp.web"
    assert caught.value.code == "unknown_spec"


def test_an_error_without_a_hint_round_trips_with_none() -> None:
    """An error without a hint decodes with hint None."""
    with pytest.raises(PazuzuError) as caught:
        decode_reply(encode_error(ProtocolError("request is not JSON")))
    assert caught.value.hint is None
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize("line", [b"", b"hello\n", b"[]\n", b'"ok"\n', b'{"result": 1}\n'])
def test_a_reply_that_is_not_understood_raises_pazuzu_error(line: bytes) -> None:
    """A garbled reply is a PazuzuError that quotes it."""
    with pytest.raises(PazuzuError, match="reply that is not understood"):
        decode_reply(line)


def test_an_error_reply_whose_error_is_not_an_object_raises_pazuzu_error() -> None:
    """`{"ok": false, "error": "boom"}` is a PazuzuError, not an AttributeError."""
    with pytest.raises(PazuzuError):
        decode_reply(b'{"ok": false, "error": "boom"}\n')
