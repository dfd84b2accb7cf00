"""Who may do what over the control socket: administrators everything, an app's user its app."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pazuzu import access
from pazuzu.access import ALL, AccessError, Caller, Scope, admit, authorize, confine
from pazuzu.errors import SpecError
from pazuzu.model import AppConfig, Config, WorkerConfig
from pazuzu.protocol import Command, Request
from pazuzu.server import ControlServer

SOCKET_GID = 990
SHOP = Caller(uid=1001, gid=1001, groups=frozenset({1001}), name="shop")
BLOG = Caller(uid=1002, gid=1002, groups=frozenset({1002}), name="blog")
STRANGER = Caller(uid=1003, gid=1003, groups=frozenset({1003, 27}), name="mallory")
OPERATOR = Caller(uid=1004, gid=1004, groups=frozenset({1004, SOCKET_GID}), name="ops")
ROOT = Caller(uid=0, gid=0, groups=frozenset({0}), name="root")


def app(name: str, user: str | None, *workers: str) -> AppConfig:
    return AppConfig(
        name=name,
        procfile=Path(f"/srv/{name}/Procfile"),
        workers=tuple(WorkerConfig(worker, "sleep 1000") for worker in workers or ("web",)),
        user=user,
    )


CONFIG = Config(
    socket_group="pazuzu",
    applications=(
        app("shop", "shop", "web", "queue"),
        app("shop-admin", "shop", "web"),
        app("blog", "1002", "web"),
        app("secret", None, "web"),
    ),
)


def request(command: Command, caller: Caller | None = None, **args: Any) -> Request:
    return Request(command, args, caller)


def scope_of(caller: Caller, command: Command = Command.STATUS, **args: Any) -> Scope:
    return authorize(caller, request(command, **args), CONFIG, SOCKET_GID)


def specs(caller: Caller, command: Command, *texts: str) -> list[str]:
    """The specs of the request as confined to the caller's scope."""
    given = request(command, specs=list(texts))
    confined = confine(given, scope_of(caller, command), CONFIG)
    return confined.strings("specs")


# -- who may do everything -------------------------------------------------------------------


def test_root_may_do_everything() -> None:
    """uid 0 gets the unlimited scope, reload included."""
    assert scope_of(ROOT, Command.RELOAD) == ALL


def test_a_member_of_socket_group_may_do_everything() -> None:
    """A supplementary group equal to socket_group's gid is enough."""
    assert scope_of(OPERATOR, Command.RELOAD) == ALL


def test_the_primary_group_counts_as_socket_group_membership() -> None:
    """A caller whose primary gid is socket_group's is an administrator too."""
    caller = Caller(uid=1005, gid=SOCKET_GID, name="ops2")
    assert scope_of(caller) == ALL


def test_pazuzuds_own_user_may_do_everything() -> None:
    """A daemon run by a non-root user serves that user fully."""
    assert authorize(SHOP, request(Command.RELOAD), CONFIG, None, daemon_uid=1001) == ALL


def test_an_unlimited_scope_leaves_the_request_alone() -> None:
    """Administrators' specs reach the daemon unchanged, globs and all."""
    assert specs(ROOT, Command.STOP, "*", "secret.web.1") == ["*", "secret.web.1"]


# -- an application's user -------------------------------------------------------------------


def test_an_applications_user_may_act_on_its_applications() -> None:
    """`user: shop` on two applications gives the shop user exactly those two."""
    assert scope_of(SHOP) == Scope(frozenset({"shop", "shop-admin"}))


def test_a_numeric_user_matches_the_callers_uid() -> None:
    """`user: 1002` belongs to uid 1002, whatever its name."""
    assert scope_of(BLOG) == Scope(frozenset({"blog"}))


def test_status_without_specs_shows_only_the_callers_applications() -> None:
    """A restricted `status` is narrowed to the caller's applications, by exact name."""
    assert specs(SHOP, Command.STATUS) == ["shop", "shop-admin"]


def test_log_without_specs_covers_only_the_callers_applications() -> None:
    """`pazuzu log` with no spec would read everything: it is narrowed too."""
    assert specs(BLOG, Command.LOG) == ["blog"]


