"""Assemble the parts of a bridge process from its settings: store, services, token issuer and verifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.auth.keys import SigningKey, load_or_create
from bridge.auth.tokens import TokenVerifier
from bridge.services.core import Bridge
from bridge.settings import Settings
from bridge.store import Store
from bridge.store import control as control_store


@dataclass
class Parts:
    """A bridge with everything the edges (HTTP, CLI, worker) need."""

    bridge: Bridge
    key: SigningKey
    verifier: TokenVerifier

    def close(self) -> None:
        self.bridge.store.close()


def build(settings: Settings) -> Parts:
    """Open (and migrate) the database, load or create the signing key, build the verifier."""
    store = Store(settings.db_path, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout)
    key = load_or_create(settings.data_dir)
    bridge = Bridge(settings=settings, store=store)

    def revoked(claims: dict[str, Any]) -> str | None:
        return store.query(lambda conn: control_store.revocation_reason(
            conn, jti=claims["jti"], session_id=claims["session_id"], agent_id=claims["agent_id"],
            issued_at_ms=claims["iat"] * 1000))

    verifier = TokenVerifier(issuer=settings.issuer, audience=settings.audience, leeway=settings.token_leeway,
                             max_ttl=settings.token_max_ttl, revoked=revoked, local_key=key,
                             jwks_file=settings.jwks_file, jwks_url=settings.jwks_url,
                             jwks_ca_file=settings.jwks_ca_file)
    return Parts(bridge=bridge, key=key, verifier=verifier)
