"""Assemble the parts of a bridge process from its settings: store, services, token issuer and verifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.auth.keys import SigningKey, load_key, load_or_create
from bridge.auth.tokens import TokenVerifier
from bridge.services.core import Bridge
from bridge.settings import Settings
from bridge.store import control as control_store
from bridge.store.engines import open_database


@dataclass
class Parts:
    """A bridge with everything the edges (HTTP, CLI, worker) need."""

    bridge: Bridge
    verifier: TokenVerifier
    data_dir: Path
    _key: SigningKey | None = None

    @property
    def key(self) -> SigningKey:
        """The local signing key, created (mode 0600, next to the database) the first time one is needed."""
        if self._key is None:
            self._key = load_or_create(self.data_dir)
        return self._key

    def close(self) -> None:
        self.bridge.store.close()


def build(settings: Settings, *, create: bool = True) -> Parts:
    """Open (and migrate) the database and build the verifier.

    `create=True` (the server, migrations, tests) creates a missing database file and the signing key at once.
    `create=False` opens an existing database only (`apsw.CantOpenError` if it is missing, nothing created) and
    creates the signing key only when a command first needs one (`Parts.key`); the verifier trusts the key that
    exists."""
    store = open_database(settings.db, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout,
                  write_batch=settings.write_batch, commit_poll=settings.commit_poll,
                  probe_interval=settings.storage_probe_interval, create=create)
    try:
        key = load_or_create(settings.data_dir) if create else load_key(settings.data_dir)
    except BaseException:
        store.close()
        raise
    bridge = Bridge(settings=settings, store=store)

    def revoked(claims: dict[str, Any]) -> str | None:
        return store.query(lambda conn: control_store.revocation_reason(
            conn, jti=claims["jti"], session_id=claims["session_id"], agent_id=claims["agent_id"],
            issued_at_ms=claims["iat"] * 1000))

    verifier = TokenVerifier(issuer=settings.issuer, audience=settings.audience, leeway=settings.token_leeway,
                             max_ttl=settings.token_max_ttl, revoked=revoked, local_key=key,
                             jwks_file=settings.jwks_file, jwks_url=settings.jwks_url,
                             jwks_ca_file=settings.jwks_ca_file)
    return Parts(bridge=bridge, verifier=verifier, data_dir=settings.data_dir, _key=key)
