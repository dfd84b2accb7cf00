"""Loading pazuzu.conf: defaults, includes, Procfiles, overrides, and errors that point home."""

from __future__ import annotations

import contextlib
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pazuzu.config import instance_spec, load_config
from pazuzu.errors import ConfigError
from pazuzu.model import (
    AppConfig,
    CgroupsConfig,
    InstanceId,
    Limits,
    WorkerConfig,
    WorkerLogsConfig,
)


def write(path: Path, text: str) -> Path:
    """Write dedented `text` to `path`, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding a two-worker Procfile."""
    write(tmp_path / "myapp" / "Procfile", "web: serve --port $PORT\nqueue: work\n")
    return tmp_path / "myapp"


def load_text(tmp_path: Path, text: str) -> tuple[Path, AppConfig]:
    """Load a configuration holding `text`; return its path and its only application."""
    path = write(tmp_path / "pazuzu.conf", text)
    (app,) = load_config(path).applications
    return path, app


def config_error(path: Path) -> ConfigError:
    """The ConfigError that loading `path` raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_defaults_apply_when_keys_are_absent(tmp_path: Path, app_dir: Path) -> None:
    """Only a procfile given: everything else takes the documented defaults."""
    path = write(tmp_path / "pazuzu.conf", f"applications:\n  myapp:\n    procfile: {app_dir}\n")

    config = load_config(path)

    assert config.path == path
    assert config.log_path is None
    assert config.socket_path == Path("/var/run/pazuzud.socket")
    assert config.socket_group is None
    assert config.state_path == Path("/var/lib/pazuzu/state.json")
    assert config.cgroups == CgroupsConfig("pazuzu", ("memory", "cpu", "cpuacct", "blkio"))
    (app,) = config.applications
    assert (app.name, app.procfile, app.user, app.group) == (
        "myapp",
        app_dir / "Procfile",
        None,
        None,
    )
    assert app.workers == (
        WorkerConfig("web", "serve --port $PORT", num_instances=1, index=0, stop_timeout=10.0),
        WorkerConfig("queue", "work", num_instances=1, index=1, stop_timeout=10.0),
    )


def test_empty_configuration_has_no_applications(tmp_path: Path) -> None:
    """A file of only comments is a valid configuration with nothing to run."""
    path = write(tmp_path / "pazuzu.conf", "# nothing yet\n")

    assert load_config(path).applications == ()


def test_top_level_keys_are_read(tmp_path: Path) -> None:
    """log_path, socket_path, socket_group and state_path are taken as given."""
    path = write(
        tmp_path / "pazuzu.conf",
        """
        log_path: syslog
        socket_path: /run/pazuzu.sock
        socket_group: adm
        state_path: state/formation.json
        cgroups:
          subsystems: [memory]
          fs_root: /cgroup
        """,
    )

    config = load_config(path)

    assert (config.log_path, config.socket_path, config.socket_group) == (
        "syslog",
        Path("/run/pazuzu.sock"),
        "adm",
    )
    assert config.state_path == tmp_path / "state" / "formation.json"
    assert config.cgroups == CgroupsConfig("pazuzu", ("memory",), Path("/cgroup"))


def test_included_files_merge_in_order_later_wins(tmp_path: Path, app_dir: Path) -> None:
    """Includes merge over the including file in order, mappings recursively, later wins."""
    write(
        tmp_path / "first.conf",
        """
        socket_group: first
        applications:
          myapp:
            user: www-data
            workers:
              web: {num_instances: 2}
        """,
    )
    write(
        tmp_path / "second.conf",
        """
        socket_group: second
        applications:
          myapp:
            workers:
              web: {stop_timeout: 3}
        """,
    )
    path = write(
        tmp_path / "pazuzu.conf",
        f"""
        socket_group: main
        include: [first.conf, second.conf]
        applications:
          myapp:
            procfile: {app_dir}
            group: www-data
        """,
    )

    config = load_config(path)

    assert config.socket_group == "second"
    (app,) = config.applications
    assert (app.user, app.group) == ("www-data", "www-data")
    web = app.worker("web")
    assert web is not None
    assert (web.num_instances, web.stop_timeout) == (2, 3.0)


def test_include_glob_merges_matches_in_sorted_order(tmp_path: Path) -> None:
    """A glob includes every match, in sorted order, so the last name wins."""
    write(tmp_path / "conf.d" / "20-b.conf", "socket_group: twenty\n")
    write(tmp_path / "conf.d" / "10-a.conf", "socket_group: ten\n")
    write(tmp_path / "conf.d" / "30-c.yaml", "socket_group: not-matched\n")
    path = write(tmp_path / "pazuzu.conf", "include: conf.d/*.conf\n")

    assert load_config(path).socket_group == "twenty"


def test_include_glob_matching_nothing_is_fine(tmp_path: Path) -> None:
    """An include glob with no match (an empty conf.d) is not an error."""
    path = write(tmp_path / "pazuzu.conf", "socket_group: adm\ninclude: conf.d/*.conf\n")

    assert load_config(path).socket_group == "adm"


def test_included_file_may_include_relative_to_itself(tmp_path: Path, app_dir: Path) -> None:
    """An included file's includes and procfile are relative to that file's directory."""
    write(tmp_path / "conf.d" / "more" / "deep.conf", "socket_group: deep\n")
    write(
        tmp_path / "conf.d" / "apps.conf",
        "include: more/deep.conf\napplications:\n  myapp:\n    procfile: ../myapp\n",
    )
    path = write(tmp_path / "pazuzu.conf", "include: conf.d/apps.conf\n")

    config = load_config(path)

    assert config.socket_group == "deep"
    assert config.applications[0].procfile.resolve() == (app_dir / "Procfile").resolve()


def test_include_of_missing_literal_path_is_an_error(tmp_path: Path) -> None:
    """An include naming a file that does not exist is refused at its line."""
    path = write(tmp_path / "pazuzu.conf", "socket_group: adm\ninclude:\n  - missing.conf\n")

    error = config_error(path)

    assert (error.file, error.line, error.key) == (path, 3, "include")
    assert "missing.conf does not exist" in error.message


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    """A file that includes itself, directly or not, is refused."""
    write(tmp_path / "other.conf", "include: pazuzu.conf\n")
    path = write(tmp_path / "pazuzu.conf", "include: other.conf\n")

    with pytest.raises(ConfigError, match="already being read"):
        load_config(path)


def test_original_hiearchy_root_spelling_is_accepted(tmp_path: Path) -> None:
    """The original's misspelling `hiearchy_root` sets hierarchy_root."""
    path = write(tmp_path / "pazuzu.conf", "cgroups:\n  hiearchy_root: legacy\n")

    assert load_config(path).cgroups.hierarchy_root == "legacy"


