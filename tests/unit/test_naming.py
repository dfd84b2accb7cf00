"""Systemd names of slices and instance units."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pazuzu import naming
from pazuzu.model import InstanceId

names = st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True)
numbers = st.integers(min_value=1, max_value=10_000)
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
SYSTEMD_ESCAPE = shutil.which("systemd-escape")


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("myapp", "myapp"),
        ("my-app", "my\\x2dapp"),
        ("web_2", "web_2"),
        ("a.b:c", "a.b:c"),
        (".hidden", "\\x2ehidden"),
        ("x y", "x\\x20y"),
        ("a\\b", "a\\x5cb"),
        ("é", "\\xc3\\xa9"),
        ("", ""),
    ],
)
def test_escape_matches_systemd_escape_for_fixed_names(name: str, escaped: str) -> None:
    """Each fixed name escapes to what systemd-escape 252 prints for it."""
    assert naming.escape(name) == escaped


@pytest.mark.skipif(SYSTEMD_ESCAPE is None, reason="systemd-escape is not installed")
@pytest.mark.parametrize("name", ["my-app", "web", ".hidden", "x y", "a.b:c", "é", "-x-", "a\\b"])
def test_escape_agrees_with_the_installed_systemd_escape(name: str) -> None:
    """escape() prints exactly what the installed systemd-escape prints."""
    assert SYSTEMD_ESCAPE is not None
    result = subprocess.run(
        [SYSTEMD_ESCAPE, "--", name], capture_output=True, text=True, check=True
    )
    assert naming.escape(name) == result.stdout.strip()


def test_escape_keeps_a_slash_out_of_the_separator() -> None:
    """A '/' becomes \\x2f rather than systemd-escape's '-', which would read as a separator."""
    assert naming.escape("a/b") == "a\\x2fb"


@given(names)
def test_escaped_names_never_contain_a_separator(name: str) -> None:
    """No escaped name holds '-' or '@', so unit names split unambiguously."""
    escaped = naming.escape(name)
    assert "-" not in escaped
    assert "@" not in escaped


@given(texts)
def test_unescape_undoes_escape_for_any_text(text: str) -> None:
    """unescape(escape(s)) gives back s for every encodable string."""
    assert naming.unescape(naming.escape(text)) == text


def test_unescape_accepts_upper_case_hex() -> None:
    """'\\x2D' decodes like '\\x2d', as systemd-escape --unescape does."""
    assert naming.unescape("my\\x2Dapp") == "my-app"


@pytest.mark.parametrize("escaped", ["a\\", "a\\x2", "a\\xzz", "\\y41", "\\xff"])
def test_unescape_rejects_malformed_escapes(escaped: str) -> None:
    """A stray backslash, a short escape or bytes that are not UTF-8 raise ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - any malformed input, one error type
        naming.unescape(escaped)


def test_root_slice_is_the_hierarchy_root() -> None:
    """Every application slice lives in pazuzu.slice."""
    assert naming.ROOT_SLICE == "pazuzu.slice"


def test_app_slice_escapes_a_dash_so_no_parent_slice_appears() -> None:
    """my-app's slice is pazuzu-my\\x2dapp.slice, a direct child of pazuzu.slice."""
    assert naming.app_slice("myapp") == "pazuzu-myapp.slice"
    assert naming.app_slice("my-app") == "pazuzu-my\\x2dapp.slice"


@given(names)
def test_parse_app_slice_undoes_app_slice(app: str) -> None:
    """The application of a slice name made by app_slice is the one it was made for."""
    assert naming.parse_app_slice(naming.app_slice(app)) == app


@pytest.mark.parametrize(
    "name", ["pazuzu.slice", "pazuzu-.slice", "pazuzu-a-b.slice", "other-myapp.slice", "x.slice"]
)
def test_parse_app_slice_rejects_other_slices(name: str) -> None:
    """Slices that are not an application's give None."""
    assert naming.parse_app_slice(name) is None


def test_unit_name_joins_escaped_app_worker_and_number() -> None:
    """Instance my-app.web_hook.2 runs in pazuzu-my\\x2dapp-web_hook@2.service."""
    assert naming.unit_name(InstanceId("myapp", "web", 1)) == "pazuzu-myapp-web@1.service"
    assert (
        naming.unit_name(InstanceId("my-app", "web_hook", 2))
        == "pazuzu-my\\x2dapp-web_hook@2.service"
    )
    assert naming.unit_name(InstanceId("a", "my-worker", 10)) == "pazuzu-a-my\\x2dworker@10.service"


@pytest.mark.parametrize(
    "instance", [InstanceId("", "web", 1), InstanceId("myapp", "", 1), InstanceId("a", "b", 0)]
)
def test_unit_name_refuses_instances_without_a_name_or_number(instance: InstanceId) -> None:
    """An empty application or worker, or instance 0, has no unit name."""
    with pytest.raises(ValueError, match="no unit name"):
        naming.unit_name(instance)


@given(names, names, numbers)
def test_parse_unit_name_undoes_unit_name(app: str, worker: str, number: int) -> None:
    """The instance parsed from a unit name is the one the name was made for."""
    instance = InstanceId(app, worker, number)
    assert naming.parse_unit_name(naming.unit_name(instance)) == instance


def test_parse_unit_name_reads_a_dashed_application() -> None:
    """pazuzu-my\\x2dapp-web@3.service is instance my-app.web.3."""
    assert naming.parse_unit_name("pazuzu-my\\x2dapp-web@3.service") == InstanceId(
        "my-app", "web", 3
    )


@pytest.mark.parametrize(
    "name",
    [
        "pazuzu.slice",
        "pazuzu-myapp.slice",
        "pazuzud.service",
        "pazuzu-myapp-web.service",
        "pazuzu-myapp-web@.service",
        "pazuzu-myapp-web@0.service",
        "pazuzu-myapp-web@02.service",
        "pazuzu-myapp-web@x.service",
        "pazuzu-my-app-web@1.service",
        "pazuzu-myapp@1.service",
        "pazuzu--web@1.service",
        "pazuzu-myapp-web@1.scope",
        "other-myapp-web@1.service",
        "pazuzu-my\\x2Dapp-web@1.service",
        "pazuzu-\\x61pp-web@1.service",
        "pazuzu-my\\x2-web@1.service",
        "ssh.service",
    ],
)
def test_parse_unit_name_returns_none_for_units_pazuzu_did_not_make(name: str) -> None:
    """Slices, other services and names escaped differently from unit_name are not ours."""
    assert naming.parse_unit_name(name) is None


def test_unit_pattern_globs_every_instance_unit() -> None:
    """The ListUnitsByPatterns glob is pazuzu-*@*.service."""
    assert naming.unit_pattern() == "pazuzu-*@*.service"


def test_syslog_identifier_is_the_dotted_instance() -> None:
    """Output of my-app.web.2 is tagged my-app.web.2 in the journal."""
    assert naming.syslog_identifier(InstanceId("my-app", "web", 2)) == "my-app.web.2"


@pytest.mark.skipif(SYSTEMD_ESCAPE is None, reason="systemd-escape is not installed")
@settings(max_examples=25, deadline=None)
@given(names)
def test_escape_agrees_with_systemd_escape_on_procfile_names(name: str) -> None:
    """For any Procfile name, escape() equals the installed systemd-escape's output."""
    assert SYSTEMD_ESCAPE is not None
    result = subprocess.run(
        [SYSTEMD_ESCAPE, "--", name], capture_output=True, text=True, check=True
    )
    assert naming.escape(name) == result.stdout.strip()
