"""One way to open the bridge's database, whichever engine the location names, and the types above the store use.

Code above `bridge/store/` opens its database here and types what it holds as `Database` and `Connection`: it never
learns which engine is in use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import apsw

from bridge.domain.location import Location, parse
from bridge.domain.vocabulary import Reason
from bridge.store.cannot_open import CannotOpen
from bridge.store.db import Store, creation_problem

if TYPE_CHECKING:
    from bridge.store.postgres import PgStore

Database: TypeAlias = "Store | PgStore"


class Cursor(Protocol):
    def __iter__(self) -> Iterator[tuple[Any, ...]]: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...


class Connection(Protocol):
    """What a query function may use of the connection it is given (apsw's, or `PgConnection`)."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...
    def changes(self) -> int: ...


def open_problem(location: Location, *, create: bool) -> CannotOpen | None:
    """Why opening `location` would fail before trying: a missing file (without `create`), or a file that cannot
    be created. A PostgreSQL database is always tried."""
    path = location.path
    if path is None:
        return None
    if not create and not path.is_file():
        return CannotOpen(Reason.DATABASE_MISSING, f"no database file at {path}")
    problem = creation_problem(path) if create else None
    return None if problem is None else CannotOpen(Reason.DATABASE_NOT_CREATABLE, problem)


def store_type(location: Location) -> type[Database]:
    """The store class for a location, for what it can do (`keeps_signing_key`) without opening anything."""
    if location.is_postgres:
        from bridge.store.postgres import PgStore

        return PgStore
    return Store


def open_database(db: str, *, create: bool = True, **options: Any) -> Database:
    """The store for a `--db` value: `Store` (a SQLite file) or `PgStore` (a PostgreSQL URL), migrated. `options`
    are the store settings (synchronous, busy_timeout, ...); each engine takes those that apply to it. A database
    that cannot be opened, created, locked or reached raises `CannotOpen`."""
    location = parse(db)
    if (problem := open_problem(location, create=create)) is not None:
        raise problem
    if location.is_postgres:
        import psycopg  # only bridges on PostgreSQL import it

        from bridge.store.postgres import PgStore
        try:
            return PgStore(location.url or "", **options)
        except psycopg.Error as exc:
            raise CannotOpen(Reason.DATABASE_UNAVAILABLE, str(exc).strip()) from exc
    try:
        return Store(location.path or "", create=create, **options)
    except (apsw.BusyError, apsw.LockedError) as exc:
        raise CannotOpen(Reason.DATABASE_LOCKED, str(exc)) from exc
    except (OSError, apsw.Error) as exc:
        raise CannotOpen(Reason.DATABASE_UNAVAILABLE, str(exc)) from exc


@contextlib.contextmanager
def opened(db: str, **options: Any) -> Iterator[Database]:
    """A store that is closed on exit (CLI commands, tests)."""
    store = open_database(db, **options)
    try:
        yield store
    finally:
        store.close()
