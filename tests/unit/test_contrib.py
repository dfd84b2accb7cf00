"""What contrib/ gives operators: the example system configuration, the example applications in
several languages, and the staging of the Debian package (contrib/debian/build_deb.py)."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from contrib.debian import build_deb
from pazuzu.config import load_config
from pazuzu.errors import ConfigError
from pazuzu.procfile import parse_procfile

CHECKOUT = Path(__file__).resolve().parents[2]
CONTRIB = CHECKOUT / "contrib"
SYSTEM_CONFIG = CONTRIB / "etc" / "pazuzu" / "pazuzu.conf"
CONF_D = SYSTEM_CONFIG.parent / "conf.d"
EXAMPLE_PROCFILES = sorted(
    [CONTRIB / "example" / "Procfile", *(CONTRIB / "examples").glob("*/Procfile")]
)
# `# key: value` in a configuration: a setting left at its default, to be uncommented.
COMMENTED_SETTING = re.compile(r"^(?P<indent>\s*)# (?P<setting>\s*[A-Za-z_]+:(?:\s.*)?)$")


def uncommented(text: str) -> str:
    """The configuration with every commented-out setting turned on."""
    lines = []
    for line in text.splitlines():
        match = COMMENTED_SETTING.match(line)
        lines.append(match["indent"] + match["setting"] if match else line)
    return "\n".join(lines) + "\n"


def test_system_config_includes_one_application_per_conf_d_file() -> None:
    """contrib/etc/pazuzu/pazuzu.conf loads with its conf.d files, one application each, and
    relative procfile paths that find the example applications in contrib/."""
    config = load_config(SYSTEM_CONFIG)

    formation = {
        app.name: {worker.name: worker.num_instances for worker in app.workers}
        for app in config.applications
    }
    assert formation == {
        "example": {"web": 2, "queue": 1, "ticker": 1},
        "ruby": {"web": 2, "worker": 1},
        "node": {"web": 2, "worker": 0},
        "notify": {"cache": 2},
    }
    for conf in CONF_D.glob("*.conf"):
        (app,) = load_config(conf).applications
        assert app.procfile.is_relative_to(CONTRIB), app.procfile
    notify = next(app for app in config.applications if app.name == "notify")
    assert all(worker.notify for worker in notify.workers)


def test_system_config_leaves_the_daemon_settings_at_their_defaults() -> None:
    """The example keeps pazuzud's defaults, so `pazuzu` finds the socket without options."""
    config = load_config(SYSTEM_CONFIG)

    assert config.socket_path == Path("/var/run/pazuzud.socket")
    assert config.state_path == Path("/var/lib/pazuzu/state.json")
    assert config.socket_group is None
    assert config.log_path is None


def test_commented_settings_are_valid_when_uncommented(tmp_path: Path) -> None:
    """Every `# key: value` in the example configuration is a key pazuzu accepts, with a valid
    value: the comments cannot drift from the configuration reference."""
    copy = tmp_path / "contrib"
    shutil.copytree(CONTRIB / "etc", copy / "etc")
    shutil.copytree(CONTRIB / "example", copy / "example")
    shutil.copytree(CONTRIB / "examples", copy / "examples")
    changed = 0
    for path in [copy / "etc/pazuzu/pazuzu.conf", *(copy / "etc/pazuzu/conf.d").glob("*.conf")]:
        text = path.read_text()
        path.write_text(uncommented(text))
        changed += uncommented(text) != text

    config = load_config(copy / "etc" / "pazuzu" / "pazuzu.conf")

    assert changed == 4  # pazuzu.conf and the conf.d files but notify.conf, which has none
    assert config.socket_group == "sudo"
    assert config.log_path == "syslog"
    example = next(app for app in config.applications if app.name == "example")
    assert example.user == "www-data"
    assert dict(example.environment)["LOG_LEVEL"] == "info"


def test_uncommenting_a_misspelt_setting_fails() -> None:
    """The check above has teeth: a commented typo becomes an unknown-key error."""
    text = "applications: {}\n# sokcet_path: /run/pazuzud.socket\n"

    assert uncommented(text) == "applications: {}\nsokcet_path: /run/pazuzud.socket\n"


