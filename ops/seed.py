"""`bridge ops seed`: bulk-fill a bridge database with realistic history (bridge.store.seed) for benchmarks."""

from __future__ import annotations

import apsw
import click

from bridge.cli.common import db_options, load_settings, opened
from bridge.cli.output import emit, fail
from bridge.errors import InvalidArgument
from bridge.store import seed as seeding
from bridge.store.db import unavailable_from


@click.command()
@click.option("--threads", type=click.IntRange(min=1), required=True, help="Threads to create.")
@click.option("--messages", type=click.IntRange(min=0), required=True,
              help="Messages in all, spread evenly over the threads.")
@click.option("--participants", type=click.IntRange(1, 100), default=4, show_default=True,
              help="Agents in every thread (seed-agent-1 .. seed-agent-N; the first is the author).")
@click.option("--seed", "seed_value", type=int, default=0, show_default=True,
              help="Random seed: the same seed gives the same mix of messages (ids and times follow the clock).")
@click.option("--append", is_flag=True, help="Add the new threads to a database that already has threads.")
@db_options
def seed(threads: int, messages: int, participants: int, seed_value: int, append: bool, db: str | None,
         workspace: str | None, as_json: bool) -> None:
    """Bulk-fill a database with realistic history (threads, messages, events, cursors, sessions) for benchmarks.

    Creates and migrates the database like `bridge db migrate` when it is missing, and refuses one that already has
    threads unless --append. For speed the seed writes with synchronous=OFF in large transactions and ends with a
    checkpoint under synchronous=FULL: the file is durable when the command returns. If the seed process dies midway,
    the batches committed so far stay (each passes `bridge db check`); a power loss or OS crash during the seed can
    damage the file, so seed a scratch database, not one you cannot lose."""
    settings = load_settings(db=db, workspace=workspace)
    if settings.location.is_postgres:  # the bulk path writes SQLite pages directly
        fail(InvalidArgument(f"ops seed fills a SQLite file, not {settings.location}: seed a file, then move it "
                             "with `bridge db copy --from FILE --to URL`", {"database": str(settings.location)}),
             as_json)
    if settings.db_path.is_file() and not append and (existing := seeding.thread_count(settings.db_path)):
        fail(InvalidArgument(f"the database {settings.db_path} already has {existing} threads: pass --append to add "
                             "seeded threads to them", {"threads": existing}), as_json)
    with opened(settings, as_json, create=True):
        pass  # created and migrated, its signing key made, exactly as `bridge db migrate` does
    plan = seeding.SeedPlan(threads=threads, messages=messages, participants=participants, seed=seed_value,
                            workspace_id=settings.workspace)
    try:
        report = seeding.seed(settings.db_path, plan, busy_timeout=settings.busy_timeout)
    except apsw.Error as exc:  # locked by a writer, disk full, I/O: exit 4 like every database command
        fail(unavailable_from(exc), as_json)
    emit(report, as_json)
