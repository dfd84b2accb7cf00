"""Man pages and completion scripts are generated from the CLI and the configuration reference."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from pazuzu import cli, config, daemon
from pazuzu.manpages import (
    APPLICATION,
    CGROUPS,
    CONFIG_ALIASES,
    CONFIG_REFERENCE,
    LIMITS,
    TOP,
    WORKER,
    WORKER_LOGS,
    completion_scripts,
    man_pages,
    pazuzu_conf_page,
    pazuzu_page,
    pazuzud_page,
    roff,
)

CHECKOUT = Path(__file__).resolve().parents[2]

# What pazuzu.config accepts in each mapping: the documentation must follow it.
ACCEPTED = {
    TOP: config._TOP_KEYS,
    CGROUPS: config._CGROUPS_KEYS,
    WORKER_LOGS: config._WORKER_LOGS_KEYS,
    APPLICATION: config._APP_KEYS,
    WORKER: config._WORKER_KEYS,
    LIMITS: config._LIMITS_KEYS,
}


@pytest.mark.parametrize("section", list(ACCEPTED))
def test_every_accepted_configuration_key_is_documented(section: str) -> None:
    """A key added to pazuzu.config without a CONFIG_REFERENCE entry fails here, by name."""
    documented = {key.name for key in CONFIG_REFERENCE if key.section == section}
    assert sorted(set(ACCEPTED[section]) - documented) == [], "add them to CONFIG_REFERENCE"
    assert sorted(documented - set(ACCEPTED[section])) == [], "pazuzu.config does not take them"


def test_every_alias_is_documented_with_its_key() -> None:
    """`hiearchy_root`, the original's spelling, is named in the entry of hierarchy_root."""
    assert CONFIG_ALIASES[CGROUPS] == (config._HIERARCHY_ROOT_ALIAS,)
    entry = next(key for key in CONFIG_REFERENCE if key.path == "cgroups.hierarchy_root")
    assert config._HIERARCHY_ROOT_ALIAS in entry.meaning


def test_every_configuration_key_is_in_pazuzu_conf_5() -> None:
    """Each reference entry is a `.TP` item of pazuzu.conf(5) with its type and default."""
    page = pazuzu_conf_page()
    for key in CONFIG_REFERENCE:
        line = f"\\fB{roff(key.name)}\\fR ({roff(key.type)}; default: {roff(key.default)})"
        assert line in page, key.path


def all_options(command: click.Command) -> list[str]:
    options = [
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in param.opts
    ]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            options += all_options(sub)
    return options


@pytest.mark.parametrize(
    ("command", "page"), [(cli.main, pazuzu_page), (daemon.main, pazuzud_page)]
)
def test_every_option_of_the_programs_is_in_their_page(
    command: click.Command, page: Callable[[], str]
) -> None:
    """The pages are walked from the click definitions: no option is left out."""
    text = page()
    missing = [option for option in all_options(command) if roff(option) not in text]
    assert missing == []
    assert "--count" not in text  # hidden options stay hidden


def test_every_command_has_a_subsection_with_its_usage() -> None:
    """pazuzu(1) has `.SS "pazuzu status [OPTIONS] [SPECS]..."` and the like."""
    page = pazuzu_page()
    for name, command in cli.main.commands.items():
        assert f'.SS "pazuzu {roff(name)} ' in page, name
        assert roff((command.help or "").split("\n")[0].strip()) in page, name
    assert '.SS "pazuzu status [OPTIONS] [SPECS]..."' in page


def test_roff_escapes_what_roff_would_read_as_markup() -> None:
    """Hyphens and backslashes are escaped, code is bold, and no line starts a request."""
    assert roff("--socket") == "\\-\\-socket"
    assert roff("my\\x2dapp") == "my\\ex2dapp"
    assert roff("run `pazuzu check`") == "run \\fBpazuzu check\\fR"
    assert roff("first\n.second\n'third") == "first\n\\&.second\n\\&'third"


@pytest.mark.parametrize("name", ["pazuzu.1", "pazuzud.8", "pazuzu.conf.5"])
def test_committed_man_pages_are_current(name: str) -> None:
    """contrib/man holds what `python -m pazuzu.manpages contrib/man` writes: they never drift."""
    committed = (CHECKOUT / "contrib" / "man" / name).read_text()
    assert committed == man_pages()[name], "regenerate: python -m pazuzu.manpages contrib/man"


@pytest.mark.parametrize("name", ["pazuzu.bash", "_pazuzu", "pazuzu.fish"])
def test_committed_completion_scripts_are_current(name: str) -> None:
    """contrib/completions holds what `_PAZUZU_COMPLETE=<shell>_source pazuzu` prints."""
    committed = (CHECKOUT / "contrib" / "completions" / name).read_text()
    assert committed == completion_scripts()[name], (
        "regenerate: python -m pazuzu.manpages contrib/man contrib/completions"
    )


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
@pytest.mark.parametrize("name", ["pazuzu.1", "pazuzud.8", "pazuzu.conf.5"])
def test_groff_renders_the_pages_without_a_warning(name: str, tmp_path: Path) -> None:
    """`groff -man -ww` finds nothing to complain about."""
    page = tmp_path / name
    page.write_text(man_pages()[name])
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert (result.returncode, result.stderr) == (0, "")