@pytest.mark.parametrize("procfile", EXAMPLE_PROCFILES, ids=lambda p: p.parent.name)
def test_example_procfiles_parse_and_say_what_they_are(procfile: Path) -> None:
    """Each example application's Procfile parses and opens with a comment about it."""
    text = procfile.read_text()

    entries = parse_procfile(text, procfile)

    assert entries
    assert text.startswith("# ")


def test_examples_come_in_more_than_one_language() -> None:
    """Python, Ruby and Node.js examples, each run by its own interpreter."""
    commands = " ".join(
        command
        for path in EXAMPLE_PROCFILES
        for _, command in parse_procfile(path.read_text(), path)
    )

    for interpreter in ("python3", "ruby", "node"):
        assert f"exec {interpreter} " in commands


def test_packaged_unit_runs_the_packaged_daemon() -> None:
    """The packaged pazuzud.service starts /usr/sbin/pazuzud and keeps everything else."""
    text = (CHECKOUT / "units" / "pazuzud.service").read_text()

    unit = build_deb.packaged_unit(text)

    assert "ExecStart=/usr/sbin/pazuzud -c /etc/pazuzu/pazuzu.conf\n" in unit
    assert unit.count("ExecStart=") == 1
    assert "Type=notify\n" in unit
    assert "KillMode=process\n" in unit


def test_packaged_unit_refuses_a_unit_without_exec_start() -> None:
    with pytest.raises(build_deb.BuildError, match="ExecStart"):
        build_deb.packaged_unit("[Service]\nType=notify\n")


def test_python_dependency_is_the_build_minor_version() -> None:
    """The venv runs only on the python3 minor version it was built with."""
    assert build_deb.python_depends((3, 11)) == "python3 (>= 3.11), python3 (<< 3.12)"


def test_control_file_names_the_dependencies() -> None:
    package = build_deb.Package(
        version="0.1.0",
        architecture="amd64",
        python=(3, 11),
        installed_size_kib=2048,
        maintainer="pazuzu maintainers <pazuzu@invalid>",
    )

    control = build_deb.control_file((CONTRIB / "debian" / "control.in").read_text(), package)

    fields = dict(
        line.split(": ", 1) for line in control.splitlines() if re.match(r"^[A-Z][\w-]*: ", line)
    )
    assert fields["Package"] == "pazuzu"
    assert fields["Version"] == "0.1.0"
    assert fields["Architecture"] == "amd64"
    assert fields["Installed-Size"] == "2048"
    assert fields["Depends"] == ("python3 (>= 3.11), python3 (<< 3.12), libsystemd0, runit")
    assert fields["Recommends"] == "systemd, cgroup-tools"
    assert build_deb.deb_name("0.1.0", "amd64") == "pazuzu_0.1.0_amd64.deb"


def test_project_version_comes_from_pyproject() -> None:
    text = (CHECKOUT / "pyproject.toml").read_text()

    assert re.fullmatch(r"\d+\.\d+\.\d+.*", build_deb.project_version(text))


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The package's staging tree without the virtualenv, and its conffiles."""
    root = tmp_path_factory.mktemp("root")
    return root, build_deb.stage_files(root, CHECKOUT)


def test_staging_puts_each_file_where_debian_expects_it(staged: tuple[Path, list[Path]]) -> None:
    """Links to the venv's programs, units, configuration, init script, man pages, completion."""
    root, _ = staged

    assert (root / "usr/bin/pazuzu").readlink() == Path("/opt/pazuzu/bin/pazuzu")
    assert (root / "usr/sbin/pazuzud").readlink() == Path("/opt/pazuzu/bin/pazuzud")
    for path in (
        "lib/systemd/system/pazuzud.service",
        "lib/systemd/system/pazuzu.slice",
        "etc/pazuzu/pazuzu.conf",
        "etc/pazuzu/conf.d/README",
        "etc/default/pazuzud",
        "usr/share/man/man1/pazuzu.1.gz",
        "usr/share/man/man5/pazuzu.conf.5.gz",
        "usr/share/man/man8/pazuzud.8.gz",
        "usr/share/bash-completion/completions/pazuzu",
        "usr/share/zsh/vendor-completions/_pazuzu",
        "usr/share/fish/vendor_completions.d/pazuzu.fish",
        "usr/share/doc/pazuzu/copyright",
    ):
        assert (root / path).is_file(), path
    init_script = (root / "etc/init.d/pazuzud").stat().st_mode
    assert stat.S_IMODE(init_script) == 0o755
    assert "DAEMON=/usr/sbin/pazuzud\n" in (root / "etc/default/pazuzud").read_text()


