"""Bad input never hurts: any bytes give a value or a clear PazuzuError, never a crash.

Property tests over what reaches pazuzud from outside: control-protocol lines, the specs and
scale changes of a restricted caller, configuration files with their Procfiles and `.env`,
and the state file.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pazuzu.access import Caller, Scope, authorize, confine
from pazuzu.config import load_config
from pazuzu.errors import ConfigError, PazuzuError, ProtocolError
from pazuzu.model import AppConfig, Config, WorkerConfig
from pazuzu.protocol import Command, Request, decode_reply, decode_request
from pazuzu.spec import parse_scale, parse_spec
from pazuzu.state import load_state

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
COMMAND_NAMES = st.sampled_from([c.value for c in Command]) | st.text(max_size=8) | JSON
ARG_NAMES = st.sampled_from(["specs", "changes", "rolling", "spec", ""]) | st.text(max_size=6)
SPEC_TEXT = st.text(alphabet="ab*?.-_=+/0123456789 shopblgwe", max_size=14)
ARG_VALUES = st.lists(SPEC_TEXT, max_size=4) | st.booleans() | JSON
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "command": COMMAND_NAMES,
        "args": st.dictionaries(ARG_NAMES, ARG_VALUES, max_size=3) | JSON,
    },
)


def decoded(line: bytes) -> Request | None:
    """The request a line decodes to, or None when it is refused as it must be."""
    try:
        request = decode_request(line)
    except ProtocolError as error:
        refusal = error
    else:
        assert isinstance(request.command, Command)
        assert request.caller is None
        return request
    assert refusal.message
    return None


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_any_bytes_decode_to_a_request_or_a_protocol_error(line: bytes) -> None:
    """Garbage, truncated UTF-8 and control bytes never escape as another exception."""
    decoded(line)


@given(JSON)
@settings(max_examples=300)
def test_any_json_value_decodes_to_a_request_or_a_protocol_error(value: Any) -> None:
    """Numbers, lists, nested objects: refused with a reason unless they are a request."""
    decoded(json.dumps(value).encode() + b"\n")


@given(REQUESTS)
@settings(max_examples=500)
def test_near_miss_requests_are_valid_or_refused_saying_why(document: dict[str, Any]) -> None:
    """Right commands with wrong arguments, wrong types, extra keys: never a crash."""
    request = decoded(json.dumps(document).encode())
    if request is not None:
        for name, value in request.args.items():
            assert isinstance(value, list | bool), name


@given(st.integers(min_value=1, max_value=3000))
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    """`{"args": [[[[…` nests deeper than any parser should follow."""
    decoded(b'{"command": "status", "args": ' + b"[" * depth * 40 + b"\n")


@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_reply_decodes_to_a_result_or_a_pazuzu_error(line: bytes) -> None:
    """The client never crashes on what a daemon (or an impostor) sends back."""
    with contextlib.suppress(PazuzuError):
        decode_reply(line)


# -- a restricted caller cannot escape its scope ---------------------------------------------

CONFIG = Config(
    applications=tuple(
        AppConfig(
            name=name,
            procfile=Path(f"/srv/{name}/Procfile"),
            workers=(WorkerConfig("web", "true"), WorkerConfig("queue", "true")),
            user=user,
        )
        for name, user in [("shop", "shop"), ("shop2", "shop"), ("blog", "blog"), ("s", None)]
    )
)
SHOP = Caller(uid=1001, gid=1001, groups=frozenset({1001}), name="shop")
OWNED = frozenset({"shop", "shop2"})


@given(st.sampled_from(list(Command)), st.lists(SPEC_TEXT, max_size=4))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_no_spec_reaches_an_application_the_caller_does_not_own(
    command: Command, texts: list[str]
) -> None:
    """Whatever specs or scale changes the shop user sends, what passes names shop's only."""
    key = "changes" if command is Command.SCALE else "specs"
    request = Request(command, {key: texts}, SHOP)
    try:
        scope = authorize(SHOP, request, CONFIG, None)
        confined = confine(request, scope, CONFIG)
    except PazuzuError:
        return  # refused, with a message
    assert scope == Scope(OWNED)
    if command is Command.SCALE:
        assert {change.app for change in parse_scale(confined.strings("changes"))} <= OWNED
    elif command is not Command.PING:
        passed = confined.strings("specs")
        assert passed, "an empty list would mean everything"
        assert {parse_spec(text).app for text in passed} <= OWNED


