"""Procfile and `.env` parsing: what foreman and honcho accept, and every bad line refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pazuzu.errors import ConfigError
from pazuzu.procfile import parse_dotenv, parse_procfile

PROCFILE = Path("/srv/myapp/Procfile")
DOTENV = Path("/srv/myapp/.env")


def test_procfile_entries_come_in_file_order() -> None:
    """Each `name: command` line is one worker, in the order the file lists them."""
    text = "web: gunicorn app:wsgi --bind :$PORT\nqueue: celery worker -Q a:b\n"

    assert parse_procfile(text, PROCFILE) == (
        ("web", "gunicorn app:wsgi --bind :$PORT"),
        ("queue", "celery worker -Q a:b"),
    )


def test_procfile_ignores_comments_blank_lines_and_carriage_returns() -> None:
    """Blank lines, `#` comments and CRLF line ends are not workers."""
    text = "# the web tier\r\n\r\nweb:   python -m http.server  \r\n   \n  # clock: off\n"

    assert parse_procfile(text, PROCFILE) == (("web", "python -m http.server"),)


def test_procfile_line_without_colon_is_an_error_with_its_line() -> None:
    """A line that is not `name: command` is refused, naming the file and line."""
    text = "web: serve\n\nthis is not an entry\n"

    with pytest.raises(ConfigError) as caught:
        parse_procfile(text, PROCFILE)

    assert (caught.value.file, caught.value.line) == (PROCFILE, 3)
    assert str(caught.value).startswith("/srv/myapp/Procfile:3: ")
    assert caught.value.hint


def test_procfile_duplicate_name_is_an_error_with_its_line() -> None:
    """A worker name given twice is refused at the second line."""
    text = "web: serve\nworker: work\nweb: serve again\n"

    with pytest.raises(ConfigError, match="duplicate worker 'web'") as caught:
        parse_procfile(text, PROCFILE)

    assert caught.value.line == 3


@pytest.mark.parametrize("line", ["web.1: serve", "wéb: serve", "we$b: serve"])
def test_procfile_name_outside_the_unit_name_alphabet_is_an_error(line: str) -> None:
    """Worker names are limited to letters, digits, `_` and `-`."""
    with pytest.raises(ConfigError, match="invalid worker name") as caught:
        parse_procfile(f"ok: fine\n{line}\n", PROCFILE)

    assert caught.value.line == 2


def test_procfile_empty_command_is_an_error() -> None:
    """`web:` with nothing after the colon is refused."""
    with pytest.raises(ConfigError, match="empty command") as caught:
        parse_procfile("web:   \n", PROCFILE)

    assert caught.value.line == 1


def test_procfile_without_entries_is_an_error() -> None:
    """A Procfile holding only comments defines no worker, which is an error."""
    with pytest.raises(ConfigError, match="defines no worker") as caught:
        parse_procfile("# nothing yet\n\n", PROCFILE)

    assert caught.value.file == PROCFILE


def test_dotenv_reads_plain_exported_and_quoted_values() -> None:
    """`.env` lines may be exported, unquoted (stripped), single- or double-quoted."""
    text = (
        "# settings\n"
        "\n"
        "PLAIN=  some value  \n"
        "export EXPORTED=yes\n"
        "SINGLE='literal \\n $HOME'\n"
        'DOUBLE="line\\nnext \\"quoted\\" back\\\\slash \\d"\n'
        "EMPTY=\n"
        "SPACED = around # kept\n"
        'TRAILING="x"  # a comment\n'
    )

    assert parse_dotenv(text, DOTENV) == {
        "PLAIN": "some value",
        "EXPORTED": "yes",
        "SINGLE": "literal \\n $HOME",
        "DOUBLE": 'line\nnext "quoted" back\\slash \\d',
        "EMPTY": "",
        "SPACED": "around # kept",
        "TRAILING": "x",
    }


def test_dotenv_later_key_wins() -> None:
    """A key set twice keeps its last value, as a shell would."""
    assert parse_dotenv("A=1\nA=2\n", DOTENV) == {"A": "2"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nno equals sign\n", 2),
        ("A=1\n\n1ABC=x\n", 3),
        ("A='unterminated\n", 1),
        ('A="unterminated\\"\n', 1),
        ("A='x' junk\n", 1),
    ],
)
def test_dotenv_bad_line_is_an_error_with_its_line(text: str, line: int) -> None:
    """A `.env` line that does not parse is refused with its line number."""
    with pytest.raises(ConfigError) as caught:
        parse_dotenv(text, DOTENV)

    assert (caught.value.file, caught.value.line) == (DOTENV, line)


@given(st.text())
def test_parse_procfile_returns_entries_or_raises_config_error(text: str) -> None:
    """Whatever the text, parse_procfile returns valid entries or raises ConfigError."""
    try:
        entries = parse_procfile(text, PROCFILE)
    except ConfigError:
        return
    assert entries
    assert all(name and command == command.strip() and command for name, command in entries)


@given(st.text())
def test_parse_dotenv_returns_strings_or_raises_config_error(text: str) -> None:
    """Whatever the text, parse_dotenv returns a str-to-str mapping or raises ConfigError."""
    try:
        variables = parse_dotenv(text, DOTENV)
    except ConfigError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True),
            st.text(alphabet=st.characters(blacklist_characters="\r\n\0"), min_size=1),
        ).filter(lambda entry: entry[1].strip()),
        min_size=1,
        unique_by=lambda entry: entry[0],
    )
)
def test_parse_procfile_reads_back_what_was_written(entries: list[tuple[str, str]]) -> None:
    """Rendering entries as `name: command` lines and parsing them gives them back."""
    text = "".join(f"{name}: {command}\n" for name, command in entries)

    parsed = parse_procfile(text, PROCFILE)

    assert parsed == tuple((name, command.strip()) for name, command in entries)
