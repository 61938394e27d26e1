"""Identity over real HTTP (SPEC §2-§3): every forged, wrong or revoked token is refused in the JSON envelope with
`WWW-Authenticate: Bearer`, audited (rate-limited) and counted; an external JWKS issuer works."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from envelope import assert_envelope

from bridge.auth.tokens import REQUIRED_CLAIMS
from bridge.cli.main import cli
from bridge.domain.authz import Principal
from bridge.services import tokens as token_service
from bridge.services.core import Call
from bridge.testing.client import metric
from bridge.testing.database import audit_rows
from bridge.testing.tokens import Minter

OTHER_ED25519 = Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ----------------------------------------------------------------------------------------------------- helpers
def assert_unauthorized(reply: Any, reason: str) -> dict[str, Any]:
    error = assert_envelope(reply, 401, "UNAUTHORIZED")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer"), reply.headers
    assert error["details"]["reason"] == reason, error
    assert "Traceback" not in json.dumps(reply.body)
    return error


def auth_failures(api: Any, reason: str) -> float:
    """`bridge_auth_failures_total{reason=...}` from GET /metrics (0 when absent)."""
    reply = api.raw("GET", "/metrics")
    assert reply.status == 200
    return metric(reply.body, "bridge_auth_failures_total", reason=reason) or 0.0


def list_threads(api: Any, authorization: str | None, request_id: str | None = None) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    if request_id is not None:
        headers["x-request-id"] = request_id
    return api.raw("POST", "/v1/mcp/list_threads", json={}, headers=headers)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An `alg: none` JWT (empty signature)."""
    return f"{segment(header)}.{segment(claims)}."


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT built by hand (PyJWT refuses to HMAC with a PEM key, an attacker does not)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class Forge:
    """Builds tokens against the bridge's settings and local key; claims override or drop (None) base claims."""

    def __init__(self, parts: Any):
        self.parts = parts
        self.settings = parts.bridge.settings
        self.kid = parts.key.kid

    def claims(self, who: str = "mallory", as_role: str = "participant", **changes: Any) -> dict[str, Any]:
        return Minter(self.parts.key, self.settings).issue(who, as_role, claims=changes)[1]

    def sign(self, claims: dict[str, Any] | None = None, *, key: Any = None, algorithm: str = "EdDSA",
             headers: dict[str, Any] | None = None) -> str:
        header = {"kid": self.kid, **(headers or {})}
        header = {k: v for k, v in header.items() if v is not None}
        return jwt.encode(claims if claims is not None else self.claims(), key or self.parts.key.private,
                          algorithm=algorithm, headers=header)

    def bearer(self, **changes: Any) -> str:
        return f"Bearer {self.sign(self.claims(**changes))}"

    def header(self, alg: str = "EdDSA", **extra: Any) -> dict[str, Any]:
        return {"alg": alg, "typ": "JWT", "kid": self.kid, **extra}

    def public_raw(self) -> bytes:
        return self.parts.key.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def public_pem(self) -> bytes:
        return self.parts.key.public.public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def _swapped(f: Forge) -> str:
    victim = f.sign(f.claims("alice"))
    evil = f.sign(f.claims("mallory", "coordinator"))
    head, _, sig = victim.split(".")
    return f"Bearer {head}.{evil.split('.')[1]}.{sig}"


def _now() -> int:
    return int(time.time())