# -- configuration, Procfile and .env together -----------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(SCALARS, children, max_size=2)
    ),
    max_leaves=6,
)
ACCOUNTS = st.sampled_from(["root", "nobody", "0", "no-such-user-x", "", "www-data"]) | VALUES
WORKER = st.fixed_dictionaries(
    {},
    optional={
        "num_instances": st.integers(min_value=-2, max_value=10**6) | VALUES,
        "command_line": st.text(max_size=10) | VALUES,
        "stop_timeout": st.floats() | VALUES,
        "environment": st.dictionaries(st.text(max_size=5), VALUES, max_size=2) | VALUES,
    },
)
APPLICATION = st.fixed_dictionaries(
    {"procfile": st.just(".")},
    optional={
        "user": ACCOUNTS,
        "group": ACCOUNTS,
        "stop_timeout": VALUES,
        "environment": st.dictionaries(st.text(max_size=5), VALUES, max_size=2),
        "workers": st.dictionaries(
            st.sampled_from(["web", "queue", "x" * 300, "a-b", "a b", "../x"]), WORKER, max_size=3
        ),
    },
)
PROCFILE_TEXT = st.sampled_from(["web: sleep 1\n", "web: sleep 1\nqueue: x\n"]) | st.text(
    alphabet="wequb :#\n\t=-_x\0", max_size=40
)
APP_NAMES = st.sampled_from(["shop", "a" * 120, "a-" * 70, "", "my.app", "ok_1"])
HIERARCHY = st.sampled_from(["pazuzu", "a/b", "..", "p" * 200, ""]) | VALUES


@given(
    APP_NAMES,
    APPLICATION,
    PROCFILE_TEXT,
    st.none() | st.text(max_size=30),
    st.none() | HIERARCHY,
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_any_application_definition_loads_or_is_a_config_error(
    name: str,
    application: dict[str, Any],
    procfile: str,
    dotenv: str | None,
    hierarchy: Any,
) -> None:
    """Fuzzed application keys, Procfile and .env give a Config or a ConfigError only."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "Procfile").write_text(procfile)
        if dotenv is not None:
            (root / ".env").write_text(dotenv)
        document: dict[str, Any] = {"applications": {name: application}}
        if hierarchy is not None:
            document["cgroups"] = {"hierarchy_root": hierarchy}
        path = root / "pazuzu.conf"
        path.write_text(yaml.safe_dump(document))
        try:
            config = load_config(path)
        except ConfigError as error:
            assert_explains(error)
            return
        for app in config.applications:
            assert len(f"pazuzu-{app.name}") < 255


@given(st.binary(max_size=200))
def test_a_configuration_of_any_bytes_loads_or_is_a_config_error(data: bytes) -> None:
    """Not UTF-8, NUL bytes, BOMs: a ConfigError saying so."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pazuzu.conf"
        path.write_bytes(data)
        with contextlib.suppress(ConfigError):
            load_config(path)


# -- the state file ----------------------------------------------------------------------------

STATE_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2, "1", None, True]),
        "workers": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "app": st.sampled_from(["shop", "", 1]),
                    "worker": st.sampled_from(["web", "", None]),
                    "count": st.integers(min_value=-1, max_value=5) | JSON,
                    "configured": st.integers(min_value=-1, max_value=5) | JSON,
                    "stopped": st.lists(st.integers(min_value=-1, max_value=5)) | JSON,
                },
            )
            | JSON,
            max_size=3,
        )
        | JSON,
    },
).map(lambda d: json.dumps(d).encode())


@given(st.binary(max_size=200) | STATE_DOCUMENTS)
@settings(max_examples=300)
def test_any_state_file_loads_or_is_moved_aside_and_reported(data: bytes) -> None:
    """A state file that is not a formation is never taken for one, and never lost."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.json"
        path.write_bytes(data)
        try:
            formation = load_state(path)
        except PazuzuError as error:
            assert_moved_aside(error, path, data)
            return
        assert all(entry.count >= 0 and entry.configured >= 0 for entry in formation.values())


def assert_explains(error: PazuzuError) -> None:
    """A refusal says what is wrong and what to do."""
    assert error.message
    assert error.hint


def assert_moved_aside(error: PazuzuError, path: Path, data: bytes) -> None:
    """The unusable file was kept, byte for byte, and the error says where."""
    assert "moved it aside" in error.message
    assert not path.exists()
    (aside,) = path.parent.glob(f"{path.name}.corrupt-*")
    assert aside.read_bytes() == data
