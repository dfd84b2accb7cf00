"""Command-line options that `pazuzu` and `pazuzud` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pazuzu.defaults import DEFAULT_CONFIG_PATH

F = TypeVar("F", bound=Callable[..., Any])


def config_option(what: str) -> Callable[[F], F]:
    """`-c/--config PATH`, also `$PAZUZU_CONFIG`, into the parameter `config_path`."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        envvar="PAZUZU_CONFIG",
        default=DEFAULT_CONFIG_PATH,
        show_default=True,
        help=f"{what} (also $PAZUZU_CONFIG).",
    )
