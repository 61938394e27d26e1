"""A scripted OpenAI Responses API for the real Codex CLI: `POST …/responses` streams what `brain.decide` chooses.

Codex sends the whole conversation on every request (`input`: user messages, its own `function_call`s and their
`function_call_output`s); it is converted to brain `Step`s and answered with one output item, streamed as SSE
(`response.created`, `response.output_item.added`, `response.output_text.delta`, `response.output_item.done`,
`response.completed`). Bridge tools are offered by Codex as a namespace `mcp__bridge`, so a tool call carries
`namespace: "mcp__bridge"` and the bare tool name. Requests that offer no bridge tools (not an agent turn) get a
short text. `GET …/models` is an empty list; other paths are answered 404. The server, request record and tool-call
log are `fake_model.FakeModel`'s.

Run alone: `python -m bridge.demo.fake_openai --persona-json '{"agent_id": "executioner", "role": "executioner"}'`
prints the base URL (for a Codex `[model_providers.x] base_url`, ending in `/v1`) on its first line.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from bridge.demo.brain import Reply, Step, decide
from bridge.demo.fake_model import Answer, FakeModel, json_answer, serve_main, sse_answer

NAMESPACE = "mcp__bridge"
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    """A process-unique id such as `call_17_1712345678901`."""
    return f"{prefix}_{next(_ids)}_{time.time_ns() // 1_000_000}"


def _text_of(content: Any) -> str:
    """The text of a message's content or a tool output (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _bare_name(item: dict[str, Any]) -> str | None:
    """The bridge tool a `function_call` item calls, or None when it is not a bridge tool."""
    name = str(item.get("name", ""))
    if item.get("namespace") == NAMESPACE:
        return name
    for prefix in (f"{NAMESPACE}__", f"{NAMESPACE}."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def _arguments(raw: Any) -> dict[str, Any]:
    """A function call's arguments (a JSON string on the wire) as a dict."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def to_steps(items: list[Any]) -> list[Step]:
    """Responses API `input` items as brain steps (user texts, bridge tool calls and their results)."""
    steps: list[Step] = []
    bridge_calls: set[str] = set()  # call_ids of bridge calls: outputs of other tools are skipped
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and item.get("role") == "user":
            steps.append(Step("user", _text_of(item.get("content"))))
        elif kind == "function_call" and (name := _bare_name(item)) is not None:
            bridge_calls.add(str(item.get("call_id")))
            steps.append(Step("call", name=name, arguments=_arguments(item.get("arguments"))))
        elif kind == "function_call_output" and str(item.get("call_id")) in bridge_calls:
            steps.append(Step("result", _text_of(item.get("output"))))
    return steps


def offers_bridge_tools(body: dict[str, Any]) -> bool:
    """True when the request offers the bridge's MCP tools: an agent turn, not a title or summary request."""
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and (tool.get("name") == NAMESPACE
                                       or str(tool.get("name", "")).startswith(f"{NAMESPACE}__")):
            return True
    return False


def _sample(schema: Any) -> Any:
    """A small value that satisfies a JSON schema's type (strings are a short title)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _sample(props.get(k)) for k in schema.get("required") or []}
    return {"integer": 0, "number": 0, "boolean": False, "array": []}.get(str(kind), "Handle bridge trigger")


def side_text(body: dict[str, Any]) -> str:
    """The answer to a request that is not an agent turn (e.g. Codex's thread title, a JSON schema output)."""
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        return json.dumps(_sample(text_format.get("schema")))
    return "Bridge agent."


def reply_item(reply: Reply) -> dict[str, Any]:
    """The output item for the brain's reply: a namespaced `function_call`, or an assistant message."""
    if reply.tool:
        return {"type": "function_call", "id": _new_id("fc"), "call_id": _new_id("call"), "namespace": NAMESPACE,
                "name": reply.tool, "arguments": json.dumps(reply.arguments), "status": "completed"}
    return {"type": "message", "id": _new_id("msg"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}]}


def sse_events(item: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The event stream of one response holding one output item."""
    response_id = _new_id("resp")
    started = {"type": "response.created",
               "response": {"id": response_id, "object": "response", "status": "in_progress", "model": model}}
    events: list[dict[str, Any]] = [started]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        empty = {**item, "status": "in_progress", "content": []}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": empty})
        events.append({"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                       "content_index": 0, "delta": text})
    else:
        events.append({"type": "response.output_item.added", "output_index": 0,
                       "item": {**item, "status": "in_progress", "arguments": ""}})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120}
    events.append({"type": "response.completed", "response": {"id": response_id, "object": "response",
                                                              "status": "completed", "model": model,
                                                              "output": [item], "usage": usage}})
    return events


class FakeOpenAI(FakeModel):
    """The scripted Responses API for one persona; `.url` is the base URL for Codex's provider `base_url`
    (requests go to `<url>/responses`)."""

    name = "fake_openai"
    base_path = "/v1"

    def route(self, method: str, path: str, body: dict[str, Any]) -> Answer | None:
        """`POST …/responses` streams the brain's answer; `GET …/models` is an empty list."""
        if method == "POST" and path.endswith("/responses"):
            return sse_answer(sse_events(self.answer(body), str(body.get("model", "fake"))))
        if method == "GET" and path.endswith("/models"):
            return json_answer({"object": "list", "data": [], "models": []})
        return None

    def unknown_answer(self, path: str) -> Answer:
        """404, as the real API answers."""
        return json_answer({"error": {"message": f"no such path {path}", "type": "not_found"}}, 404)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The output item for one `/responses` request body; an emitted tool call is logged."""
        if not offers_bridge_tools(body):
            return reply_item(Reply(text=side_text(body)))
        reply = decide(self.persona, to_steps(body.get("input") or []))
        if reply.tool:
            self.log_call(reply.tool, reply.arguments)
        return reply_item(reply)


def main(argv: list[str] | None = None) -> None:
    """Serve one persona in the foreground; the first stdout line is the base URL."""
    serve_main(FakeOpenAI, argv)


if __name__ == "__main__":
    main()