# (case id, Authorization header value builder (None = no header), expected details.reason)
REFUSALS: list[tuple[str, Callable[[Forge], str | None], str]] = [
    ("no_header", lambda f: None, "missing_credentials"),
    ("basic_scheme", lambda f: "Basic " + base64.b64encode(b"alice:secret").decode(), "missing_credentials"),
    ("token_scheme_with_valid_jwt", lambda f: "Token " + f.sign(), "missing_credentials"),
    ("jwt_without_scheme", lambda f: f.sign(), "missing_credentials"),
    ("bearer_without_token", lambda f: "Bearer", "missing_credentials"),
    ("garbage", lambda f: "Bearer not-a-jwt", "malformed"),
    ("garbage_three_parts", lambda f: "Bearer aaa.bbb.ccc", "malformed"),
    ("other_key_same_kid", lambda f: "Bearer " + f.sign(key=OTHER_ED25519), "bad_signature"),
    ("truncated_signature", lambda f: "Bearer " + f.sign()[:-6], "bad_signature"),
    ("swapped_payload", _swapped, "bad_signature"),
    ("alg_none", lambda f: "Bearer " + unsigned(f.header("none"), f.claims()), "algorithm"),
    ("alg_none_no_kid", lambda f: "Bearer " + unsigned({"alg": "none", "typ": "JWT"}, f.claims()), "unknown_key"),
    ("hs256_with_raw_public_key", lambda f: "Bearer " + hmac_signed(f.header("HS256"), f.claims(), f.public_raw()),
     "algorithm"),
    ("hs256_with_pem_public_key", lambda f: "Bearer " + hmac_signed(f.header("HS256"), f.claims(), f.public_pem()),
     "algorithm"),
    ("rs256_claiming_local_kid", lambda f: "Bearer " + f.sign(key=RSA_KEY, algorithm="RS256"), "algorithm"),
    ("expired_beyond_leeway", lambda f: f.bearer(iat=_now() - 3600, exp=_now() - 30), "expired"),
    ("lifetime_over_24h", lambda f: f.bearer(iat=_now(), exp=_now() + 24 * 3600 + 60), "lifetime"),
    ("issued_in_future", lambda f: f.bearer(iat=_now() + 600, exp=_now() + 1200), "not_yet_valid"),
    ("nbf_in_future", lambda f: f.bearer(nbf=_now() + 600), "not_yet_valid"),
    *[(f"missing_{claim}", (lambda c: lambda f: f.bearer(**{c: None}))(claim), "missing_claim")
      for claim in REQUIRED_CLAIMS],
    ("exp_numeric_string", lambda f: f.bearer(exp=str(_now() + 3600)), "ill_typed_claim"),
    ("iat_numeric_string", lambda f: f.bearer(iat=str(_now())), "ill_typed_claim"),
    ("exp_float", lambda f: f.bearer(exp=_now() + 3600.5), "ill_typed_claim"),
    ("iat_bool", lambda f: f.bearer(iat=True), "ill_typed_claim"),
    ("agent_id_int", lambda f: f.bearer(agent_id=42), "ill_typed_claim"),
    ("agent_id_bad_syntax", lambda f: f.bearer(agent_id="bad agent!"), "ill_typed_claim"),
    ("agent_id_empty", lambda f: f.bearer(agent_id=""), "ill_typed_claim"),
    ("agent_id_too_long", lambda f: f.bearer(agent_id="a" * 129), "ill_typed_claim"),
    ("session_id_list", lambda f: f.bearer(session_id=["s1"]), "ill_typed_claim"),
    ("workspace_id_int", lambda f: f.bearer(workspace_id=7), "ill_typed_claim"),
    ("role_admin", lambda f: f.bearer(role="admin"), "ill_typed_claim"),
    ("role_operator", lambda f: f.bearer(role="operator"), "ill_typed_claim"),
    ("jti_int", lambda f: f.bearer(jti=123), "invalid"),  # PyJWT's own type check
    ("sub_int", lambda f: f.bearer(sub=123), "invalid"),
    ("jti_empty", lambda f: f.bearer(jti=""), "ill_typed_claim"),
    ("wrong_issuer", lambda f: f.bearer(iss="https://evil.example"), "issuer"),
    ("wrong_audience", lambda f: f.bearer(aud="someone-else"), "audience"),
    ("wrong_audience_list", lambda f: f.bearer(aud=["someone-else"]), "audience"),
    ("jku_header", lambda f: "Bearer " + f.sign(headers={"jku": "https://evil.example/jwks.json"}),
     "forbidden_header"),
    ("x5u_header", lambda f: "Bearer " + f.sign(headers={"x5u": "https://evil.example/cert.pem"}),
     "forbidden_header"),
    ("jwk_header", lambda f: "Bearer " + f.sign(key=OTHER_ED25519, headers={"jwk": {
        "kty": "OKP", "crv": "Ed25519", "x": b64(OTHER_ED25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))}}), "forbidden_header"),
    ("unknown_kid", lambda f: "Bearer " + f.sign(headers={"kid": "no-such-key"}), "unknown_key"),
    ("kid_not_a_string", lambda f: "Bearer " + unsigned(f.header(kid=5), f.claims()) + "c2ln", "malformed"),
    ("header_not_an_object", lambda f: "Bearer " + segment(["EdDSA"]) + "." + segment(f.claims()) + ".c2ln",
     "malformed"),
    ("no_kid", lambda f: "Bearer " + f.sign(headers={"kid": None}), "unknown_key"),
]


@pytest.fixture
def forge(parts) -> Forge:
    return Forge(parts)


# ----------------------------------------------------------------------------------------------------- tests
def test_valid_token_is_accepted(api, forge):
    """The control: a well-formed token (also with a lower-case scheme) passes, so refusals below mean something."""
    assert list_threads(api, forge.bearer()).status == 200
    assert list_threads(api, "bearer " + forge.sign()).status == 200
    assert list_threads(api, forge.bearer(exp=_now() - 1)).status == 200  # within the 5 s leeway


