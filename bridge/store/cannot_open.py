"""The one error for a database that cannot be used at all (missing, not creatable, locked, unreachable)."""

from __future__ import annotations

from bridge.domain.vocabulary import Reason


class CannotOpen(Exception):
    """The database cannot be used: `reason` (database_missing, database_not_creatable, database_locked,
    database_unavailable) and what the engine said."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(detail)
        self.reason = reason
