"""Assemble the parts of a bridge process from its settings: store, services, token issuer and verifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.auth.keys import KeyFile, SigningKey, from_pem, new_pem
from bridge.auth.tokens import TokenVerifier
from bridge.services.core import Bridge
from bridge.settings import Settings
from bridge.store import control as control_store
from bridge.store.engines import Database, open_database
from bridge.store.keys import KeptKey


def key_home(store: Database, data_dir: Path) -> KeptKey | KeyFile:
    """Where the bridge on `store` keeps its signing key: in the database when the store keeps it (PostgreSQL, shared
    by every host), else the file in `data_dir` (SQLite)."""
    return KeptKey(store.query, store.write) if store.keeps_signing_key else KeyFile(data_dir)


def signing_key(store: Database, data_dir: Path, *, create: bool) -> SigningKey | None:
    """The bridge's signing key from its home (`key_home`); with `create`, a new one kept there when it has none
    (None without `create`)."""
    home = key_home(store, data_dir)
    pem = home.read()
    if pem is None and create:
        pem = home.keep(new_pem())
    return None if pem is None else from_pem(pem)


@dataclass
class Parts:
    """A bridge with everything the edges (HTTP, CLI, worker) need."""

    bridge: Bridge
    verifier: TokenVerifier
    data_dir: Path
    _key: SigningKey | None = None

    @property
    def key(self) -> SigningKey:
        """The bridge's signing key, created (see `signing_key`) the first time one is needed."""
        if self._key is None:
            self._key = signing_key(self.bridge.store, self.data_dir, create=True)
        return self._key

    def close(self) -> None:
        self.bridge.store.close()


def build(settings: Settings, *, create: bool = True) -> Parts:
    """Open (and migrate) the database and build the verifier.

    `create=True` (the server, migrations, tests) creates a missing database file, the data directory and the
    signing key at once (in its home: `key_home`).
    `create=False` opens an existing database only (`CannotOpen` if it is missing, nothing created) and
    creates the signing key only when a command first needs one (`Parts.key`); the verifier trusts the key that
    exists."""
    store = open_database(settings.db, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout,
                          write_batch=settings.write_batch, commit_poll=settings.commit_poll,
                          probe_interval=settings.storage_probe_interval, create=create)
    try:
        if create:  # the data directory holds agent folders (and, on SQLite, the key file): /ready checks it
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = signing_key(store, settings.data_dir, create=create)
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
