"""The `bridge` command line: token issuer, zero-config serve, entry-point equivalence, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import requests
from click.testing import CliRunner

from bridge.cli.main import cli
from bridge.testing.processes import Proc, clean_env

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_token_issue_prints_only_a_verifiable_token(tmp_path):
    db = str(tmp_path / "b.db")
    assert run_cli("db", "migrate", "--db", db).exit_code == 0  # only serve and db migrate|restore create one
    result = run_cli("token", "issue", "--db", db, "--agent-id", "rev", "--role", "participant", "--ttl", "2h")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token and token.count(".") == 2
    jwks = json.loads(run_cli("token", "jwks", "--db", db).stdout)
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="bridge", issuer="bridge-local")
    assert (claims["agent_id"], claims["role"], claims["workspace_id"]) == ("rev", "participant", "default")
    assert claims["exp"] - claims["iat"] == 7200
    key_file = tmp_path / "b.data" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_token_issue_json_and_refusals(tmp_path):
    db = str(tmp_path / "b.db")
    assert run_cli("db", "migrate", "--db", db).exit_code == 0  # only serve and db migrate|restore create one
    result = run_cli("token", "issue", "--db", db, "--agent-id", "c", "--role", "coordinator", "--json",
                     "--session-id", "s-1", "--workspace", "team")
    doc = json.loads(result.stdout)
    assert doc["claims"]["session_id"] == "s-1" and doc["claims"]["workspace_id"] == "team"
    too_long = run_cli("token", "issue", "--db", db, "--agent-id", "c", "--role", "coordinator", "--ttl", "48h")
    assert too_long.exit_code == 2
    bad_role = run_cli("token", "issue", "--db", db, "--agent-id", "c", "--role", "admin")
    assert bad_role.exit_code == 2
    bad_id = run_cli("token", "issue", "--db", db, "--agent-id", "-bad", "--role", "auditor")
    assert bad_id.exit_code == 2


def test_token_revoke_requires_exactly_one_selector_and_is_audited(tmp_path):
    db = str(tmp_path / "b.db")
    assert run_cli("db", "migrate", "--db", db).exit_code == 0  # only serve and db migrate|restore create one
    assert run_cli("token", "revoke", "--db", db, "--reason", "r").exit_code == 2
    assert run_cli("token", "revoke", "--db", db, "--jti", "a", "--agent-id", "b", "--reason", "r").exit_code == 2
    assert run_cli("token", "revoke", "--db", db, "--agent-id", "rev").exit_code == 2  # --reason is required
    result = run_cli("token", "revoke", "--db", db, "--agent-id", "rev", "--reason", "laptop lost", "--json",
                     "--actor", "human:ops")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["kind"] == "agent"
    import apsw
    conn = apsw.Connection(db)
    rows = conn.execute("SELECT actor, operation, reason FROM audit_events").fetchall()
    conn.close()
    assert rows == [("human:ops", "token_revoke", "laptop lost")]


def test_invalid_configuration_exits_2_listing_every_problem(tmp_path):
    env = {**os.environ, "BRIDGE_PORT": "nope", "BRIDGE_SYNCHRONOUS": "OFF", "BRIDGE_DB": str(tmp_path / "b.db")}
    proc = subprocess.run([sys.executable, "-m", "bridge", "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "BRIDGE_PORT" in proc.stderr and "BRIDGE_SYNCHRONOUS" in proc.stderr


def test_bridge_py_and_console_script_are_the_same_program():
    shim = subprocess.run([sys.executable, str(ROOT / "bridge.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    module = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60)
    assert shim.returncode == module.returncode == 0
    assert shim.stdout == module.stdout
    assert "serve" in shim.stdout and "token" in shim.stdout


def test_serve_starts_with_zero_configuration(tmp_path):
    """In an empty directory: creates ./bridge.db and the 0600 key, answers /health and /ready, stops on SIGTERM."""
    empty = tmp_path / "empty"
    empty.mkdir()
    server = Proc("serve", [sys.executable, str(ROOT / "bridge.py"), "serve", "--port", "0"], tmp_path / "serve.log",
                  env=clean_env(), cwd=empty)
    try:
        url = server.wait_ready()
        assert url.startswith("http://127.0.0.1:"), server.log_text()
        assert "bridge token issue" in server.log_text()
        assert requests.get(f"{url}/health", timeout=5).json()["status"] == "ok"
        assert requests.get(f"{url}/ready", timeout=5).status_code == 200
        assert (empty / "bridge.db").exists()
        assert stat.S_IMODE((empty / "bridge.data" / "signing-key.pem").stat().st_mode) == 0o600
    finally:
        server.stop()
    assert server.exit_code == 0


def test_the_cli_starts_without_the_test_extras():
    """`./scripts/serve` installs no test extras: nothing on the way to a command may import them."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in {'requests', 'pytest', 'pytest_benchmark', 'ruff'}:\n"
            "            raise ImportError(f'test extra {name} imported')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from bridge.cli.main import cli\n"
            "for args in (['--version'], ['ops', '--help'], ['demo', '--help'], ['agent', 'up', '--help']):\n"
            "    try:\n"
            "        cli(args, prog_name='bridge')\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 0, (args, exc.code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
