"""A client's half of the control protocol (see `protocol`), light enough for `pazuzu status`.

Nothing here imports more than `json` (not even `typing`): the status fast path
(`pazuzu.quick`) runs on it.
"""

from __future__ import annotations

import json

from pazuzu.errors import PazuzuError

TYPE_CHECKING = False  # `pazuzu status` imports this module: typing costs it 10 ms
if TYPE_CHECKING:
    from typing import Any


def encode_request(command: str, **args: Any) -> bytes:
    """One request line: `{"command": NAME, "args": {...}}` and a newline."""
    return json.dumps({"command": str(command), "args": args}).encode() + b"\n"


def decode_reply(line: bytes) -> Any:
    """The result of a reply line; a refusal raises PazuzuError with the daemon's words."""
    try:
        document = json.loads(line)
        ok = document["ok"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PazuzuError(
            f"the daemon sent a reply that is not understood: {line[:200]!r}"
        ) from exc
    if ok:
        return document.get("result")
    error = document.get("error") or {}
    if not isinstance(error, dict):
        raise PazuzuError(f"the daemon sent a reply that is not understood: {line[:200]!r}")
    failure = PazuzuError(str(error.get("message", "request refused")), hint=error.get("hint"))
    failure.code = str(error.get("code", "error"))
    raise failure
