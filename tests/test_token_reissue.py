"""`bridge token issue` right after `bridge token revoke --agent-id` gives a working token (runbooks/token-failure.md).

`iat` has whole seconds and an agent revocation refuses every token issued before its cut-off (milliseconds): a token
issued in the same second as the revocation used to be born revoked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jwt
import pytest
from click.testing import CliRunner

from bridge.cli.main import cli
from bridge.errors import Unauthorized
from bridge.settings import Settings
from bridge.wiring import build


@pytest.fixture
def bridge(tmp_path, monkeypatch) -> Callable[..., str]:
    """`bridge <args> --db <a migrated database in tmp_path>` in-process, no inherited BRIDGE_* setting; its
    stdout (the command must succeed)."""
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--db", str(tmp_path / "bridge.db")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    run("db", "migrate")  # token commands no longer create a database
    return run


def test_a_token_issued_right_after_an_agent_revocation_is_valid(bridge, tmp_path):
    db = str(tmp_path / "bridge.db")
    for _ in range(3):  # in-process commands take milliseconds: revocation and issue share a second
        old = bridge("token", "issue", "--agent-id", "reviewer", "--role", "participant")
        bridge("token", "revoke", "--agent-id", "reviewer", "--reason", "leaked")
        new = bridge("token", "issue", "--agent-id", "reviewer", "--role", "participant")
        parts = build(Settings.load({"db": db}, env={}))
        try:
            assert parts.verifier.verify(new).agent_id == "reviewer"
            with pytest.raises(Unauthorized) as refused:
                parts.verifier.verify(old)
            assert refused.value.details["reason"] == "revoked"
        finally:
            parts.close()


@pytest.mark.parametrize(("env", "issue_life", "agent_life"), [
    ({}, 8 * 3600, 24 * 3600),
    ({"BRIDGE_TOKEN_TTL": "45m", "BRIDGE_TOKEN_MAX_TTL": "2h"}, 45 * 60, 2 * 3600),
])
def test_token_lifetimes_default_to_the_settings(bridge, monkeypatch, env, issue_life, agent_life):
    """`token issue` lasts BRIDGE_TOKEN_TTL; an agent's token (`mcp config`) lasts the max, BRIDGE_TOKEN_MAX_TTL, and
    the renew command it prints asks for that same lifetime."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def lifetime(token: str) -> int:
        claims = jwt.decode(token, options={"verify_signature": False})
        return claims["exp"] - claims["iat"]

    assert lifetime(bridge("token", "issue", "--agent-id", "a", "--role", "participant")) == issue_life
    config = json.loads(bridge("mcp", "config", "--client", "claude", "--agent-id", "a", "--json"))
    assert lifetime(config["token"]) == agent_life
    renew = config["renew"].split("$(", 1)[1].split(")", 1)[0].split()
    assert renew[renew.index("--ttl") + 1] == f"{agent_life // 3600}h"
