"""State several processes on one database share: write-quota buckets and named leases (migration 6)."""

from __future__ import annotations

import apsw

from bridge.domain.ratelimit import Bucket
from bridge.store.rows import one


def quota_bucket(conn: apsw.Connection, agent_id: str) -> Bucket | None:
    """The agent's write-quota bucket (tokens at a unix-ms time), None before its first write."""
    row = one(conn, "SELECT tokens, updated_at FROM write_quota WHERE agent_id = ?", (agent_id,))
    return None if row is None else Bucket(row["tokens"], row["updated_at"])


def save_quota_bucket(conn: apsw.Connection, agent_id: str, bucket: Bucket) -> None:
    """Store the agent's bucket (in the transaction that took its token)."""
    conn.execute("INSERT INTO write_quota (agent_id, tokens, updated_at) VALUES (?, ?, ?) ON CONFLICT (agent_id)"
                 " DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                 (agent_id, bucket.tokens, int(bucket.at)))


def take_lease(conn: apsw.Connection, name: str, holder: str, now: int, ttl_ms: int) -> int | None:
    """Take or renew the lease `name` for `holder` until `now + ttl_ms`; its fencing number, or None while another
    holder's lease runs. The fencing number grows by one whenever the lease changes hands."""
    row = one(conn, "INSERT INTO leases (name, holder, expires_at, fencing) VALUES (:name, :holder, :until, 1)"
                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
                    " fencing = leases.fencing + CASE WHEN leases.holder = excluded.holder THEN 0 ELSE 1 END"
                    " WHERE leases.holder = excluded.holder OR leases.expires_at <= :now RETURNING fencing",
              {"name": name, "holder": holder, "until": now + ttl_ms, "now": now})
    return None if row is None else int(row["fencing"])


def release_lease(conn: apsw.Connection, name: str, holder: str) -> None:
    """Give the lease up at once (a holder stopping cleanly), so another takes it without waiting for expiry."""
    conn.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder))