def test_configuration_files_are_conffiles(staged: tuple[Path, list[Path]]) -> None:
    """Everything installed under /etc is a conffile, so an upgrade keeps local edits."""
    root, conffiles = staged

    under_etc = {Path("/") / p.relative_to(root) for p in (root / "etc").rglob("*") if p.is_file()}
    assert set(conffiles) == under_etc
    assert Path("/etc/pazuzu/pazuzu.conf") in conffiles


def test_no_application_is_enabled_by_the_package(staged: tuple[Path, list[Path]]) -> None:
    """The installed configuration supervises nothing until an operator adds a conf.d file."""
    root, _ = staged

    assert not list((root / "etc/pazuzu/conf.d").glob("*.conf"))
    assert "include: conf.d/*.conf" in (root / "etc/pazuzu/pazuzu.conf").read_text()


def test_packaged_example_configs_name_the_installed_examples(
    staged: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """Each example conf.d file in /usr/share/doc/pazuzu/examples/conf.d loads against the
    installed example applications, unchanged but for where they are."""
    root, _ = staged
    examples = root / "usr/share/doc/pazuzu/examples"
    conf_files = sorted((examples / "conf.d").glob("*.conf"))

    assert [path.name for path in conf_files] == sorted(p.name for p in CONF_D.glob("*.conf"))
    for conf in conf_files:
        text = conf.read_text()
        assert "../" not in text
        # Where the staging tree stands for /: the same paths, under this test's root.
        moved = tmp_path / conf.name
        moved.write_text(text.replace("/usr/share/doc/pazuzu/examples", str(examples)))
        (app,) = load_config(moved).applications
        (original,) = load_config(CONF_D / conf.name).applications
        assert app.procfile.read_text() == original.procfile.read_text()
        assert app.workers == original.workers


def test_packaged_example_config_refuses_an_unknown_application(tmp_path: Path) -> None:
    with pytest.raises(build_deb.BuildError, match="not one of the packaged examples"):
        build_deb.packaged_example_config("procfile: ../elsewhere\n", CONF_D, CONTRIB)


def test_maintainer_scripts_never_stop_workers() -> None:
    """prerm stops only the pazuzud service, and only on removal; nothing stops the workers."""
    debian = CONTRIB / "debian"
    code = {}
    for name in build_deb.MAINTAINER_SCRIPTS:
        text = (debian / name).read_text()
        assert text.startswith("#!/bin/sh\n"), name
        assert stat.S_IMODE((debian / name).stat().st_mode) == 0o755, name
        code[name] = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("#")
        )

    for name, text in code.items():
        assert "pazuzu.slice" not in text, name
        assert "pazuzu stop" not in text, name
        assert "kill" not in text, name
    stops = [line.strip() for line in code["prerm"].splitlines() if " stop" in line]
    assert stops == [
        "deb-systemd-invoke stop pazuzud.service >/dev/null || true",
        "systemctl stop pazuzud.service || true",
        "invoke-rc.d pazuzud stop || true",
    ]
    assert 'if [ "$1" = remove ]; then' in code["prerm"]


def test_load_config_still_rejects_bad_examples(tmp_path: Path) -> None:
    """The example check would notice a broken conf.d file: a missing application is an error."""
    conf = tmp_path / "conf.d" / "broken.conf"
    conf.parent.mkdir()
    conf.write_text("applications:\n  broken:\n    procfile: ../nowhere\n")

    with pytest.raises(ConfigError, match="does not exist"):
        load_config(conf)
