"""Errors that reach users: each says where, what, and what to do."""

from __future__ import annotations

# `pazuzu status` imports this module: typing and pathlib would cost it 18 ms of imports.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


class PazuzuError(Exception):
    """A failure a user can act on; printed once, at the edge, with its hint."""

    code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(PazuzuError):
    """A configuration file or Procfile is invalid.

    `where` is rendered as `file:line:` in front of the message when known, and
    `key` is the dotted key path inside the YAML document (`applications.myapp.user`).
    """

    code = "invalid_config"

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        from pathlib import Path

        self.file = Path(file) if file is not None else None
        self.line = line
        self.key = key
        prefix = ""
        if self.file is not None:
            prefix = f"{self.file}:"
            if line is not None:
                prefix += f"{line}:"
            prefix += " "
        text = f"{key}: {message}" if key else message
        super().__init__(prefix + text, hint=hint)


class SpecError(PazuzuError):
    """A CLI spec (`myapp.web.2`, `myapp.web*`) names nothing or does not parse."""

    code = "unknown_spec"


class BackendError(PazuzuError):
    """The process backend (systemd, libcg) refused or failed an operation."""

    code = "backend"


class ProtocolError(PazuzuError):
    """A control request is malformed."""

    code = "bad_request"
