"""Attacks: forged, stale and damaged tokens, and a valid participant trying to step outside its threads.

Against a real `bridge serve` on 127.0.0.1:

- token attacks: every bad token (alg none, another key under the server's kid, HS256 keyed with the server's
  public key, expired, not yet valid, wrong iss/aud/workspace, each required claim missing, claims of the wrong
  type, an over-long lifetime, a role the table does not know, forbidden key-fetching headers, revoked by jti,
  session and agent, a cached token that has since expired, a tampered payload or signature, a huge token,
  garbage) is sent where the same agent's valid token succeeds: `/v1/mcp/read_messages`, `/v1/mcp/post_message`
  and `POST /mcp` `tools/call read_messages`. Good tokens are minted with the server's own key; bad ones are forged
  here with PyJWT and cryptography.
- access escapes: the attacker holds a valid participant token and reads, posts to and acknowledges a thread it
  is not in, names another agent, session or workspace in hint fields, calls coordinator-only commands, posts
  system messages, and asks for operator-only commands, over `/v1` and as MCP `tools/call`; an auditor tries to
  write.

A bad token counts as accepted when the call succeeds; an escape counts as a success when the call is served
(for `list_threads`: when the other thread shows up). The database is read back before and after the attacks:
apart from the audit trail of the refusals, nothing may change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.hostile import Answer, Server, Wire, envelope_problem, serve

from bridge.testing.client import new_thread
from bridge.testing.client import post as post_chat

AREA = "attacks"
ATTACKER = "mallory"
VICTIM = "alice"
CONTENT_TABLES = ("threads", "participants", "messages", "read_cursors", "escalations", "finding_reports",
                  "sessions", "revocations", "trigger_jobs", "trigger_attempts", "wake_marks", "runtime_failures")
"""Every table a refused call could touch; `audit_events` (refusals are audited) and `control` (the worker's
heartbeat) change by design."""
CAREFUL_TOKEN = 8 * 1024  # longer tokens go through Wire.send_carefully
SHORT_TTL = 1  # seconds: a token used (and cached by the verifier) while valid, attacked again once expired


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None) -> str:
    """A compact JWS built by hand (PyJWT refuses to make some of these): header.payload.signature."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64url(signature)}"


@dataclass(frozen=True)
class World:
    """The running server and the ids the attacks aim at."""

    server: Server
    own_thread: str  # the attacker is a participant
    other_thread: str  # the attacker is not
    other_message: str  # a message of other_thread
    coordinator: str
    attacker: str  # the attacker's valid participant token
    auditor: str

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid claims of the attacker, with `changes` (None removes a claim)."""
        now = int(time.time())
        settings = self.server.settings
        claims: dict[str, Any] = {
            "iss": settings.issuer, "aud": settings.audience, "agent_id": ATTACKER,
            "workspace_id": settings.workspace, "role": "participant", "session_id": f"{ATTACKER}-s1",
            "iat": now, "exp": now + 600, "jti": secrets.token_urlsafe(16), "sub": ATTACKER}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def signed(self, claims: dict[str, Any], **header: Any) -> str:
        """Claims signed with the server's own key (so only the claims or the header are wrong)."""
        return forge({"alg": "EdDSA", "typ": "JWT", "kid": self.server.key.kid, **header}, claims,
                     self.server.key.private.sign)


# --------------------------------------------------------------------------------------------------- bad tokens
def bad_tokens(world: World) -> dict[str, str]:
    """Every forged, stale or damaged token, by name."""
    tokens: dict[str, str] = {}
    tokens.update(_algorithm_tokens(world))
    tokens.update(_claim_tokens(world))
    tokens.update(_damaged_tokens(world))
    return tokens


