"""The README's "Connect your agents", verbatim, with the real CLIs: the lines `bridge mcp config` prints are run as
printed (`claude mcp add …` / `codex mcp add …`), then the CLI is started headless with a prompt naming a thread
(its model a local fake playing the `echo` persona). It counts when the agent read, replied and acknowledged."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from bridge.agents import claude, codex
from bridge.agents.base import AgentSpec, find_cli
from bridge.demo.brain import Persona
from bridge.demo.fake_anthropic import FakeAnthropic
from bridge.demo.fake_openai import FakeOpenAI
from bridge.domain.wake import default_prompt
from bridge.standin import Client
from bridge.testing.service import service_stack

KEY = "sk-fake-0123456789abcdefghijklmnop"


def printed_lines(stack, kind: str) -> tuple[str, list[str]]:
    """The token from the `export` line and the argv of the `<kind> mcp add` line, as a user would copy them."""
    out = stack.bridge("mcp", "config", "--client", kind, "--agent-id", "agent", "--url", stack.url,
                        "--db", str(stack.db))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    token = next(line for line in lines if line.startswith("export BRIDGE_TOKEN=")).split("=", 1)[1]
    add = shlex.split(next(line for line in lines if line.startswith(f"{kind} mcp add ")))
    return token, [find_cli(kind), *add[1:]]


def model_env(kind: str, home: Path, repo: Path, model_url: str) -> dict[str, str]:
    """A private HOME (and CODEX_HOME) whose CLI talks to the fake model, nothing of the bridge's configured."""
    base = {k: os.environ[k] for k in ("PATH", "LANG", "TERM", "USER") if k in os.environ}
    spec = AgentSpec(agent_id="agent", agent_dir=home / "unused", cwd=repo, mcp_url="", token="",
                     model_url=model_url, api_key=KEY, home=home)
    if kind == "claude":
        claude.seed_home(home, repo, KEY)
        return {**base, **claude.agent_env(spec)}
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        f'model = "{codex.MODEL}"\nmodel_provider = "{codex.PROVIDER}"\napproval_policy = "never"\n'
        '[features]\ndaemon_auto_start = false\n'
        f'[model_providers.{codex.PROVIDER}]\nname = "fake"\nbase_url = "{model_url}"\nwire_api = "responses"\n'
        f'env_key = "{codex.KEY_ENV}"\n[projects."{repo}"]\ntrust_level = "trusted"\n')
    return {**base, "HOME": str(home), "CODEX_HOME": str(codex_home), codex.KEY_ENV: KEY}


@pytest.mark.parametrize("kind", ["claude", "codex"])
def test_the_printed_http_setup_connects_the_real_cli(kind: str, tmp_path: Path, db: str):
    with service_stack(tmp_path / "stack", db=db) as stack:
        fake = FakeAnthropic if kind == "claude" else FakeOpenAI
        with fake(Persona(agent_id="agent", role="echo"), log_path=tmp_path / "model.jsonl") as model:
            repo, home = tmp_path / "repo", tmp_path / "home"
            repo.mkdir()
            env = model_env(kind, home, repo, model.url)
            token, add = printed_lines(stack, kind)
            env["BRIDGE_TOKEN"] = token  # the printed `export` line
            added = subprocess.run(add, cwd=repo, env=env, capture_output=True, text=True, timeout=60, check=False)
            assert added.returncode == 0, added.stderr

            coord = Client(stack.url, stack.token("coord", "coordinator"))
            thread_id = coord.call("create_thread", title="connect", type="workflow",
                                   participants=["agent", "peer"])["thread_id"]
            seq = Client(stack.url, stack.token("peer")).call(
                "post_message", thread_id=thread_id, schema_version=1, kind="chat", body="hello", to=["agent"])["seq"]
            prompt = default_prompt(thread_id, "unread_messages")
            if kind == "claude":  # the README's `claude --allowedTools=mcp__bridge`, headless
                run = [find_cli("claude"), "-p", "--allowedTools=mcp__bridge", "--", prompt]
            else:  # `codex`, headless, with the bridge's tools pre-approved as the README's comment says
                run = [find_cli("codex"), "exec", "--skip-git-repo-check", "-c",
                       'mcp_servers.bridge.default_tools_approval_mode="approve"', "--", prompt]
            done = subprocess.run(run, cwd=repo, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            replies = coord.call("read_messages", thread_id=thread_id, since_seq=0, from_agent_id="agent")["messages"]
            assert [m["body"] for m in replies] == [f"echo seq {seq}"], done.stdout[-2000:]
            cursor = stack.query("SELECT last_read_seq FROM read_cursors WHERE thread_id = ? AND agent_id = 'agent'",
                                 (thread_id,))
            assert cursor and cursor[0][0] >= seq
