"""Options every database-touching command shares, and how a command gets its settings and parts."""

from __future__ import annotations

import contextlib
import functools
import getpass
from collections.abc import Callable, Iterator
from typing import Any

import apsw
import click

from bridge.cli.output import fail
from bridge.domain.authz import Principal
from bridge.domain.identifiers import is_identifier
from bridge.errors import BridgeError, InvalidArgument, Unavailable
from bridge.services.core import Call
from bridge.settings import Settings, parse_duration
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


@contextlib.contextmanager
def opened(settings: Settings, as_json: bool) -> Iterator[Parts]:
    """Build the parts for a CLI command, turning bridge errors into exit codes."""
    parts = None
    try:
        try:
            parts = build(settings)
        except (OSError, apsw.Error) as exc:  # cannot create, open, lock or migrate the file: not a bug, exit 4
            raise Unavailable(f"cannot open the database {settings.db_path}: {exc}",
                              {"reason": "database_unavailable", "database": str(settings.db_path)}) from exc
        yield parts
    except BridgeError as error:
        fail(error, as_json)
    finally:
        if parts is not None:
            parts.close()


def operator_call(settings: Settings, actor: str | None) -> Call:
    """The operator identity of a CLI invocation (`human:<os user>` unless --actor says otherwise)."""
    name = actor or f"human:{getpass.getuser()}"
    return Call(Principal(agent_id=name, workspace_id=settings.workspace, role="operator", session_id="cli"))


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map a BridgeError raised by a command body to stderr + its exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as error:
            fail(error, kwargs.get("as_json", False))

    return wrapper


def check_identifier(flag: str, value: str | None, as_json: bool) -> None:
    """Exit 2 unless `value` (when given) is a valid identifier."""
    if value is not None and not is_identifier(value):
        fail(InvalidArgument(f"--{flag} must match [A-Za-z0-9][A-Za-z0-9._:@-]{{0,127}}"), as_json)


def token_lifetime(ttl: str, settings: Settings, as_json: bool) -> float:
    """`--ttl` in seconds; exit 2 unless it is a positive duration within the token lifetime cap."""
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        fail(InvalidArgument(f"--ttl: {exc}"), as_json)
    if lifetime <= 0 or lifetime > settings.token_max_ttl:
        fail(InvalidArgument(f"--ttl must be positive and at most {settings.token_max_ttl:g}s"), as_json)
    return lifetime