def _algorithm_tokens(world: World) -> dict[str, str]:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    kid = world.server.key.kid
    claims = world.claims()
    public = world.server.key.public
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    other_ed = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    valid = world.signed(claims)

    def hs256(secret: bytes) -> Callable[[bytes], bytes]:
        return lambda data: hmac.new(secret, data, hashlib.sha256).digest()

    tokens = {f"alg {alg!r}": forge({"alg": alg, "typ": "JWT", "kid": kid}, claims, None)
              for alg in ("none", "None", "NONE", "nOnE")}
    tokens["alg none keeping the real signature"] = (
        forge({"alg": "none", "kid": kid}, claims, None)[:-1] + valid.rsplit(".", 1)[1])
    tokens["alg none without kid"] = forge({"alg": "none"}, claims, None)
    tokens["no alg"] = forge({"kid": kid}, claims, world.server.key.private.sign)
    tokens["HS256 keyed with the public key (PEM)"] = forge({"alg": "HS256", "kid": kid}, claims, hs256(pem))
    tokens["HS256 keyed with the public key (raw)"] = forge({"alg": "HS256", "kid": kid}, claims, hs256(raw))
    tokens["HS256 keyed with the kid"] = forge({"alg": "HS256", "kid": kid}, claims, hs256(kid.encode()))
    tokens["HS512 keyed with the public key"] = forge(
        {"alg": "HS512", "kid": kid}, claims, lambda data: hmac.new(pem, data, hashlib.sha512).digest())
    tokens["EdDSA by another key under the server's kid"] = jwt.encode(claims, other_ed, "EdDSA",
                                                                        headers={"kid": kid})
    tokens["EdDSA by another key, no kid"] = jwt.encode(claims, other_ed, "EdDSA")
    tokens["EdDSA by another key, unknown kid"] = jwt.encode(claims, other_ed, "EdDSA", headers={"kid": "other"})
    tokens["RS256 by a fresh key under the server's kid"] = jwt.encode(claims, rsa_key, "RS256",
                                                                        headers={"kid": kid})
    tokens["ES256 by a fresh key under the server's kid"] = jwt.encode(claims, ec_key, "ES256", headers={"kid": kid})
    tokens["PS256 by a fresh key under the server's kid"] = jwt.encode(claims, rsa_key, "PS256",
                                                                        headers={"kid": kid})
    tokens["real signature, alg RS256"] = forge({"alg": "RS256", "kid": kid}, claims, world.server.key.private.sign)
    other_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(other_ed.public_key()))
    for name, value in (("jku", "http://127.0.0.1:1/jwks.json"), ("x5u", "http://127.0.0.1:1/cert.pem"),
                        ("jwk", other_jwk), ("x5c", ["MIIB"])):
        tokens[f"header {name} (signed with the server's key)"] = world.signed(claims, **{name: value})
    for kid_value in (None, 1, [kid], {"kid": kid}, "../../signing-key.pem", ""):
        header = {"alg": "EdDSA", "typ": "JWT"} | ({} if kid_value is None else {"kid": kid_value})
        tokens[f"kid {kid_value!r}"] = forge(header, claims, world.server.key.private.sign)
    tokens["crit header with an unknown extension"] = world.signed(claims, crit=["exp2"], exp2=1)
    return tokens


def _claim_tokens(world: World) -> dict[str, str]:
    now = int(time.time())
    settings = world.server.settings
    cases: dict[str, dict[str, Any]] = {
        "expired a minute ago": {"iat": now - 3600, "exp": now - 60},
        "expired beyond the leeway": {"iat": now - 600, "exp": now - int(settings.token_leeway) - 2},
        "not valid before (nbf) in a minute": {"nbf": now + 60},
        "issued (iat) in a minute": {"iat": now + 60, "exp": now + 600},
        "issued in a year": {"iat": now + 365 * 86400, "exp": now + 366 * 86400},
        "wrong issuer": {"iss": "evil"},
        "issuer of the wrong type": {"iss": ["bridge-local"]},
        "wrong audience": {"aud": "other"},
        "audience list without the bridge": {"aud": ["other", "also-other"]},
        "audience of the wrong type": {"aud": 7},
        "another workspace": {"workspace_id": "other-workspace"},
        "workspace not an identifier": {"workspace_id": "../default"},
        "lifetime beyond the maximum": {"exp": now + int(settings.token_max_ttl) + 3600},
        "role operator": {"role": "operator"},
        "role admin": {"role": "admin"},
        "role of the wrong type": {"role": ["coordinator"]},
        "agent_id an integer": {"agent_id": 7},
        "agent_id a list": {"agent_id": [ATTACKER]},
        "agent_id empty": {"agent_id": ""},
        "agent_id with a path": {"agent_id": "../alice"},
        "agent_id with a space": {"agent_id": "alice bob"},
        "session_id an object": {"session_id": {"id": "x"}},
        "exp a numeric string": {"exp": str(now + 600)},
        "exp a float": {"exp": now + 600.5},
        "exp a boolean": {"exp": True},
        "iat a string": {"iat": str(now)},
        "iat a boolean": {"iat": False},
        "jti an integer": {"jti": 7},
        "jti empty": {"jti": ""},
    }
    tokens: dict[str, str] = {}
    for name, changes in cases.items():
        tokens[f"claims: {name}"] = world.signed(world.claims(**changes))
    tokens["claims: session_id null"] = world.signed({**world.claims(), "session_id": None})
    for claim in ("agent_id", "workspace_id", "role", "session_id", "iat", "exp", "jti", "iss", "aud"):
        tokens[f"claims: {claim} missing"] = world.signed(world.claims(**{claim: None}))
    return tokens


