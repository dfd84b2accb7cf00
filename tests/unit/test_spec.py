"""CLI specs (`myapp.web.2`, `myapp.web*`) and scale changes (`myapp.web=3`)."""

from __future__ import annotations

import pytest

from pazuzu.errors import SpecError
from pazuzu.model import InstanceId
from pazuzu.spec import ScaleChange, ScaleOp, Spec, parse_scale, parse_spec


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("myapp", Spec("myapp")),
        ("myapp.web", Spec("myapp", "web")),
        ("myapp.web.2", Spec("myapp", "web", "2")),
        ("my-app.web_hook.10", Spec("my-app", "web_hook", "10")),
        ("*", Spec("*")),
        ("*.web", Spec("*", "web")),
        ("myapp.web*", Spec("myapp", "web*")),
        ("myapp.web.?", Spec("myapp", "web", "?")),
        ("my?pp.*.1*", Spec("my?pp", "*", "1*")),
    ],
)
def test_parse_spec_reads_app_worker_and_instance(text: str, spec: Spec) -> None:
    """Each part of APP.WORKER.N lands in its field; wildcards are kept as patterns."""
    assert parse_spec(text) == spec


def test_parse_spec_canonicalises_the_instance_number() -> None:
    """myapp.web.02 names the same instance as myapp.web.2."""
    assert parse_spec("myapp.web.02") == Spec("myapp", "web", "2")


@pytest.mark.parametrize("text", ["myapp", "myapp.web", "myapp.web.2", "*.web*.1?"])
def test_a_spec_prints_as_it_was_written(text: str) -> None:
    """str() of a parsed spec gives back the text."""
    assert str(parse_spec(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty spec"),
        ("myapp..web", "empty part"),
        (".web", "empty part"),
        ("myapp.", "empty part"),
        ("myapp.web.2.3", "too many parts"),
        ("my app", "is not a name"),
        ("myapp.we/b", "is not a name"),
        ("myapp.[wq]*", "is not a name"),
        ("myapp.web.two", "is not a number"),
        ("myapp.web.-1", "is not a number"),
        ("myapp.web.0", "does not exist"),
    ],
)
def test_parse_spec_rejects_invalid_text_with_a_hint(text: str, message: str) -> None:
    """Text that is no spec raises SpecError saying why, with the grammar as hint."""
    with pytest.raises(SpecError, match=message) as caught:
        parse_spec(text)
    assert caught.value.hint


def test_has_wildcard_tells_patterns_from_exact_names() -> None:
    """Only specs with * or ? in some part may name several things."""
    assert not parse_spec("myapp.web.2").has_wildcard
    assert parse_spec("myapp.w?b").has_wildcard
    assert parse_spec("myapp.web.*").has_wildcard


def test_number_is_set_only_for_an_exact_instance() -> None:
    """myapp.web.2 names instance 2; myapp.web and myapp.web.* name no single number."""
    assert parse_spec("myapp.web.2").number == 2
    assert parse_spec("myapp.web").number is None
    assert parse_spec("myapp.web.*").number is None


def test_an_app_spec_matches_everything_in_the_app() -> None:
    """myapp matches the application, each of its workers and each of their instances."""
    spec = parse_spec("myapp")
    assert spec.matches_app("myapp")
    assert spec.matches_worker("myapp", "queue")
    assert spec.matches_instance(InstanceId("myapp", "web", 7))
    assert not spec.matches_app("myapp2")
    assert not spec.matches_instance(InstanceId("other", "web", 1))


def test_a_worker_spec_matches_only_that_worker() -> None:
    """myapp.web matches web's instances but not queue's, and still matches its app."""
    spec = parse_spec("myapp.web")
    assert spec.matches_app("myapp")
    assert spec.matches_worker("myapp", "web")
    assert not spec.matches_worker("myapp", "webhook")
    assert spec.matches_instance(InstanceId("myapp", "web", 3))
    assert not spec.matches_instance(InstanceId("myapp", "queue", 3))


def test_an_instance_spec_matches_only_that_instance() -> None:
    """myapp.web.2 matches web.2, not web.1 nor web.12."""
    spec = parse_spec("myapp.web.2")
    assert spec.matches_instance(InstanceId("myapp", "web", 2))
    assert not spec.matches_instance(InstanceId("myapp", "web", 1))
    assert not spec.matches_instance(InstanceId("myapp", "web", 12))


