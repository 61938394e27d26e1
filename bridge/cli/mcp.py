"""`bridge mcp`: the bridge as an MCP server on stdio; `bridge mcp config`: what to run or paste to connect agents.

Bare `bridge mcp` starts for every agent session that uses the stdio transport: it runs `bridge.mcp_stdio` (stdlib
only); what only `config` needs (the token issuer, the store) is imported when `config` runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.cli.common import db_options
from bridge.cli.options import FullHelpGroup
from bridge.cli.output import emit, fail
from bridge.cli.urls import bridge_url
from bridge.domain.vocabulary import TOKEN_ROLES, Role
from bridge.errors import InvalidArgument

if TYPE_CHECKING:
    from bridge.settings import Settings

SERVER_NAME = "bridge"  # the name clients list the server under (Claude Code: tools mcp__bridge__<tool>)
TOKEN_ENV = "BRIDGE_TOKEN"


@click.group("mcp", cls=FullHelpGroup, invoke_without_command=True)
@click.option("--url", default=None,
              help="The running bridge's base URL [env BRIDGE_URL; default: from BRIDGE_HOST/PORT, "
                   "http://127.0.0.1:8765].")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File holding the bearer token, read again for every message (a renewed token needs no restart).")
@click.option("--token-env", default=TOKEN_ENV, show_default=True,
              help="Environment variable holding the token when there is no --token-file.")
@click.pass_context
def mcp(ctx: click.Context, url: str | None, token_file: Path | None, token_env: str) -> None:
    """An MCP server on stdin/stdout that forwards every message to a running bridge's POST /mcp.

    Only protocol messages go to stdout, logs go to stderr, EOF on stdin ends it; a bridge that is down becomes tool
    errors. `bridge mcp config` prints how to connect Claude Code, Codex or any MCP client.
    """
    if ctx.invoked_subcommand is not None:
        if url or token_file or token_env != TOKEN_ENV:
            fail(InvalidArgument(f"give --url/--token-file/--token-env after `{ctx.invoked_subcommand}`"), False)
        return
    from bridge import logs, mcp_stdio

    level = os.environ.get("BRIDGE_LOG_LEVEL", "INFO").upper()
    logs.configure(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    target = bridge_url(url, False)
    if token_file is not None:
        try:
            token_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(InvalidArgument(f"--token-file: cannot read {token_file}: {exc.strerror or exc}"), False)
    elif not os.environ.get(token_env, "").strip():
        fail(InvalidArgument(f"no token: give --token-file FILE or set ${token_env} "
                             "(bridge token issue --agent-id ... --role ...)"), False)
    sys.exit(mcp_stdio.serve(target, mcp_stdio.token_reader(token_file, token_env)))


@dataclass(frozen=True)
class Plan:
    """What the printed configuration points at."""

    url: str  # the bridge's base URL
    transport: str  # http or stdio
    token_env: str  # the environment variable the client (or the stdio server) reads the token from
    token_file: Path | None  # stdio: the server reads this file instead

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def bearer(self) -> str:
        return f"Bearer ${{{self.token_env}}}"

    @property
    def header(self) -> str:
        return f"Authorization: {self.bearer}"

    def stdio_argv(self) -> list[str]:
        """`bridge mcp ...` as the client should start it."""
        argv = [*bridge_command(), "mcp", "--url", self.url]
        if self.token_file is not None:
            return [*argv, "--token-file", str(self.token_file)]
        return argv if self.token_env == TOKEN_ENV else [*argv, "--token-env", self.token_env]

    def stdio_env(self) -> dict[str, str]:
        """Variables the stdio server needs from the client (none when it reads a token file)."""
        return {} if self.token_file is not None else {self.token_env: f"${{{self.token_env}}}"}


def bridge_command() -> list[str]:
    """How a client runs this bridge from anywhere: the console script next to this interpreter, else the one on
    PATH, else `python -m bridge`."""
    script = Path(sys.executable).parent / "bridge"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("bridge")
    return [found] if found else [sys.executable, "-m", "bridge"]


def claude_lines(plan: Plan) -> list[str]:
    """`claude mcp add ...` (the name before the variadic --header/-e) and the .mcp.json form."""
    if plan.transport == "http":
        add = ["claude", "mcp", "add", "--transport", "http", SERVER_NAME, plan.mcp_url, "--header", plan.header]
        server: dict[str, Any] = {"type": "http", "url": plan.mcp_url, "headers": {"Authorization": plan.bearer}}
    else:
        argv = plan.stdio_argv()
        env = [f"{k}={v}" for k, v in plan.stdio_env().items()]
        add = ["claude", "mcp", "add", SERVER_NAME, *(["-e", *env] if env else []), "--", *argv]
        server = {"type": "stdio", "command": argv[0], "args": argv[1:]}
        if plan.stdio_env():
            server["env"] = plan.stdio_env()
    uses = f" Claude Code fills in ${{{plan.token_env}}} when it starts: start it from this shell." \
        if plan.token_file is None or plan.transport == "http" else ""
    return [
        shlex.join(add),
        f"#{uses} Pre-approve the bridge's tools with: claude --allowedTools=mcp__{SERVER_NAME}",
        "# Or, for everyone in the project, this .mcp.json at its root (Claude Code asks once to approve it):",
        json.dumps({"mcpServers": {SERVER_NAME: server}}, indent=2),
    ]


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def codex_lines(plan: Plan) -> list[str]:
    """`codex mcp add ...` (HTTP) and the `[mcp_servers.bridge]` table for ~/.codex/config.toml."""
    lines = []
    if plan.transport == "http":
        lines.append(shlex.join(["codex", "mcp", "add", SERVER_NAME, "--url", plan.mcp_url,
                                 "--bearer-token-env-var", plan.token_env]))
        lines.append("# Or add this to ~/.codex/config.toml (Codex reads the token from "
                     f"${plan.token_env} when it starts: start it from this shell):")
        table = [f"url = {toml_string(plan.mcp_url)}", f"bearer_token_env_var = {toml_string(plan.token_env)}"]
    else:
        argv = plan.stdio_argv()
        lines.append("# Add this to ~/.codex/config.toml" + (f" (start Codex from this shell: env_vars passes "
                                                              f"${plan.token_env} on):" if plan.stdio_env() else ":"))
        table = [f"command = {toml_string(argv[0])}", f"args = [{', '.join(toml_string(a) for a in argv[1:])}]"]
        if plan.stdio_env():
            table.append(f"env_vars = [{toml_string(plan.token_env)}]")
    return [*lines, f"[mcp_servers.{SERVER_NAME}]", *table,
            '# default_tools_approval_mode = "approve"   # uncomment to pre-approve the bridge\'s tools']


def document(plan: Plan, token: str | None, agent_id: str, role: str, expires_at: str | None,
             renew: str) -> dict[str, Any]:
    """The `--client json` document: where to connect, and where the token is."""
    doc: dict[str, Any] = {"name": SERVER_NAME, "transport": plan.transport, "url": plan.mcp_url}
    if plan.transport == "http":
        doc["header"] = plan.header
    else:
        argv = plan.stdio_argv()
        doc.update(command=argv[0], args=argv[1:], env=plan.stdio_env())
    if token is not None:
        doc["token"] = token
    if plan.token_file is not None:
        doc["token_file"] = str(plan.token_file)
    if plan.token_file is None or plan.transport == "http":
        doc["token_env"] = plan.token_env
    doc.update(agent_id=agent_id, role=role, expires_at=expires_at, renew=renew)
    return doc


def mint(settings: Settings, agent_id: str, role: str, lifetime: float, as_json: bool) -> tuple[str, dict[str, Any]]:
    """A token from the local issuer, as `bridge token issue` mints it."""
    from bridge.cli.common import opened
    from bridge.services import tokens as token_service

    with opened(settings, as_json) as parts:
        return token_service.issue(parts.bridge, parts.key, agent_id=agent_id, role=role, session_id=None,
                                   ttl=lifetime)


def duration_text(seconds: float) -> str:
    """A `--ttl` value for `seconds`, in the largest whole unit (86400 -> "24h")."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def export_line(plan: Plan, token: str | None) -> str | None:
    """`export BRIDGE_TOKEN=...` for a minted token or one in a file an HTTP client cannot read; else None."""
    if token is not None:
        return f"export {plan.token_env}={token}"
    if plan.token_file is not None and plan.transport == "http":
        return f'export {plan.token_env}="$(cat {shlex.quote(str(plan.token_file))})"'
    return None