def test_a_star_glob_only_ever_matches_the_callers_applications() -> None:
    """`*` from the blog user stops blog, never shop or secret."""
    assert specs(BLOG, Command.STOP, "*") == ["blog"]


def test_a_glob_keeps_its_worker_and_instance_parts() -> None:
    """`s*.web*.1` becomes one spec per owned application whose workers match."""
    assert specs(SHOP, Command.RESTART, "s*.web*.1") == ["shop.web*.1", "shop-admin.web*.1"]


def test_a_glob_is_dropped_for_applications_without_a_matching_worker() -> None:
    """`*.queue` names shop.queue only: shop-admin has no queue worker."""
    assert specs(SHOP, Command.STOP, "*.queue") == ["shop.queue"]


def test_an_exact_spec_of_an_owned_application_passes_unchanged() -> None:
    """`shop.web.2` from the shop user reaches the daemon as written."""
    assert specs(SHOP, Command.STOP, "shop.web.2") == ["shop.web.2"]


def test_a_glob_that_matches_nothing_owned_is_an_error_naming_what_is_allowed() -> None:
    """`sec*` from the shop user matches none of its applications: refused, with its list."""
    with pytest.raises(SpecError) as caught:
        specs(SHOP, Command.STOP, "sec*")
    assert caught.value.message == "nothing you may act on matches sec*"
    assert caught.value.hint == "you may act on shop, shop-admin"


@pytest.mark.parametrize(
    "text", ["secret", "secret.web", "blog.web.1", "nosuchapp", "nosuchapp.web", "root"]
)
def test_an_exact_spec_outside_the_scope_is_refused(text: str) -> None:
    """Another application, or one that does not exist, is refused in the same words."""
    with pytest.raises(AccessError) as caught:
        specs(SHOP, Command.STOP, text)
    assert caught.value.message == f"permission denied: {text!r} is not yours to act on"
    assert caught.value.hint == "you may act on shop, shop-admin"
    assert caught.value.code == "permission_denied"


def test_one_foreign_spec_refuses_the_whole_request() -> None:
    """`shop blog` from the shop user stops nothing at all."""
    with pytest.raises(AccessError):
        specs(SHOP, Command.STOP, "shop", "blog")


@pytest.mark.parametrize("text", ["..", "shop..web", "shop/../blog", "shop.web.0", ""])
def test_a_spec_that_does_not_parse_is_refused_before_anything_else(text: str) -> None:
    """Path tricks and empty parts are spec errors, as for everyone."""
    with pytest.raises(SpecError):
        specs(SHOP, Command.STOP, text)


def test_an_unknown_worker_of_an_owned_application_lists_that_applications_workers() -> None:
    """The hint names only the caller's own workers, never other applications'."""
    with pytest.raises(SpecError) as caught:
        specs(SHOP, Command.STOP, "shop.nope")
    assert caught.value.hint == "known workers: shop.web, shop.queue"


def test_a_scale_of_an_owned_worker_passes() -> None:
    """`shop.web=3` and `shop queue+1` from the shop user reach the daemon unchanged."""
    for changes in (["shop.web=3"], ["shop", "queue+1"]):
        given = request(Command.SCALE, changes=changes)
        assert confine(given, scope_of(SHOP, Command.SCALE), CONFIG) == given


@pytest.mark.parametrize("changes", [["blog.web=3"], ["blog", "web+1"], ["shop.web=1", "x.y=0"]])
def test_a_scale_of_another_applications_worker_is_refused(changes: list[str]) -> None:
    """A scale change naming any application outside the scope refuses the request."""
    with pytest.raises(AccessError):
        confine(request(Command.SCALE, changes=changes), scope_of(SHOP), CONFIG)


def test_a_scale_of_an_unknown_worker_of_an_owned_application_is_a_spec_error() -> None:
    """The hint lists the application's own workers."""
    with pytest.raises(SpecError, match=r"^nothing matches shop\.nope$"):
        confine(request(Command.SCALE, changes=["shop.nope=2"]), scope_of(SHOP), CONFIG)


