"""Real signed tokens for set-up: what `bridge token issue` signs, with a bridge's own local key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt

from bridge.auth.keys import SigningKey
from bridge.auth.tokens import issue_token
from bridge.settings import Settings
from bridge.wiring import build

DEFAULT_TTL = 3600.0  # an hour: longer than any harness run


class Minter:
    """Signs EdDSA tokens with `key` for the issuer, audience and workspace of `settings`."""

    def __init__(self, key: SigningKey, settings: Settings):
        self.key, self.settings = key, settings

    @classmethod
    def for_db(cls, db: Path | str) -> Minter:
        """The minter of the bridge whose database is `db` (the database and its key created if absent, as the first
        `bridge serve` would; the key where that bridge keeps it: its database or the file next to it)."""
        parts = build(Settings.load({"db": str(db)}, env={}))
        try:
            return cls(parts.key, parts.bridge.settings)
        finally:
            parts.close()

    def issue(self, agent_id: str, role: str = "participant", *, session_id: str | None = None,
              ttl: float = DEFAULT_TTL, workspace: str | None = None, claims: dict[str, Any] | None = None,
              ) -> tuple[str, dict[str, Any]]:
        """(token, claims). `claims` overrides claims after signing-time defaults; a None value removes one."""
        token, base = issue_token(self.key, issuer=self.settings.issuer, audience=self.settings.audience,
                                  agent_id=agent_id, role=role, workspace_id=workspace or self.settings.workspace,
                                  session_id=session_id or f"{agent_id}-s1", ttl=ttl)
        if claims is None:
            return token, base
        merged = {k: v for k, v in {**base, **claims}.items() if v is not None}
        return jwt.encode(merged, self.key.private, algorithm="EdDSA", headers={"kid": self.key.kid}), merged

    def __call__(self, agent_id: str, role: str = "participant", **options: Any) -> str:
        """A token (see `issue`)."""
        return self.issue(agent_id, role, **options)[0]