def _damaged_tokens(world: World) -> dict[str, str]:
    valid = world.signed(world.claims())
    header, payload, signature = valid.split(".")
    escalated = b64url(json.dumps(world.claims(role="coordinator")).encode())
    impostor = b64url(json.dumps(world.claims(agent_id=VICTIM, session_id=f"{VICTIM}-s1")).encode())
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return {
        "payload swapped: role coordinator": f"{header}.{escalated}.{signature}",
        "payload swapped: another agent": f"{header}.{impostor}.{signature}",
        "signature flipped": f"{header}.{payload}.{flipped}",
        "signature truncated": f"{header}.{payload}.{signature[:20]}",
        "signature removed": f"{header}.{payload}.",
        "signature of another token": f"{header}.{payload}.{world.attacker.split('.')[2]}",
        "four segments": f"{valid}.{signature}",
        "two segments": f"{header}.{payload}",
        "header and payload swapped": f"{payload}.{header}.{signature}",
        "padding added": f"{header}==.{payload}.{signature}",
        "huge token (12 KiB)": f"{header}.{payload}{'A' * 12 * 1024}.{signature}",
        "huge token (over the header limit)": f"{header}.{payload}{'A' * 40 * 1024}.{signature}",
        "garbage": "garbage",
        "three dots": "...",
        "empty segments": "..",
        "random base64": b64url(secrets.token_bytes(96)),
        "JSON instead of a JWT": json.dumps(world.claims()).replace(" ", ""),
        "whitespace inside": f"{header}. {payload}.{signature}",
    }


# --------------------------------------------------------------------------------------------------- escapes
@dataclass(frozen=True)
class Escape:
    """A call the attacker must not get served; `leaked` judges a served answer (default: served at all)."""

    name: str
    token: str
    command: str
    arguments: dict[str, Any]
    leaked: Callable[[dict[str, Any]], bool] = lambda result: True


