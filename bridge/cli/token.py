"""`bridge token issue|revoke|jwks`: the local token issuer."""

from __future__ import annotations

import json
import os
import urllib.request

import click

from bridge.cli.common import (
    check_identifier,
    db_options,
    db_source,
    load_settings,
    opened,
    operator_call,
    token_lifetime,
)
from bridge.cli.options import FullHelpGroup
from bridge.cli.output import emit, fail
from bridge.domain.vocabulary import TOKEN_ROLES, Reason
from bridge.errors import Conflict, InvalidArgument, Unavailable
from bridge.services import tokens as token_service
from bridge.settings import Settings
from bridge.wiring import Parts, signing_key


@click.group(cls=FullHelpGroup)
def token() -> None:
    """Issue, revoke and publish the keys of bearer tokens."""


@token.command("issue")
@click.option("--agent-id", required=True, help="The agent's stable identity.")
@click.option("--role", required=True, type=click.Choice(TOKEN_ROLES), help="participant, coordinator or auditor.")
@click.option("--session-id", default=None, help="Session id claim (default: generated).")
@click.option("--ttl", help="Lifetime, e.g. 30m, 8h (default: BRIDGE_TOKEN_TTL; at most the max TTL).")
@click.option("--url", default=None,
              help="Refuse unless the bridge serving at this URL (e.g. http://127.0.0.1:8765) holds this database's "
                   "signing key, so the token cannot be refused as 'not signed by a known key' [env BRIDGE_URL].")
@db_options
def issue(agent_id: str, role: str, session_id: str | None, ttl: str | None, url: str | None, db: str | None,
          workspace: str | None, as_json: bool) -> None:
    """Print a signed token (only the token on stdout; --json adds the claims); stderr names the database used."""
    settings = load_settings(db=db, workspace=workspace)
    check_identifier("agent-id", agent_id, as_json)
    check_identifier("session-id", session_id, as_json)
    lifetime = token_lifetime(ttl, settings, as_json)
    url = url or os.environ.get("BRIDGE_URL") or None
    with opened(settings, as_json) as parts:
        if url is not None:
            check_server_holds_key(url, parts, settings, as_json)
        signed, claims = token_service.issue(parts.bridge, parts.key, agent_id=agent_id, role=role,
                                             session_id=session_id, ttl=lifetime)
    if as_json:
        emit({"token": signed, "claims": claims, "database": str(settings.location), "kid": parts.key.kid}, True)
    else:
        click.echo(signed)
        click.echo(f"signed with key {parts.key.kid} of the database {settings.location} ({db_source()})", err=True)


def check_server_holds_key(url: str, parts: Parts, settings: Settings, as_json: bool) -> None:
    """Exit unless the bridge at `url` verifies with this database's signing key (nothing is created or minted)."""
    local = signing_key(parts.bridge.store, parts.data_dir, create=False)
    held = _server_key_ids(url, as_json)
    if local is None or local.kid not in held:
        mine = "no signing key" if local is None else f"the signing key {local.kid}"
        fail(Conflict(f"the bridge at {url} does not hold {mine} of the database {settings.location} ({db_source()})"
                      f"; it verifies with {sorted(held) or 'no local key'}: a token minted here would be refused. "
                      "Give --db the database that server runs on (its start-up line names it)",
                      {"reason": Reason.KEY_NOT_HELD, "database": str(settings.location), "url": url,
                       "kid": None if local is None else local.kid, "server_kids": sorted(held)}), as_json)


def _server_key_ids(url: str, as_json: bool) -> set[str]:
    """The key ids the bridge at `url` publishes at /.well-known/jwks.json; exit 4 if it cannot be asked."""
    address = url.rstrip("/") + "/.well-known/jwks.json"
    if not address.startswith(("http://", "https://")):
        fail(InvalidArgument(f"--url must start with http:// or https://, not {url!r}"), as_json)
    try:
        with urllib.request.urlopen(address, timeout=10) as reply:
            keys = json.loads(reply.read(65536))["keys"]
        return {key["kid"] for key in keys if isinstance(key, dict) and isinstance(key.get("kid"), str)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(Unavailable(f"cannot read the signing keys of the bridge at {url} ({address}): {exc}",
                         {"reason": Reason.SERVER_UNREACHABLE, "url": url}), as_json)
    raise AssertionError("unreachable")


@token.command("revoke")
@click.option("--jti", default=None, help="Revoke one token by its jti.")
@click.option("--session-id", default=None, help="Revoke every token of a session.")
@click.option("--agent-id", default=None, help="Revoke every token of an agent issued before now.")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.option("--actor", default=None, help="Operator identity (default human:<os user>).")
@db_options
def revoke(jti: str | None, session_id: str | None, agent_id: str | None, reason: str, actor: str | None,
           db: str | None, workspace: str | None, as_json: bool) -> None:
    """Revoke tokens by jti, session or agent; effective on the next request in every process."""
    chosen = [(k, v) for k, v in (("jti", jti), ("session", session_id), ("agent", agent_id)) if v]
    if len(chosen) != 1:
        fail(InvalidArgument("give exactly one of --jti, --session-id, --agent-id"), as_json)
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        kind, value = chosen[0]
        result = token_service.revoke(parts.bridge, operator_call(settings, actor), kind, value, reason)
    emit(result, as_json)


@token.command("jwks")
@db_options
def jwks(db: str | None, workspace: str | None, as_json: bool) -> None:
    """Print the public keys (JWKS) other verifiers need."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        click.echo(json.dumps({"keys": [parts.key.public_jwk()]}, indent=2))
