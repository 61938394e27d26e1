"""A stand-in agent: a real process that plays a Codex/Claude session in a tmux pane, for tests, drills and demos.

`python -m bridge.standin agent --token-file F [--url U] [--reply TEXT]` heartbeats as a managed, idle session in
its pane (`$TMUX_PANE`), then reads what is typed into it. When a line holds a bridge trigger envelope it reads the
thread over HTTP, acknowledges up to the latest seq, optionally replies, and heartbeats again — exactly what a real
agent is asked to do. `python -m bridge.standin resume [--fail] SESSION_ID PROMPT` is a one-shot resume command.
Output lines start with `STANDIN` so tests can watch the pane.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import sys
import termios
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from bridge.demo.brain import Persona, Step, decide
from bridge.domain.wake import parse_envelope

THREAD_ID = re.compile(r"\bthr_[A-Za-z0-9]+")


class Client:
    """The few `/v1` calls an agent needs, over stdlib HTTP."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.token = token
        payload = token.split(".")[1]
        self.claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def call(self, command: str, **body: Any) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/v1/mcp/{command}", data=json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")

    def heartbeat(self, *, managed: bool, status: str = "idle") -> dict[str, Any]:
        pane = os.environ.get("TMUX_PANE") if managed else None
        return self.call("heartbeat_session", session_id=self.claims["session_id"], runtime="generic-standin",
                         status=status, resumable=True, management_mode="managed" if pane else "unmanaged",
                         tmux_target=pane, cwd=os.getcwd())

    def catch_up(self, thread_id: str) -> tuple[list[int], int]:
        """Read every message of a thread, acknowledge the latest; return (seqs read, acked seq)."""
        seqs: list[int] = []
        since, latest = 0, 0
        while True:
            page = self.call("read_messages", thread_id=thread_id, since_seq=since, limit=200)
            if "messages" not in page:
                raise RuntimeError(f"read_messages failed: {page}")
            seqs += [m["seq"] for m in page["messages"]]
            since, latest = page["next_seq"], page["latest_seq"]
            if not page["has_more"]:
                break
        if latest:
            self.call("ack_read", thread_id=thread_id, last_read_seq=latest)
        return seqs, latest


def _client(args: argparse.Namespace) -> Client:
    token_file = args.token_file or os.environ.get("BRIDGE_TOKEN_FILE")
    if not token_file:
        sys.exit("standin: --token-file (or BRIDGE_TOKEN_FILE) is required")
    with open(token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    return Client(args.url or os.environ.get("BRIDGE_URL", "http://127.0.0.1:8765"), token)


def think(client: Client, persona: Persona, prompt: str, max_steps: int = 50) -> list[str]:
    """Act like a model-driven agent: the scripted brain picks each tool call, which is made over HTTP (the same
    brain the fake model APIs play for the real CLIs); return the tools called."""
    steps = [Step("user", prompt)]
    called = []
    for _ in range(max_steps):
        reply = decide(persona, steps)
        if reply.tool is None:
            break
        result = client.call(reply.tool, **reply.arguments)
        steps += [Step("call", name=reply.tool, arguments=reply.arguments), Step("result", json.dumps(result))]
        called.append(reply.tool)
    return called


def _handle(client: Client, thread_id: str, trigger_id: str, reply: str | None,
            persona: Persona | None = None, prompt: str = "") -> None:
    if persona is not None:
        called = think(client, persona, prompt or f"thread {thread_id}")
        print(f"STANDIN ACKED trigger={trigger_id} thread={thread_id} tools={','.join(called)}", flush=True)
        return
    seqs, acked = client.catch_up(thread_id)
    print(f"STANDIN READ thread={thread_id} seqs={seqs[:1] + seqs[-1:]}", flush=True)
    if reply:
        client.call("post_message", thread_id=thread_id, schema_version=1, kind="chat", body=reply)
        _, acked = client.catch_up(thread_id)
    client.heartbeat(managed=True)
    print(f"STANDIN ACKED trigger={trigger_id} seq={acked}", flush=True)


def _typed_lines() -> Iterator[str]:
    """Lines typed into stdin. A terminal in canonical mode keeps at most 4095 bytes of a line and drops the rest,
    which would cut an envelope (up to 8 KiB) before its closing tag; so a terminal is read in non-canonical mode
    (echo and signals kept) and split on newlines here."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield from sys.stdin
        return
    saved = termios.tcgetattr(fd)
    mode = [*saved[:6], list(saved[6])]
    mode[3] &= ~termios.ICANON
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    pending = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal went away
                return
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace") + "\n"
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _persona(args: argparse.Namespace) -> Persona | None:
    return Persona.from_json(json.loads(args.persona_json)) if args.persona_json else None


def agent(args: argparse.Namespace) -> int:
    client = _client(args)
    persona = _persona(args)
    beat = client.heartbeat(managed=True)
    print(f"STANDIN READY agent={client.claims['agent_id']} ok={beat.get('ok')}", flush=True)
    if args.first_prompt:
        match = THREAD_ID.search(args.first_prompt)
        if match:
            _handle(client, match.group(0), os.environ.get("BRIDGE_TRIGGER_ID", "spawn"), args.reply, persona,
                    args.first_prompt)
    for line in _typed_lines():
        envelope = parse_envelope(line)
        if envelope is None:
            print(f"STANDIN IGNORED {line.strip()[:80]}", flush=True)
            continue
        print(f"STANDIN TRIGGER id={envelope['trigger_id']} thread={envelope['thread_id']}", flush=True)
        _handle(client, envelope["thread_id"], envelope["trigger_id"], args.reply, persona, line)
    return 0


def resume(args: argparse.Namespace) -> int:
    if args.fail:
        print("STANDIN RESUME FAILED (asked to)", file=sys.stderr)
        return 1
    client = _client(args)
    match = THREAD_ID.search(args.prompt)
    thread_id = match.group(0) if match else os.environ.get("BRIDGE_THREAD_ID")
    if not thread_id:
        print("STANDIN RESUME no thread id in prompt or BRIDGE_THREAD_ID", file=sys.stderr)
        return 2
    _, acked = client.catch_up(thread_id)
    client.heartbeat(managed=False)
    print(f"STANDIN RESUMED session={args.session_id} thread={thread_id} seq={acked}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="bridge base URL (default $BRIDGE_URL)")
    parser.add_argument("--token-file", default=None, help="file holding the agent's token ($BRIDGE_TOKEN_FILE)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("agent", help="interactive agent reading triggers from its terminal")
    run.add_argument("--reply", default=None, help="post this chat message after each trigger")
    run.add_argument("--first-prompt", default=None, help="a prompt to act on at start (spawned sessions)")
    run.add_argument("--persona-json", default=None,
                     help="act as a scripted reviewer/executioner (bridge.demo.brain) instead of only reading")
    again = commands.add_parser("resume", help="one-shot resume: read and ack the thread named in PROMPT")
    again.add_argument("--fail", action="store_true", help="exit 1 (to exercise the fallback chain)")
    again.add_argument("session_id")
    again.add_argument("prompt")
    args = parser.parse_args(argv)
    return agent(args) if args.command == "agent" else resume(args)


if __name__ == "__main__":
    sys.exit(main())
