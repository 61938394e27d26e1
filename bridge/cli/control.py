"""`bridge freeze` / `bridge unfreeze`: rollback step 1 (runbooks/rollback.md)."""

from __future__ import annotations

import click

from bridge.cli.common import db_options, load_settings, opened, operator_call
from bridge.cli.options import ACTOR, REASON
from bridge.cli.output import emit
from bridge.services.control import set_freeze


@click.command()
@click.option("--all", "everything", is_flag=True, help="Refuse every write, not only thread creation.")
@REASON
@ACTOR
@db_options
def freeze(everything: bool, reason: str, actor: str | None, db: str | None, workspace: str | None,
           as_json: bool) -> None:
    """Refuse create_thread (or, with --all, every write) with UNAVAILABLE; reads keep working."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        emit(set_freeze(parts.bridge, operator_call(settings, actor), "all" if everything else "create", reason),
             as_json)


@click.command()
@REASON
@ACTOR
@db_options
def unfreeze(reason: str, actor: str | None, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Lift a write freeze."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        emit(set_freeze(parts.bridge, operator_call(settings, actor), None, reason), as_json)