def test_reload_is_refused_to_an_applications_user() -> None:
    """Reload re-reads everything, so it is for administrators only."""
    with pytest.raises(AccessError, match="may not reload") as caught:
        scope_of(SHOP, Command.RELOAD)
    assert caught.value.hint is not None
    assert "shop, shop-admin" in caught.value.hint


def test_ping_is_allowed_to_an_applications_user() -> None:
    """A caller with applications may check that the daemon is there."""
    given = request(Command.PING)
    assert confine(given, scope_of(SHOP, Command.PING), CONFIG) == given


# -- everyone else ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(Command))
def test_a_caller_without_applications_is_refused_everything(command: Command) -> None:
    """A user who runs no application and is not an administrator gets nothing, not even ping."""
    with pytest.raises(AccessError) as caught:
        scope_of(STRANGER, command)
    assert caught.value.message == "permission denied: user mallory (uid 1003) may not use pazuzud"
    assert caught.value.hint == (
        "pazuzud serves root, members of group pazuzu, the user of an application (for that "
        "one); run the command as one of them (e.g. with sudo)"
    )


def test_a_caller_without_a_passwd_entry_is_named_by_uid() -> None:
    """An unnamed uid is refused too, and named by number."""
    with pytest.raises(AccessError, match=r"uid 4242 may not use pazuzud"):
        scope_of(Caller(uid=4242, gid=4242))


def test_an_application_without_a_user_belongs_to_root_only() -> None:
    """`secret` has no user: no unprivileged caller owns it."""
    assert all("secret" not in access.owned_applications(c, CONFIG) for c in (SHOP, BLOG))


# -- admit: the daemon's one call ------------------------------------------------------------


def test_a_request_made_inside_the_daemon_is_trusted() -> None:
    """A request without a caller passes unchanged."""
    given = request(Command.RELOAD)
    assert admit(given, CONFIG) is given


def test_admit_refuses_a_stranger_and_narrows_an_owner() -> None:
    """admit combines authorize and confine with the host's group database."""
    with pytest.raises(AccessError):
        admit(request(Command.STATUS, STRANGER), CONFIG)
    assert admit(request(Command.STATUS, BLOG), CONFIG).strings("specs") == ["blog"]


def test_a_numeric_socket_group_is_its_gid() -> None:
    """`socket_group: 990` names gid 990 without a lookup; an unknown name is no group."""
    assert access.group_id("990") == 990
    assert access.group_id("no-such-group-here") is None


# -- the server attaches the caller ----------------------------------------------------------


def test_the_server_attaches_the_peers_credentials_to_each_request(tmp_path: Path) -> None:
    """The handler sees the uid and gid the kernel reports for the connecting process."""
    path = tmp_path / "pazuzud.socket"

    async def who(given: Request) -> Any:
        assert given.caller is not None
        return [given.caller.uid, given.caller.gid, os.getgid() in given.caller.groups]

    async def scenario() -> Any:
        server = ControlServer(path, who)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"command": "ping"}\n')
            async with asyncio.timeout(5):
                reply = json.loads(await reader.readline())
            writer.close()
            return reply
        finally:
            await server.close()

    assert asyncio.run(scenario()) == {"ok": True, "result": [os.getuid(), os.getgid(), True]}


def test_a_refusal_closes_the_connection(tmp_path: Path) -> None:
    """After a permission_denied reply the server hangs up: no second try on that line."""
    path = tmp_path / "pazuzud.socket"

    async def refuse(given: Request) -> Any:
        raise AccessError("permission denied: test")

    async def scenario() -> tuple[Any, bytes]:
        server = ControlServer(path, refuse)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"command": "ping"}\n')
            async with asyncio.timeout(5):
                reply = json.loads(await reader.readline())
                rest = await reader.read()
            writer.close()
            return reply, rest
        finally:
            await server.close()

    reply, rest = asyncio.run(scenario())
    assert reply["error"]["code"] == "permission_denied"
    assert rest == b""