def renew_note(plan: Plan, issue: str, expires_at: str | None, agent: str) -> str:
    """One line: what to do when the token expires."""
    when = f"When the token expires ({expires_at})" if expires_at else "When the token expires"
    if plan.token_file is not None:
        after = " (the stdio server reads it again on the next call)" if plan.transport == "stdio" else \
            f", run the export line again and restart {agent}"
        return f"# {when}: {issue} > {shlex.quote(str(plan.token_file))}{after}."
    return (f"# {when}: export {plan.token_env}=$({issue}) (or run `bridge mcp config` again) and restart {agent}"
            " from that shell.")


@mcp.command("config")
@click.option("--client", type=click.Choice(["claude", "codex", "json"]), required=True,
              help="Claude Code, Codex, or a JSON document for any MCP client.")
@click.option("--agent-id", required=True, help="The agent's identity on the bridge.")
@click.option("--role", type=click.Choice(TOKEN_ROLES), default=Role.PARTICIPANT.value, show_default=True)
@click.option("--url", default=None,
              help="The bridge's base URL the agent calls [env BRIDGE_URL; default: from BRIDGE_HOST/PORT].")
@click.option("--transport", type=click.Choice(["http", "stdio"]), default="http", show_default=True,
              help="http: the client calls <url>/mcp; stdio: the client starts `bridge mcp`, which forwards.")