def test_top_level_procfile_defines_one_application_named_after_its_directory(
    tmp_path: Path, app_dir: Path
) -> None:
    """`procfile: /srv/myapp` alone defines the application `myapp`."""
    path = write(tmp_path / "pazuzu.conf", f"procfile: {app_dir}\n")

    (app,) = load_config(path).applications

    assert (app.name, app.procfile, app.directory) == ("myapp", app_dir / "Procfile", app_dir)
    assert [worker.name for worker in app.workers] == ["web", "queue"]


def test_procfile_may_name_the_file_itself(tmp_path: Path, app_dir: Path) -> None:
    """`procfile:` may name a file with another name than Procfile."""
    write(app_dir / "Procfile.dev", "dev: serve --reload\n")

    _, app = load_text(tmp_path, f"applications:\n  myapp:\n    procfile: {app_dir}/Procfile.dev\n")

    assert (app.procfile, app.workers[0].name) == (app_dir / "Procfile.dev", "dev")


def test_relative_procfile_is_relative_to_the_config_directory(
    tmp_path: Path, app_dir: Path
) -> None:
    """A relative procfile path is read from the configuration file's directory."""
    _, app = load_text(tmp_path, "applications:\n  myapp:\n    procfile: myapp\n")

    assert app.procfile == app_dir / "Procfile"
    assert app.procfile.is_absolute()


def test_worker_overrides_command_line_and_num_instances(tmp_path: Path, app_dir: Path) -> None:
    """The configuration may override a Procfile worker's command line and instance count."""
    _, app = load_text(
        tmp_path,
        f"""
        applications:
          myapp:
            procfile: {app_dir}
            stop_timeout: 30
            workers:
              queue:
                command_line: work --fast
                num_instances: 0
                environment: {{QUEUE: high}}
        """,
    )

    assert app.workers == (
        WorkerConfig("web", "serve --port $PORT", 1, index=0, stop_timeout=30.0),
        WorkerConfig(
            "queue", "work --fast", 0, index=1, stop_timeout=30.0, environment={"QUEUE": "high"}
        ),
    )


