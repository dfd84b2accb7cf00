"""What the CLI's arguments name: specs (`myapp.web.2`, `myapp.web*`) and scale changes.

A spec is `APP`, `APP.WORKER` or `APP.WORKER.N`; every part may use the shell-style wildcards
`*` and `?`. A scale change is `APP.WORKER=N`, `APP.WORKER+N` or `APP.WORKER-N`, or, with the
application given once in front, `APP WORKER=N WORKER+N ...` (Heroku's `ps:scale` form).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from pazuzu.errors import SpecError
from pazuzu.model import InstanceId

SPEC_HINT = (
    "a spec is APP, APP.WORKER or APP.WORKER.N, where * and ? match any text and any "
    "character: myapp, myapp.web, myapp.web.2, 'myapp.web*', '*'"
)
SCALE_HINT = (
    "write APP.WORKER=N, APP.WORKER+N or APP.WORKER-N, or give the application once: "
    "pazuzu scale myapp web=3 queue+1"
)

_WILDCARDS = frozenset("*?")
_NAME = re.compile(r"[A-Za-z0-9_*?-]+")
_NUMBER = re.compile(r"[0-9*?]+")
# The last `=`, `+` or `-` followed by digits only is the operator, so worker names may
# themselves contain `-` (`my-worker-2` is `my-worker` minus 2).
_CHANGE = re.compile(r"(?P<target>.*?)(?P<op>[=+-])(?P<amount>[0-9]+)")


def _has_wildcard(text: str) -> bool:
    return not _WILDCARDS.isdisjoint(text)


@dataclass(frozen=True, slots=True)
class Spec:
    """A CLI target: patterns for the application, and optionally the worker and instance.

    `worker` and `instance` are None when the spec stops short of them; a spec that stops
    short matches everything below it (`myapp` matches every instance of `myapp`). An exact
    instance is kept in canonical form (`web.02` is `web.2`).
    """

    app: str
    worker: str | None = None
    instance: str | None = None

    def __str__(self) -> str:
        return ".".join(part for part in (self.app, self.worker, self.instance) if part is not None)

    @property
    def has_wildcard(self) -> bool:
        """Whether the spec may name several things (and so may name nothing without error)."""
        return any(_has_wildcard(part) for part in (self.app, self.worker, self.instance) if part)

    @property
    def number(self) -> int | None:
        """The instance number when the spec names exactly one, else None."""
        if self.instance is None or _has_wildcard(self.instance):
            return None
        return int(self.instance)

    def matches_app(self, app: str) -> bool:
        """Whether the spec names application `app` or anything in it."""
        return fnmatchcase(app, self.app)

    def matches_worker(self, app: str, worker: str) -> bool:
        """Whether the spec names worker `worker` of `app` or any of its instances."""
        if not self.matches_app(app):
            return False
        return self.worker is None or fnmatchcase(worker, self.worker)

    def matches_instance(self, instance: InstanceId) -> bool:
        """Whether the spec names `instance`."""
        if not self.matches_worker(instance.app, instance.worker):
            return False
        return self.instance is None or fnmatchcase(str(instance.number), self.instance)


def parse_spec(text: str) -> Spec:
    """Parse a CLI spec; raise SpecError with a hint when it is not one."""
    if not text:
        raise SpecError("empty spec", hint=SPEC_HINT)
    parts = text.split(".")
    if len(parts) > 3:
        raise SpecError(f"{text!r}: too many parts (at most APP.WORKER.N)", hint=SPEC_HINT)
    if "" in parts:
        raise SpecError(f"{text!r}: empty part in spec", hint=SPEC_HINT)
    for part in parts[:2]:
        if not _NAME.fullmatch(part):
            raise SpecError(
                f"{text!r}: {part!r} is not a name (letters, digits, _, - and the wildcards * ?)",
                hint=SPEC_HINT,
            )
    app = parts[0]
    worker = parts[1] if len(parts) > 1 else None
    instance = parts[2] if len(parts) > 2 else None
    if instance is not None:
        instance = _parse_instance(text, instance)
    return Spec(app, worker, instance)


def _parse_instance(text: str, instance: str) -> str:
    if not _NUMBER.fullmatch(instance):
        raise SpecError(
            f"{text!r}: instance {instance!r} is not a number",
            hint="instances are numbered from 1: myapp.web.2; " + SPEC_HINT,
        )
    if _has_wildcard(instance):
        return instance
    if int(instance) < 1:
        raise SpecError(
            f"{text!r}: instance {instance!r} does not exist",
            hint="instances are numbered from 1: myapp.web.1 is the first",
        )
    return str(int(instance))


class ScaleOp(StrEnum):
    """How a scale change moves a worker's instance count."""

    SET = "="
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """One change of the formation: `myapp.web=3`, `myapp.web+1` or `myapp.web-2`."""

    app: str
    worker: str
    op: ScaleOp
    amount: int

    def __str__(self) -> str:
        return f"{self.app}.{self.worker}{self.op}{self.amount}"

    def apply(self, current: int) -> int:
        """The instance count after this change, starting from `current`; never below 0."""
        match self.op:
            case ScaleOp.SET:
                return self.amount
            case ScaleOp.ADD:
                return current + self.amount
            case ScaleOp.REMOVE:
                return max(0, current - self.amount)


