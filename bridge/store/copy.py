"""`bridge db copy`: a whole bridge from one database into an empty one (SQLite or PostgreSQL, either direction),
verified table by table with row counts and checksums.

The source is read in one read-only snapshot. The destination is migrated to the latest schema by the normal
migrator, then filled in ONE transaction that commits only when every table checks equal (else it is rolled back,
and a SQLite file the copy created is removed). Every table, row and column is copied in primary-key order (messages
in thread and seq order), read from the databases' own catalogues, except:
- `bridge_schema`: the PostgreSQL migrator's bookkeeping; the destination's migrator keeps its own.
- DERIVED: the digests the messages insert trigger keeps (migration 0007): the destination's trigger rebuilds them
  as the messages go in, and they are then checked equal to the source's.
- RESET `wake_folded.last_rowid`: the wake fold's watermark is a rowid on SQLite and a transaction id on PostgreSQL
  (bridge/store/triggers.py), meaningless on the other engine. It starts again at 0, so the worker folds every
  message once more into `wake_addressed`: the fold only raises each row to the newest seq it sees (the copied rows
  already hold it), and `wake_marks` keep an agent from being woken twice for one message.
- ENGINE_COLUMNS: `messages.commit_xid` exists only on PostgreSQL (there it takes its default).
- KEPT_APART `signing_keys`: the signing key goes from the source's home to the destination's, wherever each store
  keeps it (`keeps_signing_key`: PostgreSQL's table, in the copy's transaction; else the file in the data directory,
  mode 0600, once the copy has committed). A destination holding a different key is refused before any row is copied.
PostgreSQL identity columns are moved past the copied ids, so later inserts do not collide (SQLite's AUTOINCREMENT
counter follows explicit ids by itself).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import apsw

from bridge.domain.location import Location, parse
from bridge.domain.vocabulary import Reason
from bridge.errors import Conflict, InvalidArgument
from bridge.store.db import connect
from bridge.store.engines import CannotOpen, open_problem, store_type
from bridge.store.keys import KeptKey
from bridge.store.migrate import latest_version, migrate, recorded_version
from bridge.store.rows import dialect, scalar, table_names

BOOKKEEPING = {"bridge_schema"}
KEPT_APART = {"signing_keys"}  # the signing key moves between its homes (`_key_plan`), not as a table
DERIVED = ("message_tallies", "event_tallies", "open_findings", "sender_marks", "addressed_marks")
RESET = {"wake_folded": {"last_rowid": 0}}
ENGINE_COLUMNS = {"messages": {"commit_xid"}}
INSERT_ORDER = {"messages": ("thread_id", "seq")}  # the digest trigger needs each thread's messages in seq order
_BATCH = 1000


@dataclass(frozen=True)
class Table:
    """A table as the copy sees it: its columns (in order), its primary key and which columns hold text."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    text: frozenset[str]


# ------------------------------------------------------------------------------------------------ catalogue
def describe(conn: Any, name: str) -> Table:
    """A table's columns and primary key, from the database's own catalogue."""
    if dialect(conn) == "postgresql":
        found = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema ="
                             " current_schema() AND table_name = ? ORDER BY ordinal_position", (name,)).fetchall()
        key = [row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = CAST(? AS regclass) AND i.indisprimary"
            " ORDER BY array_position(CAST(i.indkey AS int2[]), a.attnum)", (name,))]
        text = {column for column, kind in found if kind == "text"}
    else:
        info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
        found = [(row[1], row[2]) for row in info]
        key = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]
        text = {column for column, kind in found if kind.upper() == "TEXT"}
    columns = tuple(column for column, _ in found)
    return Table(name, columns, tuple(key) or columns, frozenset(text))


def _references(conn: Any) -> set[tuple[str, str]]:
    """(table, table it references) for every foreign key."""
    if dialect(conn) == "postgresql":
        return {(row[0], row[1]) for row in conn.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
            " AND connamespace = current_schema()::regnamespace")}
    return {(name, row[2]) for name in table_names(conn) for row in conn.execute(f'PRAGMA foreign_key_list("{name}")')}