def test_config_only_worker_with_command_line_comes_after_procfile_workers(
    tmp_path: Path, app_dir: Path
) -> None:
    """A worker absent from the Procfile but given a command_line is added after the others."""
    _, app = load_text(
        tmp_path,
        f"""
        applications:
          myapp:
            procfile: {app_dir}
            workers:
              clock: {{command_line: tick}}
              web: {{num_instances: 3}}
        """,
    )

    assert [(w.name, w.command_line, w.num_instances, w.index) for w in app.workers] == [
        ("web", "serve --port $PORT", 3, 0),
        ("queue", "work", 1, 1),
        ("clock", "tick", 1, 2),
    ]


def test_config_only_worker_without_command_line_is_an_error(tmp_path: Path, app_dir: Path) -> None:
    """A worker under `workers:` that the Procfile lacks needs a command_line."""
    path = write(
        tmp_path / "pazuzu.conf",
        f"applications:\n  myapp:\n    procfile: {app_dir}\n    workers:\n"
        "      wbe:\n        num_instances: 2\n",
    )

    error = config_error(path)

    assert (error.line, error.key) == (5, "applications.myapp.workers.wbe")
    assert "'wbe' is not in" in error.message


def test_unknown_key_is_an_error_naming_key_line_and_file(tmp_path: Path, app_dir: Path) -> None:
    """A misspelt key is refused with its file, line, key path and the closest known key."""
    path = write(
        tmp_path / "pazuzu.conf",
        f"""
        applications:
          myapp:
            procfile: {app_dir}
            workers:
              web:
                num_instance: 2
        """,
    )

    error = config_error(path)

    assert (error.file, error.line) == (path, 6)
    assert error.key == "applications.myapp.workers.web.num_instance"
    assert str(error) == f"{path}:6: applications.myapp.workers.web.num_instance: unknown key"
    assert error.hint == "did you mean 'num_instances'?"