@click.option("--ttl", help="The minted token's lifetime (default: the max TTL, BRIDGE_TOKEN_MAX_TTL).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Refer to the token in this file instead of minting one.")
@click.option("--token-env", default=None, help="Refer to the token in this environment variable instead of minting.")
@db_options
def config(client: str, agent_id: str, role: str, url: str | None, transport: str, ttl: str | None,
           token_file: Path | None, token_env: str | None, db: str | None, workspace: str | None,
           as_json: bool) -> None:
    """Print what to run or paste to connect Claude Code, Codex or any MCP client to the bridge.

    Mints the agent's token with the local key (printed only in an `export BRIDGE_TOKEN=...` line; the configuration
    refers to the variable), or refers to --token-file / --token-env instead.
    """
    from bridge.cli.common import check_identifier, load_settings, token_lifetime

    check_identifier("agent-id", agent_id, as_json)
    if token_file is not None and token_env is not None:
        fail(InvalidArgument("give at most one of --token-file, --token-env"), as_json)
    if token_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        fail(InvalidArgument(f"--token-env {token_env!r} is not an environment variable name"), as_json)
    settings = load_settings(db=db, workspace=workspace)
    lifetime = token_lifetime(ttl, settings, as_json) if ttl else settings.token_max_ttl
    plan = Plan(url=bridge_url(url, as_json, settings.url), transport=transport, token_env=token_env or TOKEN_ENV,
                token_file=token_file.expanduser().absolute() if token_file is not None else None)
    token, expires_at = None, None
    if token_file is None and token_env is None:
        token, claims = mint(settings, agent_id, role, lifetime, as_json)
        expires_at = datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    issue = shlex.join(["bridge", "token", "issue", "--agent-id", agent_id, "--role", role,
                        "--ttl", ttl or duration_text(lifetime),
                        *(["--db", settings.db] if db else []),
                        *(["--workspace", workspace] if workspace else [])])
    agent = {"claude": "Claude Code", "codex": "Codex"}.get(client, "the client")
    renew = renew_note(plan, issue, expires_at, agent)
    doc = document(plan, token, agent_id, role, expires_at, renew.removeprefix("# "))
    if client == "json" or as_json:
        emit({**doc, "client": client} if as_json else doc, True)
        return
    lines = [f"# {agent} over {'HTTP' if transport == 'http' else 'stdio'}: agent {agent_id} ({role}) on {plan.url}"
             + (f", token valid until {expires_at}" if expires_at else "")]
    export = export_line(plan, token)
    lines += [export] if export else []
    lines += claude_lines(plan) if client == "claude" else codex_lines(plan)
    emit(None, False, "\n".join([*lines, renew]))
