"""Who may do what over the control socket: a caller's credentials in, a scope of applications out.

Root, pazuzud's own user and members of `socket_group` may do everything. The `user` of an
application may read and control that application, and nothing else: its specs are confined to
its own applications before the daemon sees them, so no glob (`*`), unknown name or scale change
reaches further. Anyone else is refused. `reload` re-reads the whole configuration and is for the
unrestricted callers only.

The server reads the credentials (SO_PEERCRED) and attaches them to the request; `authorize`
and `confine` decide, purely; `admit` is the daemon's one call, which also looks up socket_group.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from pazuzu.errors import PazuzuError, SpecError
from pazuzu.model import AppConfig, Config
from pazuzu.protocol import Command, Request
from pazuzu.spec import Spec, parse_scale, parse_spec

ADMIN_ONLY_COMMANDS = frozenset({Command.RELOAD})


class AccessError(PazuzuError):
    """The caller may not do what it asked."""

    code = "permission_denied"


@dataclass(frozen=True, slots=True)
class Caller:
    """The process at the other end of a control connection, as the kernel vouches for it.

    `groups` holds the primary and supplementary group ids; `name` is the user name of `uid`,
    or None when the uid has no passwd entry.
    """

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()
    name: str | None = None

    def __str__(self) -> str:
        return f"user {self.name} (uid {self.uid})" if self.name else f"uid {self.uid}"


@dataclass(frozen=True, slots=True)
class Scope:
    """The applications a caller may act on; `applications` None means every one."""

    applications: frozenset[str] | None

    @property
    def unlimited(self) -> bool:
        return self.applications is None

    def allows(self, app: str) -> bool:
        return self.applications is None or app in self.applications


ALL = Scope(None)


def admit(request: Request, config: Config) -> Request:
    """The request as `request.caller` may carry it out; AccessError if it may not.

    A request without a caller was made inside the daemon and is trusted.
    """
    if request.caller is None:
        return request
    socket_gid = group_id(config.socket_group) if config.socket_group else None
    scope = authorize(request.caller, request, config, socket_gid, daemon_uid=os.geteuid())
    return confine(request, scope, config)


def group_id(group: str) -> int | None:
    """The gid of a group given by name or number; None if there is no such group."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def owned_applications(caller: Caller, config: Config) -> frozenset[str]:
    """The applications whose `user` is the caller (by name or by numeric uid)."""
    return frozenset(app.name for app in config.applications if _runs_as(app, caller))


def is_administrator(caller: Caller, socket_gid: int | None, daemon_uid: int = 0) -> bool:
    """Whether the caller may do everything: root, pazuzud's user, or in socket_group."""
    if caller.uid in (0, daemon_uid):
        return True
    return socket_gid is not None and (caller.gid == socket_gid or socket_gid in caller.groups)


def authorize(
    caller: Caller,
    request: Request,
    config: Config,
    socket_gid: int | None,
    *,
    daemon_uid: int = 0,
) -> Scope:
    """The scope in which `caller` may carry out `request`; AccessError if it may not at all."""
    if is_administrator(caller, socket_gid, daemon_uid):
        return ALL
    owned = owned_applications(caller, config)
    if not owned:
        raise AccessError(
            f"permission denied: {caller} may not use pazuzud",
            hint=_who_may(config, socket_gid) + "; run the command as one of them (e.g. with sudo)",
        )
    if request.command in ADMIN_ONLY_COMMANDS:
        raise AccessError(
            f"permission denied: {caller} may not {request.command}: it re-reads the whole "
            "configuration",
            hint=f"only root and members of socket_group may; you may act on {_list(owned)}",
        )
    return Scope(owned)


def confine(request: Request, scope: Scope, config: Config) -> Request:
    """The request rewritten so that it names nothing outside `scope`.

    An exact spec or scale change outside the scope is refused with AccessError; a glob is
    narrowed to the applications in scope (and dropped where it matches none of them); a
    `status` or `log` without specs covers the scope only.
    """
    if scope.unlimited or scope.applications is None:
        return request
    owned = scope.applications
    match request.command:
        case Command.SCALE:
            _check_scale(request.strings("changes"), owned, config)
            return request
        case Command.RUN:
            app = str(request.args.get("app", ""))
            _check_owned(app, app, owned)
            return request
        case Command.STATUS | Command.LOG | Command.START | Command.STOP | Command.RESTART:
            texts = request.strings("specs")
            confined = _confine_specs(texts, owned, config) if texts else sorted(owned)
            return replace(request, args={**request.args, "specs": confined})
        case _:
            return request


def _confine_specs(texts: Iterable[str], owned: frozenset[str], config: Config) -> list[str]:
    confined: list[str] = []
    given: list[str] = []
    for text in texts:
        given.append(text)
        spec = parse_spec(text)
        if not _is_pattern(spec.app):
            _check_owned(spec.app, text, owned)
            _check_worker(spec, _application(config, spec.app))
            confined.append(text)
            continue
        for name in sorted(owned):
            app = _application(config, name)
            if fnmatchcase(name, spec.app) and _has_worker(app, spec.worker):
                confined.append(str(Spec(name, spec.worker, spec.instance)))
    if not confined:
        raise SpecError(
            f"nothing you may act on matches {', '.join(given)}",
            hint=f"you may act on {_list(owned)}",
        )
    return list(dict.fromkeys(confined))  # a glob and an exact spec may name the same thing


def _check_scale(texts: list[str], owned: frozenset[str], config: Config) -> None:
    for change in parse_scale(texts):
        _check_owned(change.app, str(change), owned)
        app = _application(config, change.app)
        if app.worker(change.worker) is None:
            raise _unknown_worker(f"{change.app}.{change.worker}", app)


def _check_owned(app: str, text: str, owned: frozenset[str]) -> None:
    # The same words whether `app` exists or not: a refused caller learns no other names.
    if app not in owned:
        raise AccessError(
            f"permission denied: {text!r} is not yours to act on",
            hint=f"you may act on {_list(owned)}",
        )


def _check_worker(spec: Spec, app: AppConfig) -> None:
    """An exact worker must exist; answered here, so the hint lists this application only."""
    if spec.worker is not None and not _is_pattern(spec.worker) and app.worker(spec.worker) is None:
        raise _unknown_worker(str(spec), app)


def _unknown_worker(text: str, app: AppConfig) -> SpecError:
    known = ", ".join(f"{app.name}.{worker.name}" for worker in app.workers)
    return SpecError(f"nothing matches {text}", hint=f"known workers: {known}")


def _has_worker(app: AppConfig, pattern: str | None) -> bool:
    return pattern is None or any(fnmatchcase(worker.name, pattern) for worker in app.workers)


def _application(config: Config, name: str) -> AppConfig:
    app = config.application(name)
    if app is None:  # owned names come from this configuration
        raise PazuzuError(f"application {name!r} is not configured")
    return app


def _runs_as(app: AppConfig, caller: Caller) -> bool:
    if app.user is None:
        return False  # runs as root: root's business only
    if app.user.isdigit():
        return int(app.user) == caller.uid
    return caller.name is not None and app.user == caller.name


def _is_pattern(part: str) -> bool:
    return "*" in part or "?" in part


def _who_may(config: Config, socket_gid: int | None) -> str:
    group = f"members of group {config.socket_group}" if socket_gid is not None else None
    parts = ["root", *([group] if group else []), "the user of an application (for that one)"]
    return "pazuzud serves " + ", ".join(parts)


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