def test_negative_num_instances_is_an_error_with_key_path_and_line(
    tmp_path: Path, app_dir: Path
) -> None:
    """num_instances below zero is refused, pointing at the value and suggesting 0."""
    path = write(
        tmp_path / "pazuzu.conf",
        f"""
        # pazuzu
        applications:
          myapp:
            procfile: {app_dir}
            workers:
              web:
                num_instances: -1
        """,
    )

    error = config_error(path)

    assert str(error) == (
        f"{path}:7: applications.myapp.workers.web.num_instances: must be >= 0, got -1"
    )
    assert error.hint == "use 0 to keep the worker defined but stopped"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("socket_path: [a, b]\n", "socket_path"),
        ("cgroups: [memory]\n", "cgroups"),
        ("cgroups:\n  subsystems: memory\n", "cgroups.subsystems"),
        (
            "applications:\n  myapp:\n    procfile: {app}\n    user: [root]\n",
            "applications.myapp.user",
        ),
        ("applications:\n  myapp:\n    procfile: {app}\n    stop_timeout: 0\n", None),
        ("applications:\n  myapp:\n    procfile: {app}\n    environment: [A]\n", None),
        ("applications:\n  myapp:\n    procfile: {app}\n    workers:\n      web: 3\n", None),
        ("applications:\n  my.app:\n    procfile: {app}\n", "applications.my.app"),
    ],
)
def test_wrong_types_and_values_are_errors(
    tmp_path: Path, app_dir: Path, yaml_text: str, key: str | None
) -> None:
    """A value of the wrong type or out of range is refused with its file and line."""
    path = write(tmp_path / "pazuzu.conf", yaml_text.format(app=app_dir))

    error = config_error(path)

    assert error.file == path
    assert error.line is not None
    assert error.hint
    if key is not None:
        assert error.key == key


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """Invalid YAML is a ConfigError at the line where the parser gave up."""
    path = write(tmp_path / "pazuzu.conf", "socket_group: adm\nlog_path: a: b\nstate_path: x\n")

    error = config_error(path)

    assert (error.file, error.line) == (path, 2)
    assert str(error).startswith(f"{path}:2: invalid YAML: mapping values are not allowed")


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice in one mapping is refused rather than silently replaced."""
    path = write(tmp_path / "pazuzu.conf", "socket_group: adm\nsocket_group: root\n")

    error = config_error(path)

    assert str(error) == f"{path}:2: socket_group: duplicate key"


def test_missing_configuration_file_is_an_error_with_a_hint(tmp_path: Path) -> None:
    """A configuration path that does not exist is a ConfigError that says what to do."""
    error = config_error(tmp_path / "absent.conf")

    assert error.file == tmp_path / "absent.conf"
    assert error.hint is not None
    assert "-c PATH" in error.hint


def test_missing_procfile_is_an_error_at_the_procfile_key(tmp_path: Path) -> None:
    """A procfile path that does not exist is refused at its line."""
    path = write(
        tmp_path / "pazuzu.conf", "applications:\n  myapp:\n    procfile: /nonexistent/app\n"
    )

    error = config_error(path)

    assert (error.line, error.key) == (3, "applications.myapp.procfile")
    assert "/nonexistent/app does not exist" in error.message


def test_directory_without_procfile_is_an_error(tmp_path: Path) -> None:
    """A procfile directory that holds no Procfile is refused."""
    (tmp_path / "empty").mkdir()
    path = write(tmp_path / "pazuzu.conf", "applications:\n  myapp:\n    procfile: empty\n")

    with pytest.raises(ConfigError, match="holds no Procfile"):
        load_config(path)


def test_application_without_procfile_is_an_error(tmp_path: Path) -> None:
    """Every application needs a procfile."""
    path = write(tmp_path / "pazuzu.conf", "applications:\n  myapp:\n    user: www\n")

    error = config_error(path)

    assert str(error) == f"{path}:2: applications.myapp: procfile is required"


def test_bad_procfile_line_is_reported_in_the_procfile(tmp_path: Path, app_dir: Path) -> None:
    """A Procfile error names the Procfile and its line, not the configuration."""
    write(app_dir / "Procfile", "web: serve\noops\n")
    path = write(tmp_path / "pazuzu.conf", f"procfile: {app_dir}\n")

    error = config_error(path)

    assert (error.file, error.line) == (app_dir / "Procfile", 2)


def test_instance_environment_layers_and_foreman_port(tmp_path: Path, app_dir: Path) -> None:
    """Environment: .env, then app, then worker, then PORT (5000 + 100*index + n-1) and names."""
    write(app_dir / ".env", "FROM_DOTENV=dotenv\nSHARED=dotenv\nWORKER_SHARED=dotenv\n")
    _, app = load_text(
        tmp_path,
        f"""
        applications:
          myapp:
            procfile: {app_dir}
            user: www-data
            environment:
              SHARED: app
              WORKER_SHARED: app
              DEBUG: true
            workers:
              queue:
                stop_timeout: 2.5
                environment: {{WORKER_SHARED: worker, PORT: "1"}}
        """,
    )
    web, queue = app.workers

    web_1 = instance_spec(app, web, 1)
    queue_2 = instance_spec(app, queue, 2)

    assert web_1.id == InstanceId("myapp", "web", 1)
    assert dict(web_1.environment)["PORT"] == "5000"
    assert dict(instance_spec(app, web, 3).environment)["PORT"] == "5002"
    assert queue_2.environment == (
        ("DEBUG", "true"),
        ("DYNO", "queue.2"),
        ("FROM_DOTENV", "dotenv"),
        ("PAZUZU_APP", "myapp"),
        ("PAZUZU_INSTANCE", "2"),
        ("PAZUZU_WORKER", "queue"),
        ("PORT", "5101"),
        ("SHARED", "app"),
        ("WORKER_SHARED", "worker"),
    )
    assert (queue_2.command_line, queue_2.directory, queue_2.user, queue_2.group) == (
        "work",
        app_dir,
        "www-data",
        None,
    )
    assert queue_2.stop_timeout == 2.5


def test_bad_dotenv_line_is_reported_in_the_dotenv_file(tmp_path: Path, app_dir: Path) -> None:
    """A `.env` beside the Procfile that does not parse is an error at its line."""
    write(app_dir / ".env", "GOOD=1\nBAD LINE\n")
    path = write(tmp_path / "pazuzu.conf", f"procfile: {app_dir}\n")

    error = config_error(path)

    assert (error.file, error.line) == (app_dir / ".env", 2)


KEYS = st.sampled_from(
    [
        "applications",
        "cgroups",
        "include",
        "procfile",
        "workers",
        "web",
        "num_instances",
        "environment",
        "stop_timeout",
        "command_line",
        "hiearchy_root",
        "user",
        "log_path",
        "x",
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
YAML_DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
).map(yaml.safe_dump)


@given(st.text() | YAML_DOCUMENTS)
@settings(max_examples=300)
def test_load_config_on_any_text_returns_config_or_raises_config_error(text: str) -> None:
    """Whatever the configuration file holds, loading it never fails with anything else."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pazuzu.conf"
        path.write_text(text)
        with contextlib.suppress(ConfigError):
            load_config(path)


