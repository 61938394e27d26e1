"""The fake model APIs over real HTTP on 127.0.0.1, with requests shaped like Claude Code's and Codex's (no CLI)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from bridge.demo.brain import Persona
from bridge.demo.fake_anthropic import FakeAnthropic
from bridge.demo.fake_openai import FakeOpenAI

PERSONA = Persona(agent_id="echo1", role="echo")
TRIGGER = "[BRIDGE_TRIGGER id=trg_1 thread=thr_abc reason=unread_messages]"
SCHEMA = {"type": "object", "properties": {"thread_id": {"type": "string"}}, "required": ["thread_id"]}


def post(url: str, body: dict[str, Any]) -> tuple[str, str]:
    """POST a JSON body; the answer's content type and text."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def sse(text: str) -> list[dict[str, Any]]:
    """The data of each server-sent event, checking that each is named by its `type`."""
    events = []
    for chunk in text.strip().split("\n\n"):
        name, data = chunk.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def logged(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(line) == {"t", "agent_id", "tool", "arguments"} for line in lines)
    return [{"agent_id": line["agent_id"], "tool": line["tool"], "thread": line["arguments"].get("thread_id")}
            for line in lines]


def anthropic_request(tools: list[str]) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "tools": [{"name": name, "description": name, "input_schema": SCHEMA} for name in tools],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                                      {"type": "text", "text": TRIGGER}]}]}


def openai_request(tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5-codex", "instructions": "You are Codex.", "stream": True, "store": False,
            "tool_choice": "auto", "parallel_tool_calls": False, "tools": tools,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": TRIGGER}]}],
            **extra}


def test_anthropic_streams_a_bridge_tool_call_and_logs_it(tmp_path: Path):
    log = tmp_path / "model.jsonl"
    tools = ["Bash", "mcp__bridge__read_messages", "mcp__bridge__post_message", "mcp__bridge__ack_read"]
    with FakeAnthropic(PERSONA, log_path=log) as fake:
        content_type, text = post(fake.url + "/v1/messages?beta=true", anthropic_request(tools))
    assert content_type == "text/event-stream"
    events = sse(text)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    start = next(e for e in events if e["type"] == "content_block_start")["content_block"]
    delta = next(e for e in events if e["type"] == "content_block_delta")["delta"]
    assert start["type"] == "tool_use" and start["name"] == "mcp__bridge__read_messages"
    assert json.loads(delta["partial_json"])["thread_id"] == "thr_abc"
    assert next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"
    assert logged(log) == [{"agent_id": "echo1", "tool": "read_messages", "thread": "thr_abc"}]
    assert fake.requests == ["POST /v1/messages?beta=true"] and fake.unknown == []


def test_anthropic_answers_a_tool_less_request_with_text(tmp_path: Path):
    log = tmp_path / "model.jsonl"
    with FakeAnthropic(PERSONA, log_path=log) as fake:
        _, text = post(fake.url + "/v1/messages", anthropic_request([]))
    deltas = [e["delta"] for e in sse(text) if e["type"] == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": "Bridge agent session"}]
    assert not log.exists()


def test_openai_streams_a_namespaced_bridge_tool_call_and_logs_it(tmp_path: Path):
    log = tmp_path / "model.jsonl"
    namespace = {"type": "namespace", "name": "mcp__bridge", "description": "bridge tools",
                 "tools": [{"type": "function", "name": name, "description": name, "parameters": SCHEMA}
                           for name in ("read_messages", "post_message", "ack_read")]}
    with FakeOpenAI(PERSONA, log_path=log) as fake:
        assert fake.url.endswith("/v1")
        content_type, text = post(fake.url + "/responses", openai_request([namespace]))
    assert content_type == "text/event-stream"
    events = sse(text)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    item = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert item["type"] == "function_call" and item["namespace"] == "mcp__bridge" and item["name"] == "read_messages"
    assert json.loads(item["arguments"])["thread_id"] == "thr_abc"
    assert logged(log) == [{"agent_id": "echo1", "tool": "read_messages", "thread": "thr_abc"}]


def test_openai_answers_a_tool_less_title_request_with_text(tmp_path: Path):
    log = tmp_path / "model.jsonl"
    title_format = {"type": "json_schema", "name": "title", "strict": True,
                    "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}
    with FakeOpenAI(PERSONA, log_path=log) as fake:
        _, text = post(fake.url + "/responses", openai_request([], text={"format": title_format}))
    item = next(e for e in sse(text) if e["type"] == "response.output_item.done")["item"]
    assert item["type"] == "message" and json.loads(item["content"][0]["text"]) == {"title": "Handle bridge trigger"}
    assert not log.exists()


def test_unknown_paths_are_recorded_and_answered_harmlessly():
    with FakeAnthropic(PERSONA) as claude, FakeOpenAI(PERSONA) as codex:
        assert post(claude.url + "/api/event_logging/batch", {})[1] == "{}"
        with urllib.request.urlopen(codex.url + "/models", timeout=10) as response:
            assert json.loads(response.read())["data"] == []
    assert claude.unknown == ["POST /api/event_logging/batch"] and codex.unknown == []
