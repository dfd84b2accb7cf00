"""Hardening of a live pazuzud (libcgroup backend, this host): who may control it, what it
survives on its socket, which configurations it refuses, and a state directory gone read-only.

Access is tested with real throw-away users running the real CLI through `setpriv`; the users,
groups, mounts, processes and cgroups made here are removed however a test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pazuzu.config import load_config
from pazuzu.errors import ConfigError
from tests.integration.container import VENV, wait_until
from tests.integration.host import HostDeployment, require_host

pytestmark = pytest.mark.cgexec

PROMPT = 3.0  # seconds within which a well-behaved client must be answered, whatever others do
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


@pytest.fixture
def deployment(accounts: Accounts) -> Iterator[HostDeployment]:
    """A HostDeployment, removed before the test's accounts are (their workers go first)."""
    require_host()
    target = HostDeployment()
    target.root.chmod(0o755)  # the test users must reach the socket and the app directories
    try:
        yield target
    finally:
        target.cleanup()


# -- throw-away accounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


class Accounts:
    """System users and groups made for one test; `remove()` deletes every one of them."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.users: list[str] = []
        self.groups: list[str] = []

    def group(self, role: str) -> str:
        name = f"pzt-{role}-{self.tag}"
        subprocess.run(["groupadd", "--system", name], check=True)
        self.groups.append(name)
        return name

    def user(self, role: str, *groups: str) -> Account:
        name = f"pzt-{role}-{self.tag}"
        extra = ["--groups", ",".join(groups)] if groups else []
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                *extra,
                name,
            ],
            check=True,
        )
        self.users.append(name)
        entry = pwd.getpwnam(name)
        return Account(name, entry.pw_uid, entry.pw_gid)

    def remove(self) -> None:
        for name in self.users:
            subprocess.run(["userdel", name], check=False, capture_output=True)
        for name in self.groups:
            subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    made = Accounts()
    try:
        yield made
    finally:
        made.remove()


def as_user(account: Account, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run argv as `account`, with its own groups only, and no environment of ours."""
    switch = ["setpriv", "--reuid", str(account.uid), "--regid", str(account.gid), "--init-groups"]
    return subprocess.run(
        [*switch, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
    )


def cli_as(deployment: HostDeployment, account: Account, *args: str) -> Any:
    return as_user(
        account, str(VENV / "bin" / "pazuzu"), "--socket", str(deployment.socket_path), *args
    )


def shop_and_blog(deployment: HostDeployment, shop_user: str, socket_group: str) -> None:
    """`shop` runs as `shop_user`; `blog` runs as root and belongs to administrators only."""
    deployment.write_procfile("shop", "web: exec sleep 1000\nqueue: exec sleep 1000\n")
    deployment.write_procfile("blog", "web: exec sleep 1000\n")
    deployment.write_config(
        f"socket_group: {socket_group}\n"
        "applications:\n"
        f"  shop:\n    procfile: {deployment.app_dir('shop')}\n    user: {shop_user}\n"
        "    stop_timeout: 2\n"
        f"  blog:\n    procfile: {deployment.app_dir('blog')}\n    stop_timeout: 2\n"
    )


def test_access_follows_the_callers_real_credentials(
    deployment: HostDeployment, accounts: Accounts
) -> None:
    """A stranger is refused; shop's user controls shop only; socket_group controls all."""
    operators = accounts.group("ops")
    shop_user = accounts.user("shop")
    stranger = accounts.user("x")
    operator = accounts.user("op", operators)
    shop_and_blog(deployment, shop_user.name, operators)
    deployment.start_daemon()
    everything = {"shop.web.1", "shop.queue.1", "blog.web.1"}
    assert deployment.running() == everything
    # The shop worker really runs as the shop user.
    wait_until(
        lambda: uids(deployment.pid_of("shop.web.1")) == [shop_user.uid] * 4,
        timeout=5,
        message="shop.web.1 to run as the shop user",
    )

    # A stranger may do nothing, not even connect (the socket is 0660 plus an ACL entry per
    # application user), and is told who may.
    assert stat.S_IMODE(deployment.socket_path.stat().st_mode) == 0o660
    for args in (["status"], ["stop", "shop"], ["stop", "*"], ["reload"]):
        refused = cli_as(deployment, stranger, *args)
        assert refused.returncode == 1, (args, refused.stderr)
        assert f"permission denied on {deployment.socket_path}" in refused.stderr
        assert "user of an application" in refused.stderr
    assert deployment.running() == everything

    # The shop user sees its application only, globs included.
    shown = cli_as(deployment, shop_user, "--json", "status")
    assert shown.returncode == 0, shown.stderr
    assert [app["name"] for app in json.loads(shown.stdout)["applications"]] == ["shop"]
    star = json.loads(cli_as(deployment, shop_user, "--json", "status", "*").stdout)
    assert [app["name"] for app in star["applications"]] == ["shop"]

    # ...and may not touch blog, by name, glob, scale or reload.
    for args in (["stop", "blog"], ["stop", "blog.web.1"], ["scale", "blog.web=3"], ["reload"]):
        refused = cli_as(deployment, shop_user, *args)
        assert refused.returncode == 1, (args, refused.stderr)
        assert "permission denied" in refused.stderr
        assert "shop" in refused.stderr  # the hint names what it may act on
    unknown = cli_as(deployment, shop_user, "stop", "nosuchapp")
    assert "is not yours to act on" in unknown.stderr  # the same words: no names leak
    assert deployment.running() == everything

    # `stop *` from the shop user stops shop, and blog keeps running.
    assert cli_as(deployment, shop_user, "stop", "*").returncode == 0
    assert deployment.running() == {"blog.web.1"}
    assert cli_as(deployment, shop_user, "start", "shop").returncode == 0
    assert cli_as(deployment, shop_user, "scale", "shop.web=2").returncode == 0
    assert deployment.running() == everything | {"shop.web.2"}

    # A member of socket_group controls everything, reload included.
    assert cli_as(deployment, operator, "stop", "blog").returncode == 0
    assert deployment.running() == {"shop.web.1", "shop.web.2", "shop.queue.1"}
    assert cli_as(deployment, operator, "reload").returncode == 0
    assert cli_as(deployment, operator, "start", "*").returncode == 0
    assert deployment.running() == everything | {"shop.web.2"}


HOLD_CONNECTIONS = """
import json, socket, sys
held, refused = [], 0
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(b'{"command": "ping"}\\n')
    reply = json.loads(s.makefile("rb").readline())
    if reply["ok"]:
        held.append(s)
    else:
        refused += "too many connections" in reply["error"]["message"]
print(len(held), refused)
"""


def test_one_user_cannot_hold_more_than_its_share_of_connections(
    deployment: HostDeployment, accounts: Accounts
) -> None:
    """The socket is open to all: an application's user gets 32 connections at once, no more."""
    shop_user = accounts.user("shop")
    shop_and_blog(deployment, shop_user.name, "root")
    deployment.start_daemon()
    python = str(VENV / "bin" / "python")
    held = as_user(shop_user, python, "-c", HOLD_CONNECTIONS, str(deployment.socket_path), "40")
    assert held.returncode == 0, held.stderr
    assert held.stdout.split() == ["32", "8"]
    # Its connections are released with it: it gets them all back.
    again = as_user(shop_user, python, "-c", HOLD_CONNECTIONS, str(deployment.socket_path), "5")
    assert again.stdout.split() == ["5", "0"]


# -- what clients send ------------------------------------------------------------------------


def raw(path: Path, data: bytes, *, timeout: float = PROMPT) -> bytes:
    """Send bytes on a new connection; return the first reply line (b"" if closed first)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            return sock.makefile("rb").readline()
        except ConnectionResetError:
            return b""


def ping(path: Path) -> float:
    """Seconds a ping took; fails if there is no ok reply within PROMPT."""
    started = time.monotonic()
    reply = json.loads(raw(path, b'{"command": "ping"}\n'))
    assert reply["ok"] is True, reply
    return time.monotonic() - started


def uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(field) for field in line.split()[1:]]
    raise AssertionError(f"no Uid for {pid}")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json\n", "request is not JSON"),
        (b"\xff\xfe\x00garbage\n", "request is not JSON"),
        (b"[" * 200_000 + b"\n", "request is not JSON"),
        (b'{"command": "format-disk"}\n', "unknown command 'format-disk'"),
        (b'{"command": "stop", "args": {"specs": "shop"}}\n', "must be a list of strings"),
        (b'{"command": "stop", "args": {"specs": [1]}}\n', "must be a list of strings"),
        (b'{"command": "scale", "args": {"changes": ["shop.web=x"]}}\n', "missing =N"),
        (b'{"command": "status", "args": {"specs": ["../../etc"]}}\n', "too many parts"),
        (b'{"command": "restart", "args": {"specs": ["shop"], "rolling": "yes"}}\n', "true or"),
    ],
)
def test_bad_requests_are_answered_with_the_reason(
    deployment: HostDeployment, line: bytes, message: str
) -> None:
    """Malformed JSON, unknown commands and wrong types get a reply that says why."""
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n")
    deployment.start_daemon()
    reply = json.loads(raw(deployment.socket_path, line))
    assert reply["ok"] is False
    assert message in reply["error"]["message"]
    ping(deployment.socket_path)
    assert deployment.running() == {"shop.web.1"}


def test_abusive_clients_do_not_slow_the_others_or_grow_the_daemon(
    deployment: HostDeployment,
) -> None:
    """2 MiB lines, half lines held open, 200 clients at once and a client that never reads
    its replies: every other client is still answered promptly, and memory stays bounded."""
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n")
    deployment.start_daemon()
    path = deployment.socket_path
    pid = deployment.daemon_pid()
    ping(path)
    before = rss(pid)

    with contextlib.ExitStack() as held:
        # Half a request, held open.
        for _ in range(20):
            half = held.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            half.connect(str(path))
            half.sendall(b'{"command": "status", "args": {"spe')
        assert ping(path) < PROMPT

        # A client that pipelines requests and never reads a reply.
        deaf = held.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(str(path))
        deaf.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            deaf.send(b'{"command": "status"}\n' * 5000)
        assert ping(path) < PROMPT

        # Lines over the 1 MiB limit: refused or cut off, never buffered whole.
        for _ in range(3):
            reply = raw(path, b'{"command": "status", "x": "' + b"a" * (2 << 20) + b'"}\n')
            if reply:
                assert b"request longer than 1048576 bytes" in reply
        assert ping(path) < PROMPT

        # 200 clients at once, each answered.
        assert asyncio.run(many_pings(path, 200)) == 200
        assert ping(path) < PROMPT

    wait_until(lambda: rss(pid) - before < RSS_GROWTH_LIMIT, timeout=5, message="RSS to settle")
    assert deployment.running() == {"shop.web.1"}


async def many_pings(path: Path, count: int) -> int:
    async def one() -> bool:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(b'{"command": "ping"}\n')
            await writer.drain()
            reply = json.loads(await reader.readline())
            return bool(reply["ok"])
        finally:
            writer.close()

    async with asyncio.timeout(20):
        answers = await asyncio.gather(*(one() for _ in range(count)))
    return sum(answers)


# -- dangerous configuration ------------------------------------------------------------------


def test_a_user_that_does_not_exist_is_refused_before_anything_starts(
    deployment: HostDeployment,
) -> None:
    """pazuzud will not start on `user: nosuchuser`, and says what to do."""
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n"
        "    user: pzt-nosuchuser\n    group: pzt-nosuchgroup\n"
    )
    assert deployment.start_daemon(check=False, timeout=20) != 0
    log = deployment.daemon_log()
    assert "applications.shop.user: no user named 'pzt-nosuchuser' on this host" in log
    assert "useradd --system pzt-nosuchuser" in log
    assert deployment.running() == set()


def test_a_procfile_that_is_a_fifo_is_refused_without_blocking(
    deployment: HostDeployment,
) -> None:
    """A FIFO where the Procfile should be, or as `.env`, is refused at once."""
    directory = deployment.app_dir("shop")
    directory.mkdir()
    os.mkfifo(directory / "Procfile")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {directory}\n")
    started = time.monotonic()
    assert deployment.start_daemon(check=False, timeout=20) != 0
    assert time.monotonic() - started < 15
    assert "is a FIFO (named pipe), not a regular file" in deployment.daemon_log()

    (directory / "Procfile").unlink()
    (directory / "Procfile").write_text("web: exec sleep 1000\n")
    os.mkfifo(directory / ".env")
    with pytest.raises(ConfigError, match=r"\.env: cannot read: it is a FIFO"):
        load_config(deployment.config_path)


def test_names_that_make_unit_names_too_long_are_refused(tmp_path: Path) -> None:
    """systemd allows 255 characters in a unit name; a '-' costs 4 once escaped."""
    (tmp_path / "Procfile").write_text("web: exec sleep 1000\n")
    config = tmp_path / "pazuzu.conf"
    config.write_text(f"applications:\n  {'a-' * 60}b:\n    procfile: {tmp_path}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "systemd allows 255" in caught.value.message
    assert caught.value.line == 2
    assert caught.value.hint is not None
    assert "shorten the application or worker name" in caught.value.hint
    config.write_text(f"applications:\n  {'a' * 200}:\n    procfile: {tmp_path}\n")
    assert load_config(config).applications[0].name == "a" * 200


@pytest.mark.parametrize("root", ["../escape", "a/b", "a b"])
def test_a_hierarchy_root_that_is_a_path_is_refused(tmp_path: Path, root: str) -> None:
    """cgroups.hierarchy_root names a slice and a cgroup directory: never a path out of them."""
    config = tmp_path / "pazuzu.conf"
    config.write_text(f"cgroups:\n  hierarchy_root: '{root}'\n")
    with pytest.raises(ConfigError, match=r"cgroups\.hierarchy_root: invalid name"):
        load_config(config)


# -- the state directory ------------------------------------------------------------------------


def test_a_read_only_state_directory_leaves_the_daemon_running_and_saying_so(
    deployment: HostDeployment,
) -> None:
    """Scaling still works in memory; status warns that the formation is not persisted."""
    state_dir = deployment.root / "state"
    state_dir.mkdir()
    deployment.state_path = state_dir / "state.json"
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(
        f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n    stop_timeout: 2\n"
    )
    deployment.start_daemon()
    deployment.cli("scale", "shop.web=2")
    saved = deployment.state_path.read_text()
    mounted = subprocess.run(
        f"mount --bind {state_dir} {state_dir} && mount -o remount,bind,ro {state_dir}",
        shell=True,
        check=False,
        capture_output=True,
    )
    try:
        if mounted.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr!r}")
        deployment.cli("scale", "shop.web=3")
        assert deployment.running() == {"shop.web.1", "shop.web.2", "shop.web.3"}
        warning = deployment.status()["daemon"].get("warning", "")
        assert "formation not saved" in warning
        assert "Read-only file system" in warning
        assert "formation not saved" in deployment.daemon_log()
        assert deployment.state_path.read_text() == saved  # the last good file, intact
    finally:
        subprocess.run(["umount", str(state_dir)], check=False, capture_output=True)
    deployment.cli("scale", "shop.web=1")
    assert "warning" not in deployment.status()["daemon"]
    assert json.loads(deployment.state_path.read_text())["workers"][0]["count"] == 1
    assert deployment.running() == {"shop.web.1"}


def test_a_corrupt_state_file_is_kept_aside_and_reported(deployment: HostDeployment) -> None:
    """A garbled state file does not stop the daemon; it is moved aside and status says so."""
    deployment.state_path.write_bytes(b'{"version": 1, "workers": [\xff\xfe')
    deployment.write_procfile("shop", "web: exec sleep 1000\n")
    deployment.write_config(f"applications:\n  shop:\n    procfile: {deployment.app_dir('shop')}\n")
    deployment.start_daemon()
    (aside,) = deployment.root.glob("state.json.corrupt-*")
    assert aside.read_bytes() == b'{"version": 1, "workers": [\xff\xfe'
    warning = deployment.status()["daemon"]["warning"]
    assert "not UTF-8" in warning
    assert str(aside) in warning
    assert deployment.running() == {"shop.web.1"}