def escapes(world: World) -> list[Escape]:
    """Calls outside the attacker's threads, identity and role (each also made as an MCP tools/call)."""
    own, other, token = world.own_thread, world.other_thread, world.attacker
    post = {"schema_version": 1, "kind": "chat", "body": "escape"}
    hint = f"{VICTIM}-s1"

    def shows_other(result: dict[str, Any]) -> bool:
        return any(t.get("thread_id") == other for t in result.get("threads", []))

    cases = [
        Escape("read a thread it is not in", token, "read_messages", {"thread_id": other, "since_seq": 0}),
        Escape("long-poll a thread it is not in", token, "read_messages",
               {"thread_id": other, "since_seq": 0, "wait_ms": 50}),
        Escape("get a thread it is not in", token, "get_thread", {"thread_id": other}),
        Escape("summarize a thread it is not in", token, "summarize_thread", {"thread_id": other}),
        Escape("post to a thread it is not in", token, "post_message", {"thread_id": other, **post}),
        Escape("ack a thread it is not in", token, "ack_read", {"thread_id": other, "last_read_seq": 1}),
        Escape("list threads filtered on another participant", token, "list_threads", {"participant": VICTIM},
               shows_other),
        Escape("list every thread", token, "list_threads", {"limit": 200}, shows_other),
        Escape("read as another agent (agent_id hint)", token, "read_messages",
               {"thread_id": own, "since_seq": 0, "agent_id": VICTIM}),
        Escape("ack as another agent (agent_id hint)", token, "ack_read",
               {"thread_id": own, "last_read_seq": 0, "agent_id": VICTIM}),
        Escape("inbox of another agent", token, "inbox", {"agent_id": VICTIM}),
        Escape("post as another agent", token, "post_message", {"thread_id": own, **post, "sender_agent_id": VICTIM}),
        Escape("post as another session", token, "post_message",
               {"thread_id": own, **post, "sender_session_id": hint}),
        Escape("heartbeat another agent's session", token, "heartbeat_session",
               {"session_id": hint, "runtime": "x", "status": "idle", "resumable": False}),
        Escape("heartbeat naming another agent", token, "heartbeat_session",
               {"session_id": f"{ATTACKER}-s1", "runtime": "x", "status": "idle", "resumable": False,
                "agent_id": VICTIM}),
        Escape("post naming another workspace", token, "post_message",
               {"thread_id": own, **post, "workspace_id": "other-workspace"}),
        Escape("read naming another workspace", token, "read_messages",
               {"thread_id": own, "since_seq": 0, "workspace_id": "other-workspace"}),
        Escape("list naming another workspace", token, "list_threads", {"workspace_id": "other-workspace"}),
        Escape("create a thread (coordinators only)", token, "create_thread",
               {"title": "mine", "type": "workflow", "participants": [ATTACKER]}),
        Escape("add itself to another thread", token, "update_participants",
               {"thread_id": other, "add": [ATTACKER]}),
        Escape("remove a participant of its own thread", token, "update_participants",
               {"thread_id": own, "remove": ["bob"]}),
        Escape("close its own thread", token, "update_thread_status",
               {"thread_id": own, "status": "closed", "reason": "escape"}),
        Escape("resolve another thread", token, "update_thread_status",
               {"thread_id": other, "status": "resolved", "reason": "escape"}),
        Escape("wake a participant (coordinators only)", token, "trigger_participant",
               {"thread_id": own, "target_agent_id": "bob", "reason": "escape"}),
        Escape("post a system message", token, "post_message", {"thread_id": own, **post, "kind": "system"}),
        Escape("reply to another thread's message", token, "post_message",
               {"thread_id": own, **post, "in_reply_to": world.other_message}),
        Escape("address an agent outside the thread", token, "post_message",
               {"thread_id": own, **post, "to": [VICTIM]}),
        Escape("auditor posts", world.auditor, "post_message", {"thread_id": other, **post}),
        Escape("auditor creates a thread", world.auditor, "create_thread",
               {"title": "audit", "type": "workflow", "participants": ["aud"]}),
        Escape("auditor changes participants", world.auditor, "update_participants",
               {"thread_id": other, "add": ["aud"]}),
    ]
    return cases


OPERATOR_ONLY = ("freeze", "unfreeze", "revoke_token", "token_revoke", "retry_dead", "force_trigger",
                 "assign_escalation_owner", "backup", "issue_token")
"""Operator commands exist only at the CLI: over HTTP they must not exist at all."""


# --------------------------------------------------------------------------------------------------- the ledger
@dataclass
class Tally:
    """Cases, how many got through, how many refusals were not in their documented shape."""

    cases: int = 0
    through: int = 0
    misshapen: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 6:
            self.examples.append(text)

    def record(self, label: str, through: bool, problem: str | None, verdict: str) -> None:
        """One case's outcome: `through` (it got past the bridge: noted as `verdict`) and/or a misshapen answer."""
        self.cases += 1
        if through:
            self.through += 1
            self.note(f"{verdict} {label}")
        if problem is not None:
            self.misshapen += 1
            self.note(f"{label}: {problem}")