def parse_scale(args: Sequence[str]) -> tuple[ScaleChange, ...]:
    """Parse the arguments of `pazuzu scale` into changes, in the order given.

    The first argument may be a bare application name; arguments without an application
    (`web=3`) then belong to it. Raise SpecError with the grammar as hint on anything else.
    """
    if not args:
        raise SpecError("nothing to scale", hint=SCALE_HINT)
    default_app: str | None = None
    rest = args
    if _is_bare_app(args):
        default_app = _scale_name(args[0], args[0], "application")
        rest = args[1:]
        if not rest:
            raise SpecError(f"{args[0]!r}: no worker to scale given", hint=SCALE_HINT)
    return tuple(_parse_change(arg, default_app) for arg in rest)


def _is_bare_app(args: Sequence[str]) -> bool:
    """Whether the first argument is an application given once (`myapp web=3`).

    `my-app-2 web=3` names application `my-app-2`; `web-2` alone is a change without one.
    """
    first = args[0]
    if any(char in first for char in ".=+"):
        return False
    return len(args) > 1 or _CHANGE.fullmatch(first) is None


def _parse_change(arg: str, default_app: str | None) -> ScaleChange:
    match = _CHANGE.fullmatch(arg)
    if match is None:
        raise SpecError(f"{arg!r}: missing =N, +N or -N", hint=SCALE_HINT)
    target = match.group("target")
    if not target:
        raise SpecError(f"{arg!r}: no worker given", hint=SCALE_HINT)
    if target.endswith(("=", "+")) and match.group("op") == "-":
        raise SpecError(f"{arg!r}: the count cannot be negative", hint=SCALE_HINT)
    parts = target.split(".")
    if len(parts) == 1:
        if default_app is None:
            raise SpecError(
                f"{arg!r}: no application given",
                hint=f"write myapp.{arg}, or give the application first: pazuzu scale myapp {arg}",
            )
        app, worker = default_app, parts[0]
    elif len(parts) == 2:
        app, worker = parts
    else:
        raise SpecError(f"{arg!r}: a scale change names APP.WORKER", hint=SCALE_HINT)
    return ScaleChange(
        app=_scale_name(arg, app, "application"),
        worker=_scale_name(arg, worker, "worker"),
        op=ScaleOp(match.group("op")),
        amount=int(match.group("amount")),
    )


def _scale_name(arg: str, name: str, what: str) -> str:
    if _has_wildcard(name):
        raise SpecError(
            f"{arg!r}: scale needs an exact {what} name, not the pattern {name!r}",
            hint="name each worker: pazuzu scale myapp.web=3 myapp.queue=3",
        )
    if not name or not _NAME.fullmatch(name):
        raise SpecError(
            f"{arg!r}: {name!r} is not a valid {what} name (letters, digits, _ and -)",
            hint=SCALE_HINT,
        )
    return name