@pytest.mark.parametrize(("build", "reason"), [(b, r) for _, b, r in REFUSALS], ids=[i for i, _, _ in REFUSALS])
def test_refused_token(api, live_server, forge, build, reason):
    authorization = build(forge)
    before = auth_failures(api, reason)
    reply = list_threads(api, authorization, request_id="auth-refusal-1")
    error = assert_unauthorized(reply, reason)
    assert reply.headers["x-request-id"] == "auth-refusal-1"
    assert error["details"] == {"reason": reason}  # nothing about the key or claims leaks
    after = auth_failures(api, reason)
    assert after == before + 1, (before, after)
    events = audit_rows(live_server.parts, "request_id = ?", ("auth-refusal-1",))
    assert len(events) == 1, events
    event = events[0]
    assert (event["outcome"], event["reason"], event["operation"]) == ("refused", "UNAUTHORIZED", "list_threads")
    assert event["actor"] == "anonymous"
    assert event["details"]["reason"] == reason


def test_workspace_mismatch(api, live_server, make_token):
    before = auth_failures(api, "workspace_mismatch")
    foreign = make_token("alice", "coordinator", workspace="other-ws")
    reply = list_threads(api, f"Bearer {foreign}", request_id="ws-mismatch-1")
    error = assert_envelope(reply, 403, "WORKSPACE_MISMATCH")
    assert error["details"]["token_workspace"] == "other-ws"
    assert auth_failures(api, "workspace_mismatch") == before + 1
    events = audit_rows(live_server.parts, "request_id = ?", ("ws-mismatch-1",))
    assert [(e["actor"], e["outcome"], e["reason"]) for e in events] == [("alice", "refused", "WORKSPACE_MISMATCH")]


def test_workspace_hint_mismatch(api, live_server, make_token):
    token = make_token("alice", "coordinator")
    reply = api.raw("POST", "/v1/mcp/list_threads", json={"workspace_id": "other-ws"},
                    headers={"Authorization": f"Bearer {token}", "x-request-id": "ws-hint-1"})
    assert_envelope(reply, 403, "WORKSPACE_MISMATCH")
    events = audit_rows(live_server.parts, "request_id = ?", ("ws-hint-1",))
    assert [(e["actor"], e["reason"]) for e in events] == [("alice", "WORKSPACE_MISMATCH")]


def test_refusal_audit_is_rate_limited(api, live_server):
    before = len(audit_rows(live_server.parts, "outcome = 'refused'"))
    metric_before = auth_failures(api, "malformed")
    started = time.monotonic()
    for _ in range(200):
        assert_unauthorized(list_threads(api, "Bearer not-a-jwt"), "malformed")
    elapsed = time.monotonic() - started
    written = len(audit_rows(live_server.parts, "outcome = 'refused'")) - before
    # a burst of 20, then 60 per minute: bounded, whatever the flood
    assert 20 <= written <= 20 + math.ceil(elapsed) + 1, (written, elapsed)
    assert auth_failures(api, "malformed") == metric_before + 200  # every failure is still counted


def _operator() -> Call:
    return Call(Principal(agent_id="human:tester", workspace_id="default", role="operator", session_id="cli"))


def _revoke_with_service(parts: Any, kind: str, value: str) -> None:
    result = token_service.revoke(parts.bridge, _operator(), kind, value, "test revocation")
    assert result["revoked"] is True


def _revoke_with_cli(parts: Any, kind: str, value: str) -> None:
    option = {"jti": "--jti", "session": "--session-id", "agent": "--agent-id"}[kind]
    result = CliRunner().invoke(cli, ["token", "revoke", option, value, "--reason", "test revocation",
                                      "--actor", "human:tester", "--db", parts.bridge.settings.db])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("revoke", [_revoke_with_service, _revoke_with_cli], ids=["service", "cli"])
@pytest.mark.parametrize("kind", ["jti", "session", "agent"])
def test_revocation_takes_effect_on_the_next_request(api, live_server, make_token, kind, revoke):
    victim = make_token("victim", session_id="victim-s1")
    same_session = make_token("victim", session_id="victim-s1")
    other_session = make_token("victim", session_id="victim-s2")
    bystander = make_token("bystander", session_id="bystander-s1")
    tokens = (victim, same_session, other_session, bystander)
    for _ in range(2):  # the second round is served from the verifier's cache
        for token in tokens:
            assert list_threads(api, f"Bearer {token}").status == 200
    claims = jwt.decode(victim, options={"verify_signature": False})
    value = {"jti": claims["jti"], "session": "victim-s1", "agent": "victim"}[kind]
    revoke(live_server.parts, kind, value)

    error = assert_unauthorized(list_threads(api, f"Bearer {victim}"), "revoked")
    assert kind in error["message"]
    expect_refused = {"jti": (victim,), "session": (victim, same_session),
                      "agent": (victim, same_session, other_session)}[kind]
    for token in tokens:
        reply = list_threads(api, f"Bearer {token}")
        if token in expect_refused:
            assert_unauthorized(reply, "revoked")
        else:
            assert reply.status == 200, reply.body
    assert auth_failures(api, "revoked") >= 2
    revocations = audit_rows(live_server.parts, "operation = 'token_revoke'")
    assert [(e["actor"], e["outcome"]) for e in revocations] == [("human:tester", "ok")]
    assert revocations[0]["details"] == {"kind": kind, "value": value}


