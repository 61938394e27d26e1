"""A scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI runs a bridge persona offline.

Every `POST /v1/messages` replays the conversation: its `messages` become brain `Step`s, `brain.decide` picks the
next move, and the answer is a `mcp__bridge__<tool>` tool_use or a text block (SSE when `stream` is true, JSON
otherwise). Requests that offer no tools (titles, summaries, quota probes) get a short text. Unknown paths are
answered with `{}`; the server, request record and tool-call log are `fake_model.FakeModel`'s.

    python -m bridge.demo.fake_anthropic --persona-json '{"agent_id": "r", "role": "echo"}' [--port N] [--log F]
"""

from __future__ import annotations

import json
import traceback
import uuid
from typing import Any

from bridge.demo import brain
from bridge.demo.brain import Reply, Step
from bridge.demo.fake_model import Answer, FakeModel, json_answer, serve_main, sse_answer

TOOL_PREFIX = "mcp__bridge__"
NO_TOOLS_TEXT = "Bridge agent session"
SEARCH_TOOL = "ToolSearch"  # Claude Code's loader for deferred tools
USED = ("read_messages", "post_message", "ack_read")  # the bridge tools the brain calls


def block_text(content: Any) -> str:
    """The text of a content value: a string, or a list of blocks whose text blocks are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def to_steps(messages: list[dict[str, Any]]) -> list[Step]:
    """Brain steps from Anthropic messages: user texts, bridge tool calls and their results (`system` entries,
    thinking blocks, and other tools' calls such as ToolSearch with their results are left out)."""
    steps: list[Step] = []
    other_calls: set[str] = set()
    for message in messages:
        role = message.get("role")
        for block in _blocks(message.get("content")):
            kind = block.get("type")
            if role == "user" and kind == "text":
                steps.append(Step("user", block.get("text", "")))
            elif role == "user" and kind == "tool_result" and block.get("tool_use_id") not in other_calls:
                steps.append(Step("result", block_text(block.get("content"))))
            elif role == "assistant" and kind == "tool_use":
                name = str(block.get("name", ""))
                if not name.startswith(TOOL_PREFIX):
                    other_calls.add(str(block.get("id")))
                    continue
                steps.append(Step("call", name=name.removeprefix(TOOL_PREFIX), arguments=block.get("input") or {}))
    return steps


def last_call_name(messages: list[dict[str, Any]]) -> str | None:
    """The name of the latest tool_use in the conversation."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            names = [b.get("name") for b in _blocks(message.get("content")) if b.get("type") == "tool_use"]
            return str(names[-1]) if names else None
    return None


def offered_tools(request: dict[str, Any]) -> set[str]:
    """Names of the tools a request offers."""
    return {str(t.get("name")) for t in request.get("tools") or [] if isinstance(t, dict)}


def content_blocks(reply: Reply) -> tuple[list[dict[str, Any]], str]:
    """The assistant content for a reply whose `tool` is a wire name, and its stop reason."""
    if reply.tool is None:
        return [{"type": "text", "text": reply.text}], "end_turn"
    block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex}", "name": reply.tool, "input": reply.arguments}
    return [block], "tool_use"


def _usage(output_tokens: int) -> dict[str, int]:
    return {"input_tokens": 10, "output_tokens": output_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}


def message_json(blocks: list[dict[str, Any]], stop_reason: str, model: str) -> dict[str, Any]:
    """A non-streaming Messages API response."""
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": None, "usage": _usage(len(blocks) * 10)}


def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    else:
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    return [{"type": "content_block_start", "index": index, "content_block": start},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index}]


def message_events(blocks: list[dict[str, Any]], stop_reason: str, model: str) -> list[dict[str, Any]]:
    """The events of a streaming Messages API response."""
    message = {**message_json([], "", model), "stop_reason": None, "usage": _usage(1)}
    events = [{"type": "message_start", "message": message}]
    for index, block in enumerate(blocks):
        events += _block_events(index, block)
    events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                   "usage": {"output_tokens": len(blocks) * 10}})
    events.append({"type": "message_stop"})
    return events


class FakeAnthropic(FakeModel):
    """The fake API server for one persona; point `ANTHROPIC_BASE_URL` at `.url`."""

    name = "fake_anthropic"

    def route(self, method: str, path: str, body: dict[str, Any]) -> Answer | None:
        """`POST /v1/messages` and `POST /v1/messages/count_tokens`."""
        if method == "POST" and path == "/v1/messages":
            return self.messages(body)
        if method == "POST" and path == "/v1/messages/count_tokens":
            return json_answer({"input_tokens": max(1, len(json.dumps(body)) // 4)})
        return None

    def messages(self, body: dict[str, Any]) -> Answer:
        """The answer to a Messages request; the emitted bridge tool call is logged."""
        try:
            reply = self.reply_for(body)
        except Exception as exc:  # a brain bug must not make the CLI retry forever
            traceback.print_exc()
            reply = Reply(text=f"fake model error: {exc}")
        if reply.tool is not None and reply.tool.startswith(TOOL_PREFIX):
            self.log_call(reply.tool.removeprefix(TOOL_PREFIX), reply.arguments)
        blocks, stop_reason = content_blocks(reply)
        model = str(body.get("model") or "claude-fake")
        if body.get("stream"):
            return sse_answer(message_events(blocks, stop_reason, model))
        return json_answer(message_json(blocks, stop_reason, model))

    def reply_for(self, request: dict[str, Any]) -> Reply:
        """The next move for a Messages request, its `tool` the wire name (a short text when no tools are offered).

        Claude Code may defer MCP tools behind ToolSearch (their names listed, schemas not sent): then the move is
        one `ToolSearch` "select:" call for the bridge tools, and the brain's move once they are offered.
        """
        tools = offered_tools(request)
        if not tools:
            return Reply(text=NO_TOOLS_TEXT)
        messages = request.get("messages") or []
        reply = brain.decide(self.persona, to_steps(messages))
        if reply.tool is None:
            return reply
        name = TOOL_PREFIX + reply.tool
        if name in tools:
            return Reply(tool=name, arguments=reply.arguments)
        if SEARCH_TOOL in tools and last_call_name(messages) != SEARCH_TOOL:
            return Reply(tool=SEARCH_TOOL, arguments={"query": "select:" + ",".join(TOOL_PREFIX + t for t in USED)})
        return Reply(text=f"The bridge tool {reply.tool} is not available in this session.")


def main(argv: list[str] | None = None) -> None:
    """Run a fake API in the foreground; its URL is the first line of output."""
    serve_main(FakeAnthropic, argv)


if __name__ == "__main__":
    main()