def _mcp_call(command: str, arguments: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": command, "arguments": arguments}}).encode()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _send(wire: Wire, path: str, body: bytes, token: str) -> Answer | Exception:
    import http.client

    try:
        if len(token) > CAREFUL_TOKEN:  # headers over the limit: refused before the body is read
            return wire.send_carefully(path, body, _headers(token))
        return wire.send("POST", path, body, _headers(token))
    except (OSError, http.client.HTTPException) as exc:
        return exc


def _token_refused(answer: Answer | Exception) -> tuple[bool, str | None]:
    """(got through, problem with the refusal's shape). A bad token is refused before any command runs, on
    `/v1` and `/mcp` alike: 401 (403 for a foreign workspace, 431 for a header over the limit) in the envelope."""
    if isinstance(answer, Exception):
        return False, f"no answer: {answer!r}"
    if answer.status < 400:
        return True, None
    problem = envelope_problem(answer)
    if problem is None and answer.status not in (401, 403, 431):
        problem = f"status {answer.status}"
    return False, problem


def attack_tokens(world: World, wire: Wire, tokens: dict[str, str]) -> Tally:
    """Each bad token where the attacker's valid token succeeds: read, post, and MCP read."""
    tally = Tally()
    read = {"thread_id": world.own_thread, "since_seq": 0}
    surfaces = {
        "/v1 read_messages": ("/v1/mcp/read_messages", json.dumps(read).encode()),
        "/v1 post_message": ("/v1/mcp/post_message", json.dumps(
            {"thread_id": world.own_thread, "schema_version": 1, "kind": "chat", "body": "forged"}).encode()),
        "/mcp tools/call read_messages": ("/mcp", _mcp_call("read_messages", read)),
    }
    for name, token in tokens.items():
        for surface, (path, body) in surfaces.items():
            through, problem = _token_refused(_send(wire, path, body, token))
            tally.record(f"{name} on {surface}", through, problem, "ACCEPTED")
    return tally


def _escape_outcome(escape: Escape, answer: Answer | Exception, via_mcp: bool) -> tuple[bool, str | None]:
    """(served, problem with the refusal's shape) of one escape attempt."""
    if isinstance(answer, Exception):
        return False, f"no answer: {answer!r}"
    if not via_mcp:
        if answer.status == 200:
            return escape.leaked(answer.json()), None
        problem = envelope_problem(answer)
        return False, problem if problem or answer.status in (400, 403, 404, 409) else f"status {answer.status}"
    try:
        body = answer.json()
        result = body["result"]
    except (ValueError, KeyError, TypeError):
        return False, f"MCP answer {answer.status} without a result"
    if not result.get("isError"):
        return escape.leaked(result.get("structuredContent") or {}), None
    text = result["content"][0]["text"] if result.get("content") else ""
    return False, None if text.split(":", 1)[0] in {"FORBIDDEN", "NOT_FOUND", "INVALID_ARGUMENT",
                                                    "WORKSPACE_MISMATCH", "CONFLICT"} else f"MCP text {text[:80]!r}"


def attempt_escapes(world: World, wire: Wire) -> Tally:
    """Every escape over `/v1` and as an MCP tools/call, then the operator-only commands (which must not exist)."""
    tally = Tally()
    for escape in escapes(world):
        for via_mcp in (False, True):
            path = "/mcp" if via_mcp else f"/v1/mcp/{escape.command}"
            body = _mcp_call(escape.command, escape.arguments) if via_mcp else json.dumps(escape.arguments).encode()
            served, problem = _escape_outcome(escape, _send(wire, path, body, escape.token), via_mcp)
            tally.record(f"{escape.name}{' (MCP)' if via_mcp else ''}", served, problem, "SERVED")
    for name in OPERATOR_ONLY:
        tally.cases += 1
        answer = _send(wire, f"/v1/mcp/{name}", b"{}", world.coordinator)
        if isinstance(answer, Exception) or answer.status != 404 or envelope_problem(answer):
            served = not isinstance(answer, Exception) and answer.status < 400
            tally.through += int(served)
            tally.misshapen += int(not served)
            tally.note(f"operator command {name}: {answer if isinstance(answer, Exception) else answer.status}")
    return tally


# --------------------------------------------------------------------------------------------------- the run
def snapshot(server: Server) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every content table, read from the database file."""
    return {table: set(server.stack.query(f"SELECT * FROM {table}")) for table in CONTENT_TABLES}


def _revoked_tokens(server: Server, world: World, wire: Wire) -> dict[str, str]:
    """Tokens that worked (and were cached by the verifier), then revoked by jti, session and agent."""
    tokens: dict[str, str] = {}
    read = json.dumps({"thread_id": world.own_thread, "since_seq": 0}).encode()
    for kind, agent in (("jti", "rev-jti"), ("session-id", "rev-session"), ("agent-id", "rev-agent")):
        token = server.stack.token(agent)
        answer = _send(wire, "/v1/mcp/read_messages", read, token)
        if isinstance(answer, Exception) or answer.status != 200:
            raise RuntimeError(f"the {agent} token did not work before its revocation: {answer}")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        value = {"jti": claims["jti"], "session-id": claims["session_id"], "agent-id": agent}[kind]
        done = server.stack.bridge("token", "revoke", f"--{kind}", value, "--reason", "attacks", "--db",
                                   str(server.stack.db))
        if done.returncode != 0:
            raise RuntimeError(f"bridge token revoke --{kind} failed: {done.stderr}")
        tokens[f"revoked by {kind.removesuffix('-id')} (used before)"] = token
    return tokens


def _setup(server: Server) -> World:
    coordinator = server.stack.token("coord", "coordinator")
    with server.stack.client(coordinator) as client:
        own = new_thread(client, [ATTACKER, "bob", "rev-jti", "rev-session", "rev-agent", "short"], "attacker's own")
        other = new_thread(client, [VICTIM, "bob"], "not the attacker's")
        post_chat(client, own, "hello")
        post_chat(client, other, "secret")
        message = client.ok("read_messages", {"thread_id": other, "since_seq": 0})["messages"][0]["message_id"]
    return World(server=server, own_thread=own, other_thread=other, other_message=message, coordinator=coordinator,
                 attacker=server.stack.token(ATTACKER), auditor=server.stack.token("aud", "auditor"))


def _controls(world: World, wire: Wire) -> bool:
    """The attacker's valid token, minted by the server's code and forged here with valid claims, reads, posts and
    reads over MCP: the refusals come neither from a dead server nor from a broken forge."""
    read = {"thread_id": world.own_thread, "since_seq": 0}
    post = {"thread_id": world.own_thread, "schema_version": 1, "kind": "chat", "body": "control"}
    for token in (world.attacker, world.signed(world.claims())):
        answers = [_send(wire, "/v1/mcp/read_messages", json.dumps(read).encode(), token),
                   _send(wire, "/v1/mcp/post_message", json.dumps(post).encode(), token),
                   _send(wire, "/mcp", _mcp_call("read_messages", read), token)]
        if not all(isinstance(a, Answer) and a.status == 200 for a in answers):
            return False
        if json.loads(answers[2].body)["result"].get("isError"):  # type: ignore[union-attr]
            return False
    return True


def run(scale: Scale, workdir: Path) -> list[Figure]:
    """Forge, replay and escape; report what got through and whether the database changed."""
    with serve(workdir / "attacks") as server:
        world = _setup(server)
        with Wire(server.port) as wire:
            short = server.stack.token("short", ttl=SHORT_TTL)
            short_ok = _send(wire, "/v1/mcp/read_messages", json.dumps(
                {"thread_id": world.own_thread, "since_seq": 0}).encode(), short)
            expires = time.time() + SHORT_TTL + server.settings.token_leeway + 1.5
            tokens = {**_revoked_tokens(server, world, wire), **bad_tokens(world)}
            controls_before = _controls(world, wire)
            before = snapshot(server)
            token_tally = attack_tokens(world, wire, tokens)
            escape_tally = attempt_escapes(world, wire)
            time.sleep(max(0.0, expires - time.time()))
            cached = attack_tokens(world, wire, {"expired after use (cached)": short})
            after = snapshot(server)
            controls_after = _controls(world, wire)
    if not isinstance(short_ok, Answer) or short_ok.status != 200:
        raise RuntimeError(f"the short-lived token did not work while valid: {short_ok}")
    token_tally.cases += cached.cases
    token_tally.through += cached.through
    token_tally.misshapen += cached.misshapen
    token_tally.examples += cached.examples
    return _figures(token_tally, escape_tally, before, after, controls_before and controls_after, len(tokens) + 1)


def _figures(tokens: Tally, escapes_: Tally, before: dict[str, set[tuple[Any, ...]]],
             after: dict[str, set[tuple[Any, ...]]], controls: bool, distinct: int) -> list[Figure]:
    changed = {t: len(before[t] ^ after[t]) for t in CONTENT_TABLES if before[t] != after[t]}
    rows = sum(len(rows) for rows in before.values())
    return [
        Figure(AREA, "bad tokens accepted", tokens.through, tokens.cases, "0 (>= 80 cases)",
               tokens.through == 0 and tokens.cases >= 80, note=f"{distinct} tokens x 3 surfaces; "
               + "; ".join(tokens.examples)),
        Figure(AREA, "bad-token refusals outside the envelope (401/403/431)", tokens.misshapen, tokens.cases, "0",
               tokens.misshapen == 0),
        Figure(AREA, "unauthorized successes (access escapes)", escapes_.through, escapes_.cases, "0 (>= 45 cases)",
               escapes_.through == 0 and escapes_.cases >= 45, note="; ".join(escapes_.examples)),
        Figure(AREA, "escape refusals outside their documented shape", escapes_.misshapen, escapes_.cases, "0",
               escapes_.misshapen == 0),
        Figure(AREA, "database rows changed by the refused calls", sum(changed.values()), rows, "0",
               not changed, note=f"tables changed: {changed}" if changed else
               f"{len(CONTENT_TABLES)} tables read back identical (audit_events grows by design)"),
        Figure(AREA, "valid tokens (minted, and forged with valid claims) served before and after", int(controls), 1,
               "1 of 1", controls),
    ]