def test_agent_revocation_spares_tokens_issued_later(api, live_server, make_token):
    old = make_token("victim")
    _revoke_with_service(live_server.parts, "agent", "victim")
    assert_unauthorized(list_threads(api, f"Bearer {old}"), "revoked")
    time.sleep(1.05 - time.time() % 1)  # `iat` has whole seconds: the next second is surely after the cut-off
    fresh = make_token("victim")
    assert list_threads(api, f"Bearer {fresh}").status == 200


class TestCachedTokenExpires:
    """A token verified once (and cached) is still refused once it expires."""

    @pytest.fixture
    def parts(self, make_parts):
        return make_parts(token_leeway=0)

    def test_cached_token_expires(self, api, forge):
        now = _now()
        authorization = forge.bearer(iat=now, exp=now + 2)
        assert list_threads(api, authorization).status == 200
        time.sleep(max(0.0, now + 2.1 - time.time()))
        assert_unauthorized(list_threads(api, authorization), "expired")


# ----------------------------------------------------------------------------------------------- external issuer
def _public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    public = private.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


class TestExternalIssuer:
    """`jwks_file` mode: the configured keys verify (with their own algorithm only); anything else is refused."""

    @pytest.fixture
    def idp(self, tmp_path) -> dict[str, Any]:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        secret = b"an-hmac-secret-that-must-never-be-trusted"
        jwks = {"keys": [
            _public_jwk(RSA_KEY, "idp-rsa-1", "RS256"),
            _public_jwk(ec_key, "idp-ec-1", "ES256"),
            {"kty": "oct", "k": b64(secret), "kid": "idp-hmac", "alg": "HS256"},
        ]}
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(jwks), encoding="utf-8")
        return {"path": path, "rsa": RSA_KEY, "ec": ec_key, "secret": secret}

    @pytest.fixture
    def parts(self, make_parts, idp):
        return make_parts(jwks_file=str(idp["path"]))

    def test_configured_keys_verify(self, api, forge, idp):
        rs = forge.sign(forge.claims("ext-agent"), key=idp["rsa"], algorithm="RS256", headers={"kid": "idp-rsa-1"})
        es = forge.sign(forge.claims("ext-agent"), key=idp["ec"], algorithm="ES256", headers={"kid": "idp-ec-1"})
        for token in (rs, es, forge.sign()):  # the local key keeps working beside the JWKS
            reply = list_threads(api, f"Bearer {token}")
            assert reply.status == 200, reply.body

    @pytest.mark.parametrize(("case", "reason"), [
        ("rs256_unknown_kid", "unknown_key"),
        ("rs256_other_key_known_kid", "bad_signature"),
        ("es256_claiming_rsa_kid", "algorithm"),
        ("hs256_with_rsa_public_pem", "algorithm"),
        ("hmac_key_in_jwks_is_ignored", "unknown_key"),
        ("rs256_wrong_issuer", "issuer"),
    ])
    def test_refused(self, api, forge, idp, case, reason):
        claims = forge.claims("ext-agent")
        pem = idp["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        token = {
            "rs256_unknown_kid": lambda: forge.sign(claims, key=idp["rsa"], algorithm="RS256",
                                                    headers={"kid": "idp-rsa-2"}),
            "rs256_other_key_known_kid": lambda: forge.sign(
                claims, key=rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                headers={"kid": "idp-rsa-1"}),
            "es256_claiming_rsa_kid": lambda: forge.sign(claims, key=idp["ec"], algorithm="ES256",
                                                         headers={"kid": "idp-rsa-1"}),
            "hs256_with_rsa_public_pem": lambda: hmac_signed(
                {"alg": "HS256", "typ": "JWT", "kid": "idp-rsa-1"}, claims, pem),
            "hmac_key_in_jwks_is_ignored": lambda: hmac_signed(
                {"alg": "HS256", "typ": "JWT", "kid": "idp-hmac"}, claims, idp["secret"]),
            "rs256_wrong_issuer": lambda: forge.sign({**claims, "iss": "https://evil.example"}, key=idp["rsa"],
                                                     algorithm="RS256", headers={"kid": "idp-rsa-1"}),
        }[case]()
        assert_unauthorized(list_threads(api, f"Bearer {token}"), reason)
