"""Procfile and `.env` parsing: text in, values out, a ConfigError with its line otherwise.

Both formats follow foreman and honcho, except that a line that does not parse is an error
rather than skipped: a typo in a Procfile must not silently drop a worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pazuzu.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
"""Application and worker names: they become parts of systemd unit names."""

ENV_KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_PROCFILE_LINE = re.compile(r"(?P<name>[^:\s]+)\s*:(?P<command>.*)")
_DOTENV_LINE = re.compile(r"(?:export\s+)?(?P<key>[^=\s]+)\s*=(?P<value>.*)")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


def parse_procfile(text: str, path: Path) -> tuple[tuple[str, str], ...]:
    """Return the `(name, command_line)` entries of a Procfile, in file order."""
    entries: dict[str, str] = {}
    for number, line in _meaningful_lines(text):
        name, command = _procfile_entry(line, path, number)
        if name in entries:
            raise ConfigError(
                f"duplicate worker {name!r}",
                file=path,
                line=number,
                hint="give each worker its own name, or remove one of the lines",
            )
        entries[name] = command
    if not entries:
        raise ConfigError(
            "the Procfile defines no worker",
            file=path,
            hint="add a line such as `web: python -m http.server $PORT`",
        )
    return tuple(entries.items())


def parse_dotenv(text: str, path: Path) -> dict[str, str]:
    """Return the variables of a foreman-style `.env` file; a later key wins."""
    variables: dict[str, str] = {}
    for number, line in _meaningful_lines(text):
        match = _DOTENV_LINE.fullmatch(line)
        if match is None:
            raise ConfigError(
                "not a KEY=VALUE line",
                file=path,
                line=number,
                hint="write one `KEY=value` per line; `#` starts a comment line",
            )
        key = match["key"]
        if not ENV_KEY_PATTERN.fullmatch(key):
            raise ConfigError(
                f"invalid variable name {key!r}",
                file=path,
                line=number,
                hint="use letters, digits and '_', not starting with a digit",
            )
        variables[key] = _dotenv_value(match["value"].strip(), path, number)
    return variables


def _meaningful_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield `(line number, stripped line)` for lines that are neither blank nor comments."""
    # split("\n") rather than splitlines(): line numbers must match what an editor shows,
    # and splitlines() also breaks on form feeds and Unicode separators.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _procfile_entry(line: str, path: Path, number: int) -> tuple[str, str]:
    match = _PROCFILE_LINE.fullmatch(line)
    if match is None:
        raise ConfigError(
            f"not a Procfile entry: {line!r}",
            file=path,
            line=number,
            hint="write `name: command line`; `#` starts a comment line",
        )
    name, command = match["name"], match["command"].strip()
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid worker name {name!r}",
            file=path,
            line=number,
            hint="use letters, digits, '_' and '-' only: the name becomes part of unit names",
        )
    if not command:
        raise ConfigError(
            f"worker {name!r} has an empty command",
            file=path,
            line=number,
            hint=f"write the command after the colon: `{name}: command line`",
        )
    if "\0" in command:
        raise ConfigError(
            f"the command of worker {name!r} contains a NUL byte",
            file=path,
            line=number,
            hint="remove the NUL byte; a command line cannot carry one",
        )
    return name, command


def _dotenv_value(raw: str, path: Path, number: int) -> str:
    """Unquote one `.env` value: '…' is literal, "…" knows \\n, \\" and \\\\, bare is as is."""
    if raw.startswith("'"):
        value, rest = _single_quoted(raw, path, number)
    elif raw.startswith('"'):
        value, rest = _double_quoted(raw, path, number)
    else:
        value, rest = raw, ""
    if rest and not rest.startswith("#"):
        raise ConfigError(
            f"unexpected text after the closing quote: {rest!r}",
            file=path,
            line=number,
            hint="quote the whole value, or put a comment after a space and `#`",
        )
    if "\0" in value:
        raise ConfigError(
            "the value contains a NUL byte",
            file=path,
            line=number,
            hint="remove it; an environment variable cannot carry a NUL byte",
        )
    return value


def _single_quoted(raw: str, path: Path, number: int) -> tuple[str, str]:
    end = raw.find("'", 1)
    if end < 0:
        raise _unterminated("'", path, number)
    return raw[1:end], raw[end + 1 :].strip()


def _double_quoted(raw: str, path: Path, number: int) -> tuple[str, str]:
    value: list[str] = []
    position = 1
    while position < len(raw):
        char = raw[position]
        if char == '"':
            return "".join(value), raw[position + 1 :].strip()
        if char == "\\" and position + 1 < len(raw):
            following = raw[position + 1]
            # An unknown escape keeps its backslash, as a shell's double quotes do.
            value.append(_DOUBLE_QUOTE_ESCAPES.get(following, "\\" + following))
            position += 2
            continue
        value.append(char)
        position += 1
    raise _unterminated('"', path, number)


def _unterminated(quote: str, path: Path, number: int) -> ConfigError:
    return ConfigError(
        f"unterminated {quote} quote",
        file=path,
        line=number,
        hint="close the quote on the same line; write \\n inside double quotes for a newline",
    )
