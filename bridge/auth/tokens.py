"""Issue and verify bearer JWTs (PyJWT): explicit algorithms, typed claims, lifetime cap, revocation."""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from bridge.auth.keys import SigningKey
from bridge.domain.authz import Principal
from bridge.domain.identifiers import is_identifier
from bridge.domain.vocabulary import TOKEN_ROLES, Reason
from bridge.errors import Unauthorized
from bridge.settings import DEFAULTS

LOCAL_ALGORITHMS = ["EdDSA"]
EXTERNAL_ALGORITHMS = ["RS256", "ES256", "EdDSA"]
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
REQUIRED_CLAIMS = ("agent_id", "workspace_id", "role", "session_id", "iat", "exp", "jti", "iss", "aud")
IDENTIFIER_CLAIMS = ("agent_id", "workspace_id", "session_id")
_CACHE_SIZE = 4096


def issue_token(key: SigningKey, *, issuer: str, audience: str, agent_id: str, role: str, workspace_id: str,
                session_id: str | None = None, ttl: float = DEFAULTS.token_ttl,
                now: float | None = None) -> tuple[str, dict]:
    """Sign a token for an agent with the local key; returns (token, claims)."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": issuer, "aud": audience, "agent_id": agent_id, "workspace_id": workspace_id, "role": role,
        "session_id": session_id or f"{agent_id}-{secrets.token_hex(4)}", "iat": issued, "exp": issued + int(ttl),
        "jti": secrets.token_urlsafe(16), "sub": agent_id,
    }
    return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid}), claims


# Why PyJWT refused a token -> (reason, message); the first matching class wins, the catch-all last.
_DECODE_FAILURES: tuple[tuple[type[jwt.InvalidTokenError], Reason, str], ...] = (
    (jwt.ExpiredSignatureError, Reason.EXPIRED, "token has expired"),
    (jwt.InvalidAudienceError, Reason.AUDIENCE, "token audience does not match"),
    (jwt.InvalidIssuerError, Reason.ISSUER, "token issuer does not match"),
    (jwt.MissingRequiredClaimError, Reason.MISSING_CLAIM, "token lacks the {claim!r} claim"),
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE, "token signature is invalid"),
    (jwt.ImmatureSignatureError, Reason.NOT_YET_VALID, "token is not valid yet"),
    (jwt.InvalidTokenError, Reason.INVALID, "token is invalid"),
)


def _fail(reason: Reason, message: str) -> Unauthorized:
    return Unauthorized(message, {"reason": reason})


class TokenVerifier:
    """Verify bearer tokens against the local key or a JWKS file; revocation is checked on every call."""

    def __init__(self, *, issuer: str, audience: str, leeway: float, max_ttl: float,
                 revoked: Callable[[dict[str, Any]], str | None], local_key: SigningKey | None = None,
                 jwks_file: str | None = None, jwks_url: str | None = None, jwks_ca_file: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.issuer, self.audience = issuer, audience
        self.leeway, self.max_ttl = leeway, max_ttl
        self.revoked = revoked
        self.clock = clock
        self._keys: dict[str, Any] = {}
        self.local_key = local_key  # published at GET /.well-known/jwks.json
        if local_key is not None:
            self._keys[local_key.kid] = (local_key.public, LOCAL_ALGORITHMS)
        if jwks_file is not None:
            jwk_set = jwt.PyJWKSet.from_dict(json.loads(Path(jwks_file).read_text(encoding="utf-8")))
            for jwk in jwk_set.keys:
                algorithm = jwk.algorithm_name
                if algorithm not in EXTERNAL_ALGORITHMS or jwk.key_id is None:
                    continue
                self._keys[jwk.key_id] = (jwk.key, [algorithm])
        # Remote JWKS: PyJWKClient caches the set (5 min) and throttles refetches on unknown kids (cooldown 30 s).
        self._jwks_client = None if jwks_url is None else jwt.PyJWKClient(
            jwks_url, lifespan=300, cooldown_duration=30, timeout=5,
            ssl_context=ssl.create_default_context(cafile=jwks_ca_file) if jwks_ca_file else None)
        self._cache: dict[str, tuple[dict[str, Any], Principal]] = {}  # verified token -> its claims and principal
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid, unexpired, unrevoked token; raise UNAUTHORIZED otherwise."""
        cached = self._cache.get(token)
        if cached is None:
            claims = self._decode(token)
            cached = claims, Principal(agent_id=claims["agent_id"], workspace_id=claims["workspace_id"],
                                       role=claims["role"], session_id=claims["session_id"], jti=claims["jti"])
            with self._lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.clear()
                self._cache[token] = cached
        elif cached[0]["exp"] + self.leeway < self.clock():
            raise _fail(Reason.EXPIRED, "token has expired")
        claims, principal = cached
        reason = self.revoked(claims)
        if reason is not None:
            raise _fail(Reason.REVOKED, f"token revoked (by {reason})")
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:  # DecodeError, or a header PyJWT refuses (a non-string kid)
            raise _fail(Reason.MALFORMED, "token is not a well-formed JWT") from exc
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise _fail(Reason.FORBIDDEN_HEADER, f"token header {name!r} is not accepted")
        kid = header.get("kid")
        entry = self._keys.get(kid) if isinstance(kid, str) else None
        if entry is None and isinstance(kid, str) and self._jwks_client is not None:
            entry = self._remote_key(kid)
        if entry is None:
            raise _fail(Reason.UNKNOWN_KEY, "token was not signed by a known key")
        key, algorithms = entry
        if header.get("alg") not in algorithms:
            raise _fail(Reason.ALGORITHM, "token algorithm is not allowed")
        try:
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer, leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.InvalidTokenError as exc:
            reason, message = next((r, m) for kind, r, m in _DECODE_FAILURES if isinstance(exc, kind))
            raise _fail(reason, message.format(claim=getattr(exc, "claim", None))) from exc
        self._check_types(claims)
        return claims

    def _remote_key(self, kid: str) -> tuple[Any, list[str]] | None:
        try:
            jwk = self._jwks_client.get_signing_key(kid)  # type: ignore[union-attr]
        except jwt.PyJWKClientError:
            return None
        if jwk.algorithm_name not in EXTERNAL_ALGORITHMS:
            return None
        return jwk.key, [jwk.algorithm_name]

    def _check_types(self, claims: dict[str, Any]) -> None:
        for name in IDENTIFIER_CLAIMS:
            if not is_identifier(claims.get(name)):
                raise _fail(Reason.ILL_TYPED_CLAIM, f"claim {name!r} must be an identifier string")
        if claims.get("role") not in TOKEN_ROLES:
            raise _fail(Reason.ILL_TYPED_CLAIM, "claim 'role' must be participant, coordinator or auditor")
        for name in ("iat", "exp"):
            value = claims.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise _fail(Reason.ILL_TYPED_CLAIM, f"claim {name!r} must be an integer")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise _fail(Reason.ILL_TYPED_CLAIM, "claim 'jti' must be a non-empty string")
        if claims["exp"] - claims["iat"] > self.max_ttl:
            raise _fail(Reason.LIFETIME, "token lifetime exceeds the configured maximum")
        if claims["iat"] > self.clock() + self.leeway:
            raise _fail(Reason.NOT_YET_VALID, "token was issued in the future")