def test_worker_logs_default_and_override(tmp_path: Path) -> None:
    """`worker_logs` defaults to /var/log/pazuzu, 10 MiB, 5 files; relative paths resolve."""
    (tmp_path / "Procfile").write_text("web: exec sleep 1\n")
    config_path = tmp_path / "pazuzu.conf"
    config_path.write_text(f"procfile: {tmp_path}\n")
    assert load_config(config_path).worker_logs == WorkerLogsConfig()
    config_path.write_text(f"procfile: {tmp_path}\nworker_logs:\n  directory: logs\n  keep: 2\n")
    logs = load_config(config_path).worker_logs
    assert logs.directory == tmp_path / "logs"
    assert logs.keep == 2
    assert logs.max_bytes == 10 * 1024 * 1024


def test_worker_logs_rejects_a_zero_size(tmp_path: Path) -> None:
    """`worker_logs.max_bytes: 0` is an error naming the key and line."""
    (tmp_path / "Procfile").write_text("web: exec sleep 1\n")
    config_path = tmp_path / "pazuzu.conf"
    config_path.write_text(f"procfile: {tmp_path}\nworker_logs:\n  max_bytes: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert "worker_logs.max_bytes" in str(caught.value)
    assert ":3:" in str(caught.value)


def write_limits(tmp_path: Path, limits: str) -> Path:
    (tmp_path / "Procfile").write_text("web: exec sleep 1\n")
    config_path = tmp_path / "pazuzu.conf"
    config_path.write_text(
        f"applications:\n  shop:\n    procfile: {tmp_path}\n    limits: {{memory: 2G}}\n"
        f"    workers:\n      web:\n        limits: {limits}\n"
    )
    return config_path


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("{memory: 512M}", Limits(memory_bytes=512 * 1024**2)),
        ("{memory: 1048576}", Limits(memory_bytes=1048576)),
        ("{memory: 1.5GiB}", Limits(memory_bytes=3 * 1024**3 // 2)),
        ("{cpu: 50%}", Limits(cpu_percent=50.0)),
        ("{cpu: 1.5}", Limits(cpu_percent=150.0)),
        ("{tasks: 100}", Limits(tasks=100)),
    ],
)
def test_limits_read_sizes_percentages_and_cpus(
    tmp_path: Path, limits: str, expected: Limits
) -> None:
    """Memory takes bytes or binary suffixes, cpu a percentage or CPUs, tasks a count."""
    config = load_config(write_limits(tmp_path, limits))
    assert config.applications[0].workers[0].limits == expected
    assert config.applications[0].limits == Limits(memory_bytes=2 * 1024**3)


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ("{memory: lots}", "memory"),
        ("{memory: 0}", "memory"),
        ("{cpu: -5%}", "cpu"),
        ("{cpu: fast}", "cpu"),
        ("{tasks: 0}", "tasks"),
        ("{swap: 1G}", "swap"),
    ],
)
def test_a_bad_limit_is_an_error_naming_it(tmp_path: Path, limits: str, key: str) -> None:
    """A limit that does not parse, or an unknown one, names its key path and line."""
    with pytest.raises(ConfigError) as caught:
        load_config(write_limits(tmp_path, limits))
    assert f"applications.shop.workers.web.limits.{key}" in str(caught.value)
    assert ":7:" in str(caught.value)