def test_wildcards_match_like_the_shell() -> None:
    """* matches any text and ? one character, in every part."""
    assert parse_spec("*").matches_instance(InstanceId("anything", "web", 1))
    assert parse_spec("*.web").matches_worker("other", "web")
    assert not parse_spec("*.web").matches_worker("other", "queue")
    assert parse_spec("myapp.web*").matches_worker("myapp", "webhook")
    assert parse_spec("myapp.web.1?").matches_instance(InstanceId("myapp", "web", 12))
    assert not parse_spec("myapp.web.1?").matches_instance(InstanceId("myapp", "web", 1))


def test_matching_is_case_sensitive() -> None:
    """MyApp does not name myapp, as on a case-sensitive file system."""
    assert not parse_spec("MyApp").matches_app("myapp")


@pytest.mark.parametrize(
    ("args", "changes"),
    [
        (["myapp.web=3"], (ScaleChange("myapp", "web", ScaleOp.SET, 3),)),
        (["myapp.web+1"], (ScaleChange("myapp", "web", ScaleOp.ADD, 1),)),
        (["myapp.web-2"], (ScaleChange("myapp", "web", ScaleOp.REMOVE, 2),)),
        (
            ["myapp.web=3", "other.queue+1"],
            (
                ScaleChange("myapp", "web", ScaleOp.SET, 3),
                ScaleChange("other", "queue", ScaleOp.ADD, 1),
            ),
        ),
        (
            ["myapp", "web=3", "queue+1"],
            (
                ScaleChange("myapp", "web", ScaleOp.SET, 3),
                ScaleChange("myapp", "queue", ScaleOp.ADD, 1),
            ),
        ),
        (
            ["myapp", "web=0", "other.queue-1"],
            (
                ScaleChange("myapp", "web", ScaleOp.SET, 0),
                ScaleChange("other", "queue", ScaleOp.REMOVE, 1),
            ),
        ),
        (["my-app-2", "web=1"], (ScaleChange("my-app-2", "web", ScaleOp.SET, 1),)),
        (["myapp.my-worker-2"], (ScaleChange("myapp", "my-worker", ScaleOp.REMOVE, 2),)),
        (["myapp.web-2=3"], (ScaleChange("myapp", "web-2", ScaleOp.SET, 3),)),
    ],
)
def test_parse_scale_reads_every_form_of_change(
    args: list[str], changes: tuple[ScaleChange, ...]
) -> None:
    """APP.WORKER=N, +N and -N, and the form with the app given once, parse in order."""
    assert parse_scale(args) == changes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to scale"),
        (["myapp"], "no worker to scale"),
        (["myapp.web"], "missing =N, \\+N or -N"),
        (["myapp.web=three"], "missing =N"),
        (["web=3"], "no application given"),
        (["myapp", "web"], "missing =N"),
        (["myapp.web=-1"], "cannot be negative"),
        (["myapp.=3"], "not a valid worker name"),
        (["=3"], "no worker given"),
        (["myapp.web.2=3"], "names APP.WORKER"),
        (["my app.web=3"], "not a valid application name"),
    ],
)
def test_parse_scale_rejects_invalid_arguments_with_the_grammar(
    args: list[str], message: str
) -> None:
    """An argument that is no scale change raises SpecError with the grammar as hint."""
    with pytest.raises(SpecError, match=message) as caught:
        parse_scale(args)
    assert caught.value.hint


@pytest.mark.parametrize(
    "args", [["myapp.web*=3"], ["*.web=3"], ["myapp", "w?b+1"], ["my*", "web=1"]]
)
def test_parse_scale_refuses_wildcards(args: list[str]) -> None:
    """Scale changes name exact workers; a pattern is refused with a clear message."""
    with pytest.raises(SpecError, match="exact"):
        parse_scale(args)


@pytest.mark.parametrize(
    ("op", "amount", "current", "result"),
    [
        (ScaleOp.SET, 3, 1, 3),
        (ScaleOp.SET, 0, 5, 0),
        (ScaleOp.ADD, 1, 2, 3),
        (ScaleOp.ADD, 2, 0, 2),
        (ScaleOp.REMOVE, 2, 5, 3),
        (ScaleOp.REMOVE, 2, 1, 0),
        (ScaleOp.REMOVE, 1, 0, 0),
    ],
)
def test_apply_computes_the_new_count_never_below_zero(
    op: ScaleOp, amount: int, current: int, result: int
) -> None:
    """=N sets, +N adds, -N removes down to 0 at most."""
    assert ScaleChange("myapp", "web", op, amount).apply(current) == result


def test_a_scale_change_prints_as_written() -> None:
    """str() of myapp.web+1 is myapp.web+1."""
    assert str(ScaleChange("myapp", "web", ScaleOp.ADD, 1)) == "myapp.web+1"