def insert_order(conn: Any, names: Iterable[str]) -> list[str]:
    """`names` with every table after the tables it references (then by name)."""
    pending = sorted(names)
    needs = {(table, parent) for table, parent in _references(conn) if table != parent}
    ordered: list[str] = []
    while pending:
        ready = [t for t in pending if not any(table == t and parent in pending for table, parent in needs)]
        if not ready:
            raise RuntimeError(f"foreign keys form a cycle among {pending}")
        ordered += ready
        pending = [t for t in pending if t not in ready]
    return ordered


# ------------------------------------------------------------------------------------------------ connections
@contextlib.contextmanager
def _connection(location: Location, *, read_only: bool = False) -> Iterator[Any]:
    """A plain connection (no pool, no migration): PostgreSQL in autocommit, or a SQLite file (read-only, or
    created when missing); an unreachable or unopenable database raises CannotOpen."""
    if location.is_postgres:
        from bridge.store.postgres import connection  # only copies involving PostgreSQL import psycopg

        with connection(location.url or "") as conn:
            yield conn
        return
    try:
        if read_only:
            conn = apsw.Connection(str(location.path), flags=apsw.SQLITE_OPEN_READONLY)
            conn.set_busy_timeout(5000)
        else:
            conn = connect(location.path or "")
    except apsw.Error as exc:
        raise CannotOpen(Reason.DATABASE_UNAVAILABLE, str(exc)) from exc
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """One read-only transaction: every table read from one state of the source."""
    postgres = dialect(conn) == "postgresql"
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if postgres else "BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def _stream(conn: Any, sql: str) -> Iterator[tuple[Any, ...]]:
    """The rows of a query without holding them all (a server-side cursor on PostgreSQL)."""
    if dialect(conn) == "postgresql":
        with conn.raw.cursor(name="bridge_copy") as cursor:
            cursor.itersize = _BATCH
            cursor.execute(sql)
            yield from cursor
        return
    yield from conn.execute(sql)


