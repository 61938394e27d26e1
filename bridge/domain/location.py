"""Where the bridge's data lives: a SQLite file or a PostgreSQL database, read from the `--db` / BRIDGE_DB value.

A plain path, or `sqlite:///relative.db` / `sqlite:////absolute.db`, is a SQLite file; a `postgresql://` (or
`postgres://`) URL is a PostgreSQL database. This is the one place that tells them apart."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Location:
    """A parsed database location: its engine, and the file (SQLite) or the connection URL (PostgreSQL)."""

    engine: str
    path: Path | None = None  # SQLite: the absolute file path
    url: str | None = None    # PostgreSQL: the libpq connection URL

    @property
    def is_postgres(self) -> bool:
        return self.engine == POSTGRESQL

    @property
    def name(self) -> str:
        """A file-name-safe name of the database: the file's stem, or `<host>-<port>-<database>`."""
        if self.path is not None:
            return self.path.stem
        parts = urlsplit(self.url or "")
        found = f"{parts.hostname or 'localhost'}-{parts.port or 5432}-{parts.path.lstrip('/') or 'postgres'}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", found)

    def __str__(self) -> str:
        """How the location is shown to people: the file, or the URL without its password."""
        return str(self.path) if self.path is not None else redacted(self.url or "")


def parse(db: str) -> Location:
    """The location a `--db` value names (a path, `sqlite:///...` or `postgresql://...`)."""
    scheme = db.split("://", 1)[0].lower() if "://" in db else ""
    if scheme in _POSTGRES_SCHEMES:
        return Location(POSTGRESQL, url="postgresql://" + db.split("://", 1)[1])
    if scheme == SQLITE:
        db = db.split("://", 1)[1][1:]  # sqlite:///x -> x (relative), sqlite:////x -> /x (absolute)
    elif scheme:
        raise ValueError(f"unknown database scheme {scheme!r}: use a file path, sqlite:///PATH or postgresql://...")
    return Location(SQLITE, path=Path(db).expanduser().resolve())


def redacted(url: str) -> str:
    """The URL with its password replaced by `***` (for logs, errors and reports)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
