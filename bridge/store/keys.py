"""The bridge's signing key kept in its database (PostgreSQL: `Store.keeps_signing_key` says which stores do), as
PEM text: this layer stores it, bridge/auth reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.domain.identifiers import now_ms
from bridge.store.engines import Connection
from bridge.store.rows import scalar

LOCAL = "local"  # the key this bridge signs its tokens with


def signing_pem(conn: Connection) -> str | None:
    """The PEM of the bridge's signing key, or None when the database holds none yet."""
    return scalar(conn, "SELECT private_pem FROM signing_keys WHERE name = ?", (LOCAL,))


def keep_signing_pem(conn: Connection, pem: str, now: int) -> None:
    """Keep `pem` as the bridge's signing key unless one is kept already (two servers starting at once: the first
    insert wins, and both then read the winner)."""
    conn.execute("INSERT INTO signing_keys (name, private_pem, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                 (LOCAL, pem, now))


Run = Callable[[Callable[[Connection], Any]], Any]


@dataclass(frozen=True)
class KeptKey:
    """The signing key's home in a database that keeps it: `read` and `write` run a query function on it (a store's
    `query` and `write`, or a plain connection's transaction)."""

    run_read: Run
    run_write: Run

    @classmethod
    def on(cls, conn: Connection) -> KeptKey:
        """The home on one connection, inside whatever transaction it is in."""
        return cls(lambda fn: fn(conn), lambda fn: fn(conn))

    def __str__(self) -> str:
        return "the database"

    def read(self) -> str | None:
        """The PEM kept, or None."""
        return self.run_read(signing_pem)

    def keep(self, pem: str) -> str:
        """Keep `pem` unless a key is kept already; the PEM kept (the first of two racing servers wins)."""
        self.run_write(lambda conn: keep_signing_pem(conn, pem, now_ms()))
        return self.read() or pem
