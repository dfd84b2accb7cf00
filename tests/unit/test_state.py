"""The persisted formation: the state file and how it meets the configuration."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pazuzu.errors import PazuzuError
from pazuzu.model import WorkerFormation
from pazuzu.state import effective_formation, load_state, save_state


def test_a_missing_file_is_an_empty_formation(tmp_path: Path) -> None:
    """Before the first scale there is no state file and nothing saved."""
    assert load_state(tmp_path / "state.json") == {}


def test_a_saved_formation_loads_back_unchanged(tmp_path: Path) -> None:
    """Counts, configured values and stopped numbers survive a save and a load."""
    path = tmp_path / "state.json"
    formation = {
        ("myapp", "web"): WorkerFormation(count=3, configured=1, stopped=frozenset({2})),
        ("myapp", "queue"): WorkerFormation(count=0, configured=2),
        ("my-app", "web_hook"): WorkerFormation(count=1, configured=1, stopped=frozenset({1, 4})),
    }
    save_state(path, formation)
    assert load_state(path) == formation


def test_the_file_is_versioned_json_listing_workers(tmp_path: Path) -> None:
    """The file holds version 1 and one object per worker, stopped numbers sorted."""
    path = tmp_path / "state.json"
    save_state(path, {("myapp", "web"): WorkerFormation(3, 1, frozenset({3, 2}))})
    assert json.loads(path.read_text()) == {
        "version": 1,
        "workers": [
            {"app": "myapp", "worker": "web", "count": 3, "configured": 1, "stopped": [2, 3]}
        ],
    }


def test_save_replaces_the_previous_formation(tmp_path: Path) -> None:
    """A second save overwrites the first, leaving no temporary file behind."""
    path = tmp_path / "state.json"
    save_state(path, {("myapp", "web"): WorkerFormation(3, 1)})
    save_state(path, {("myapp", "queue"): WorkerFormation(2, 2)})
    assert load_state(path) == {("myapp", "queue"): WorkerFormation(2, 2)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_save_creates_the_missing_directory(tmp_path: Path) -> None:
    """The state directory is created 0755 on the first save."""
    path = tmp_path / "var" / "lib" / "pazuzu" / "state.json"
    old_umask = os.umask(0o022)
    try:
        save_state(path, {})
    finally:
        os.umask(old_umask)
    assert load_state(path) == {}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755


def test_the_file_is_readable_by_all_and_writable_by_the_owner(tmp_path: Path) -> None:
    """The state file has mode 0644, whatever the umask."""
    path = tmp_path / "state.json"
    old_umask = os.umask(0o077)
    try:
        save_state(path, {("myapp", "web"): WorkerFormation(1, 1)})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the new content cannot be made durable, the old file stays and no temp file remains."""
    path = tmp_path / "state.json"
    save_state(path, {("myapp", "web"): WorkerFormation(3, 1)})

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(PazuzuError, match="cannot save the formation") as caught:
        save_state(path, {("myapp", "web"): WorkerFormation(0, 1)})
    monkeypatch.undo()
    assert caught.value.hint
    assert load_state(path) == {("myapp", "web"): WorkerFormation(3, 1)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"workers": []}', "version None"),
        ('{"version": 2, "workers": []}', "version 2"),
        ('{"version": 1}', "'workers' is not a list"),
        ('{"version": 1, "workers": [3]}', "is not an object"),
        ('{"version": 1, "workers": [{"app": "a", "count": 1, "configured": 1}]}', "app or worker"),
        (
            '{"version": 1, "workers": [{"app": "a", "worker": "w", "count": -1,'
            ' "configured": 1}]}',
            "count is not a count",
        ),
        (
            '{"version": 1, "workers": [{"app": "a", "worker": "w", "count": true,'
            ' "configured": 1}]}',
            "count is not a count",
        ),
        (
            '{"version": 1, "workers": [{"app": "a", "worker": "w", "count": 1,'
            ' "configured": 1, "stopped": [0]}]}',
            "stopped is not a list of instance numbers",
        ),
        (
            '{"version": 1, "workers": [{"app": "a", "worker": "w", "count": 1, "configured": 1},'
            ' {"app": "a", "worker": "w", "count": 2, "configured": 1}]}',
            "a.w appears twice",
        ),
    ],
)
def test_an_unusable_file_is_moved_aside_and_reported(
    tmp_path: Path, content: str, reason: str
) -> None:
    """A file that does not parse or has another version is renamed *.corrupt-<time>, and raised."""
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(PazuzuError, match="moved it aside") as caught:
        load_state(path)
    assert reason in caught.value.message
    assert caught.value.hint
    [aside] = list(tmp_path.iterdir())
    assert aside.name.startswith("state.json.corrupt-")
    assert aside.name.removeprefix("state.json.corrupt-").isdigit()
    assert aside.read_text() == content
    assert str(aside) in caught.value.message


def test_a_second_corrupt_file_keeps_the_first_copy(tmp_path: Path) -> None:
    """Moving aside never overwrites an earlier corrupt copy."""
    path = tmp_path / "state.json"
    for content in ("first", "second"):
        path.write_text(content)
        with pytest.raises(PazuzuError):
            load_state(path)
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["first", "second"]


def test_an_unreadable_path_is_reported_and_left_alone(tmp_path: Path) -> None:
    """A state path that cannot be read (here a directory) raises PazuzuError and moves nothing."""
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(PazuzuError, match="cannot read the state file"):
        load_state(path)
    assert path.is_dir()


def test_a_runtime_scale_wins_while_the_configuration_is_unchanged() -> None:
    """Saved web=3 (configured 1) stays in force while num_instances is still 1."""
    saved = {("myapp", "web"): WorkerFormation(3, 1, frozenset({2}))}
    assert effective_formation({("myapp", "web"): 1}, saved) == saved


def test_a_changed_configuration_wins_over_the_runtime_scale() -> None:
    """Once num_instances changes from 1 to 2, web runs 2 and nothing stays stopped."""
    saved = {("myapp", "web"): WorkerFormation(3, 1, frozenset({2}))}
    assert effective_formation({("myapp", "web"): 2}, saved) == {
        ("myapp", "web"): WorkerFormation(2, 2)
    }


def test_new_workers_take_the_configured_count() -> None:
    """A worker with nothing saved runs its num_instances."""
    assert effective_formation({("myapp", "queue"): 4}, {}) == {
        ("myapp", "queue"): WorkerFormation(4, 4)
    }


def test_workers_no_longer_configured_are_dropped() -> None:
    """A saved worker that the configuration no longer has is not in the formation."""
    saved = {
        ("myapp", "web"): WorkerFormation(3, 1),
        ("gone", "web"): WorkerFormation(5, 5),
    }
    assert effective_formation({("myapp", "web"): 1}, saved) == {
        ("myapp", "web"): WorkerFormation(3, 1)
    }
