"""Options every database-touching command shares, and how a command gets its settings and parts."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable, Iterator
from typing import Any

import click

from bridge.cli.output import fail
from bridge.domain.authz import Principal
from bridge.domain.identifiers import is_identifier
from bridge.domain.vocabulary import Reason, Role
from bridge.errors import BridgeError, InvalidArgument, Unavailable
from bridge.services.core import Call
from bridge.settings import Settings, parse_duration
from bridge.store.engines import CannotOpen, open_problem
from bridge.wiring import Parts, build


def db_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--db`, `--workspace` and `--json` to a command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)
    fn = click.option("--workspace", default=None, help="Workspace id [env BRIDGE_WORKSPACE; default: default].")(fn)
    fn = click.option("--db", default=None, help="Database file [env BRIDGE_DB; default: ./bridge.db].")(fn)
    return fn


def load_settings(**overrides: Any) -> Settings:
    """Settings from flags over environment over defaults; a bad setting exits 2 listing every problem."""
    try:
        return Settings.load(overrides)
    except BridgeError as error:
        click.echo(error.message, err=True)
        raise SystemExit(2) from error


def db_source() -> str:
    """How this command chose its database file: the `--db` flag, the `BRIDGE_DB` variable or the default."""
    context = click.get_current_context(silent=True)
    if context is not None and context.params.get("db") is not None:
        return "from --db"
    if os.environ.get("BRIDGE_DB"):
        return "from BRIDGE_DB"
    return "the default ./bridge.db"


def database_error(settings: Settings, exc: BaseException) -> Unavailable:
    """The one-line UNAVAILABLE error for a database this command cannot use, naming it and its source."""
    where, source = settings.location, db_source()
    details: dict[str, Any] = {"database": str(where), "database_source": source}
    reason = exc.reason if isinstance(exc, CannotOpen) else Reason.DATABASE_UNAVAILABLE
    message = {
        Reason.DATABASE_LOCKED: f"the database {where} ({source}) is locked by another program (waited "
                                f"{settings.busy_timeout:g}s); close it and retry",
        Reason.DATABASE_MISSING: f"no database at {where} ({source}); only bridge serve, bridge db migrate and "
                                 "bridge db restore create one: check --db, BRIDGE_DB or the current directory",
        Reason.DATABASE_NOT_CREATABLE: f"cannot create the database {where} ({source}): {exc}",
    }.get(reason, f"cannot open the database {where} ({source}): {exc}")
    return Unavailable(message, {**details, "reason": reason})


def require_database(settings: Settings, as_json: bool) -> None:
    """Exit 4 (nothing created) unless the database exists: for commands that open it without `opened`."""
    if (problem := open_problem(settings.location, create=False)) is not None:
        fail(database_error(settings, problem), as_json)


def require_tmux(as_json: bool) -> None:
    """Exit 4 unless tmux is installed: for commands that start agents in panes (checked before opening anything)."""
    from bridge.worker.tmux import Tmux

    if not Tmux.available():
        fail(Unavailable("tmux is not installed (not found on PATH): this command starts agents in tmux panes; "
                         "install tmux (e.g. apt-get install tmux) and retry", {"reason": Reason.TMUX_MISSING}),
             as_json)


@contextlib.contextmanager
def opened(settings: Settings, as_json: bool, *, create: bool = False) -> Iterator[Parts]:
    """Build the parts for a CLI command, turning bridge errors into exit codes.

    Only `create=True` (bridge serve, bridge db migrate) may create a missing database file and its signing key;
    every other command refuses a missing file with exit 4 and creates nothing."""
    parts = None
    try:
        try:
            parts = build(settings, create=create)
        except (OSError, CannotOpen) as exc:  # cannot create, open, lock or reach the database: not a bug, exit 4
            raise database_error(settings, exc) from exc
        yield parts
    except BridgeError as error:
        fail(error, as_json)
    finally:
        if parts is not None:
            parts.close()


def operator_call(settings: Settings, actor: str | None) -> Call:
    """The operator identity of a CLI invocation (`human:<os user>` unless --actor says otherwise)."""
    name = actor or f"human:{getpass.getuser()}"
    return Call(Principal(agent_id=name, workspace_id=settings.workspace, role=Role.OPERATOR, session_id="cli"))


def check_identifier(flag: str, value: str | None, as_json: bool) -> None:
    """Exit 2 unless `value` (when given) is a valid identifier."""
    if value is not None and not is_identifier(value):
        fail(InvalidArgument(f"--{flag} must match [A-Za-z0-9][A-Za-z0-9._:@-]{{0,127}}"), as_json)


def token_lifetime(ttl: str | float | None, settings: Settings, as_json: bool) -> float:
    """`--ttl` in seconds (None: BRIDGE_TOKEN_TTL); exit 2 unless it is a positive duration within the token lifetime
    cap."""
    if ttl is None:
        return settings.token_ttl
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        fail(InvalidArgument(f"--ttl: {exc}"), as_json)
    if lifetime <= 0 or lifetime > settings.token_max_ttl:
        fail(InvalidArgument(f"--ttl must be positive and at most {settings.token_max_ttl:g}s"), as_json)
    return lifetime