def _insert_many(conn: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if dialect(conn) == "postgresql":
        from bridge.store.postgres import to_postgres

        with conn.raw.cursor() as cursor:
            cursor.executemany(to_postgres(sql), rows)
    else:
        conn.executemany(sql, rows)


# ------------------------------------------------------------------------------------------------ rows and checksums
def _select(conn: Any, table: Table, columns: tuple[str, ...], order: tuple[str, ...]) -> str:
    """SELECT `columns` in `order`, text compared byte by byte on both engines (SQLite's order; PostgreSQL's
    default collation depends on the locale)."""
    postgres = dialect(conn) == "postgresql"
    keys = ", ".join(f'"{c}" COLLATE "C"' if postgres and c in table.text else f'"{c}"' for c in order)
    return f'SELECT {", ".join(chr(34) + c + chr(34) for c in columns)} FROM "{table.name}" ORDER BY {keys}'


def _values(table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Rows with the RESET columns at their starting value."""
    reset = RESET.get(table, {})
    positions = [(columns.index(c), value) for c, value in reset.items() if c in columns]
    for row in rows:
        if positions:
            row = list(row)
            for position, value in positions:
                row[position] = value
        yield tuple(row)


def checksum(conn: Any, table: Table, columns: tuple[str, ...]) -> tuple[int, str]:
    """(rows, sha256) of a table: its rows in primary-key order, each the JSON list of its `columns`' values (RESET
    columns at their starting value)."""
    digest, count = hashlib.sha256(), 0
    for row in _values(table.name, columns, _stream(conn, _select(conn, table, columns, table.key))):
        digest.update(json.dumps(list(row), separators=(",", ":")).encode() + b"\n")
        count += 1
    return count, digest.hexdigest()


def compare(source: Any, destination: Any, names: Iterable[str]) -> list[dict[str, Any]]:
    """Per table: rows in source and destination and whether their checksums are equal (over the columns both
    engines have)."""
    report = []
    for name in names:
        src, dst = describe(source, name), describe(destination, name)
        columns = _shared_columns(src, dst)
        source_rows, source_sum = checksum(source, src, columns)
        destination_rows, destination_sum = checksum(destination, dst, columns)
        report.append({"table": name, "source_rows": source_rows, "destination_rows": destination_rows,
                       "checksum_equal": source_sum == destination_sum, "checksum": source_sum})
    return report


def _shared_columns(source: Table, destination: Table) -> tuple[str, ...]:
    """The destination's columns that the source has too; refuses any difference but ENGINE_COLUMNS."""
    engine_only = ENGINE_COLUMNS.get(source.name, set())
    differ = (set(source.columns) ^ set(destination.columns)) - engine_only
    if differ:
        raise Conflict(f"the schemas of table {source.name} differ (columns {sorted(differ)}): both databases must "
                       "be at the same schema version")
    return tuple(c for c in destination.columns if c in source.columns)


# ------------------------------------------------------------------------------------------------ checks
def _require_current(conn: Any, location: Location) -> None:
    version = recorded_version(conn)
    if version != latest_version():
        advice = f"run bridge db migrate --db {location} first" if version < latest_version() else \
            "copy it with the bridge version that wrote it"
        raise Conflict(f"the source {location} is at schema version {version}, not {latest_version()}: {advice}",
                       {"schema_version": version, "latest": latest_version()})


def _require_empty(conn: Any, location: Location) -> None:
    """Refuse a destination holding any row (the migrator's bookkeeping and the wake watermark aside)."""
    held = {name: scalar(conn, f'SELECT COUNT(*) FROM "{name}"')
            for name in table_names(conn) if name not in BOOKKEEPING | KEPT_APART | set(RESET)}
    held = {name: count for name, count in held.items() if count}
    if held:
        raise Conflict(f"the destination {location} is not empty ({', '.join(f'{n}: {c}' for n, c in held.items())}"
                       " rows): copy into a new file or an empty PostgreSQL database", {"rows": held})


def _identities(conn: Any, tables: Iterable[str]) -> None:
    """PostgreSQL: move each identity column's sequence past the largest copied id."""
    if dialect(conn) != "postgresql":
        return
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND is_identity = 'YES'").fetchall():
        if table in tables:
            conn.execute(f'SELECT setval(pg_get_serial_sequence(?, ?), MAX("{column}")) FROM "{table}"'
                         f' HAVING MAX("{column}") IS NOT NULL', (table, column))


# ------------------------------------------------------------------------------------------------ the copy
class KeyHome(Protocol):
    """Where a bridge keeps its signing key (PEM text): a database that keeps it (`KeptKey`), or a file."""

    def read(self) -> str | None: ...
    def keep(self, pem: str) -> str: ...


def copy_database(source: str, destination: str, key_files: tuple[KeyHome, KeyHome],
                  note: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Copy the bridge at `source` into the empty `destination` (see the module docstring); `key_files` are the
    source's and the destination's key files, used by an end whose store does not keep its key; `note` is told each
    table's progress. Returns the report (`ok`, per table rows and checksum verdicts, what became of the signing
    key); raises Conflict for a source not at the latest schema, a destination that is not empty or holds another
    signing key, CannotOpen for a database that cannot be used."""
    src_at, dst_at = parse(source), parse(destination)
    if src_at == dst_at:
        raise InvalidArgument("--from and --to name the same database")
    if (problem := open_problem(src_at, create=False) or open_problem(dst_at, create=True)) is not None:
        raise problem
    new_file = dst_at.path is not None and not dst_at.path.exists()
    if dst_at.path is not None:
        dst_at.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _connection(src_at, read_only=True) as src, _snapshot(src):
            _require_current(src, src_at)
            with _connection(dst_at) as dst:
                _require_empty(dst, dst_at)
                migrate(dst)
                source_key, destination_key = _key_home(src_at, src, key_files[0]), _key_home(dst_at, dst, key_files[1])
                pem, plan = _key_plan(source_key, destination_key)
                move_key = None if pem is None or plan != "copied" else functools.partial(destination_key.keep, pem)
                in_database = isinstance(destination_key, KeptKey)  # then the key goes in with the rows
                report = _fill(src, dst, note, move_key if in_database else None)
    except BaseException:
        if new_file:
            _remove(dst_at.path)
        raise
    if not report["ok"] and new_file:
        _remove(dst_at.path)
    if report["ok"] and move_key is not None and not in_database:
        move_key()
    return {"from": str(src_at), "to": str(dst_at), "schema_version": latest_version(), **report, "signing_key": plan}


def _fill(src: Any, dst: Any, note: Callable[[str], None], move_key: Callable[[], Any] | None) -> dict[str, Any]:
    """Insert every copied table (and the signing key, by `move_key` when given) in one destination transaction,
    verify every table, commit only when all match."""
    names = [n for n in table_names(src) if n not in BOOKKEEPING | KEPT_APART]
    missing = set(names) ^ {n for n in table_names(dst) if n not in BOOKKEEPING | KEPT_APART}
    if missing:
        raise Conflict(f"the databases' tables differ ({sorted(missing)}): both must be at the same schema version")
    copied = [n for n in insert_order(dst, names) if n not in DERIVED]
    dst.execute("BEGIN ISOLATION LEVEL SERIALIZABLE" if dialect(dst) == "postgresql" else "BEGIN IMMEDIATE")
    try:
        for name in copied:
            rows = _copy_table(src, dst, name)
            note(f"copied {name}: {rows} rows")
        _identities(dst, copied)
        if move_key is not None:
            move_key()
        tables = compare(src, dst, [*copied, *DERIVED])
        for entry in tables:
            entry["how"] = "rebuilt by the trigger" if entry["table"] in DERIVED else "copied"
            note(f"checked {entry['table']}: {entry['source_rows']} -> {entry['destination_rows']} rows, checksum "
                 + ("equal" if entry["checksum_equal"] else "DIFFERS"))
        ok = all(e["checksum_equal"] and e["source_rows"] == e["destination_rows"] for e in tables)
        dst.execute("COMMIT" if ok else "ROLLBACK")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    return {"ok": ok, "tables": tables, "differing": [e["table"] for e in tables if not e["checksum_equal"]
                                                      or e["source_rows"] != e["destination_rows"]],
            "reset": [f"{t}.{c}={v}" for t, values in RESET.items() for c, v in values.items()]}


def _copy_table(src: Any, dst: Any, name: str) -> int:
    """Replace the destination table's rows (a migration's seed rows) with the source's; the number copied."""
    source, target = describe(src, name), describe(dst, name)
    columns = _shared_columns(source, target)
    if scalar(dst, f'SELECT COUNT(*) FROM "{name}"'):
        dst.execute(f'DELETE FROM "{name}"')
    insert = (f'INSERT INTO "{name}" ({", ".join(chr(34) + c + chr(34) for c in columns)})'
              f' VALUES ({", ".join("?" for _ in columns)})')
    rows = _values(name, columns, _stream(src, _select(src, source, columns, INSERT_ORDER.get(name, source.key))))
    count = 0
    while batch := list(itertools.islice(rows, _BATCH)):
        _insert_many(dst, insert, batch)
        count += len(batch)
    return count


def _remove(path: Path | None) -> None:
    """Delete a SQLite file the copy created, with its WAL and shared-memory files."""
    if path is None:
        return
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ the signing key
def _key_home(location: Location, conn: Any, key_file: KeyHome) -> KeyHome:
    """Where the bridge at `location` keeps its signing key: its database (read and written on `conn`) when its store
    keeps it, else `key_file`."""
    return KeptKey.on(conn) if store_type(location).keeps_signing_key else key_file


def _key_plan(source: KeyHome, destination: KeyHome) -> tuple[str | None, str]:
    """(the source's PEM, what becomes of it): "copied" (the destination has none), "already there" (it has this
    one) or "none in the source"; Conflict when the destination holds a different key (tokens the source signed
    verify only where its key is)."""
    pem = source.read()
    if pem is None:
        return None, "none in the source"
    held = destination.read()
    if held is None:
        return pem, "copied"
    if held.strip() == pem.strip():
        return pem, "already there"
    raise Conflict(f"the destination holds a different signing key (in {destination}): tokens signed by the "
                   f"source's (in {source}) would not verify; move one of them aside first",
                   {"source_key": str(source), "destination_key": str(destination)})
