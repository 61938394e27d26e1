"""Pure rules of the wake pipeline: the §9 decision table, the envelope, staleness, backoff, runtime templates."""

from __future__ import annotations

import json

import pytest

from bridge.domain import wake
from bridge.domain.templates import load_templates, render

NOW = 1_800_000_000_000
HOUR_MS = 3_600_000


def session(**fields):
    base = {"session_id": "s1", "management_mode": "managed", "tmux_target": "%1", "status": "idle",
            "resumable": 1, "last_heartbeat_at": NOW - 1000}
    return {**base, **fields}


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, ("trigger_runtime", "queued", "queued", None)),
    ({"status": "active"}, ("trigger_runtime", "queued", "queued", None)),
    ({"status": "offline"}, ("fallback_required", "fallback_required", "resume", "resume_session")),
    ({"tmux_target": None}, ("fallback_required", "fallback_required", "resume", "resume_session")),
    ({"management_mode": "unmanaged"}, ("fallback_required", "fallback_required", "resume", "resume_session")),
    ({"management_mode": "unmanaged", "resumable": 0},
     ("fallback_required", "fallback_required", "spawn", "spawn_session")),
    ({"last_heartbeat_at": NOW - 13 * HOUR_MS}, ("fallback_required", "fallback_required", "spawn", "spawn_session")),
])
def test_decision_table(fields, expected):
    d = wake.decide(session(**fields), NOW, 12 * 3600)
    assert (d.action, d.result, d.job_status, d.fallback_action) == expected


def test_no_session_spawns_and_is_stale():
    d = wake.decide(None, NOW, 12 * 3600)
    assert (d.job_status, d.fallback_action, d.stale) == ("spawn", "spawn_session", True)


def test_stale_boundary():
    assert not wake.is_stale(session(last_heartbeat_at=NOW - 12 * HOUR_MS), NOW, 12 * 3600)
    assert wake.is_stale(session(last_heartbeat_at=NOW - 12 * HOUR_MS - 1), NOW, 12 * 3600)


def test_envelope_is_one_clean_line_and_round_trips():
    text = wake.envelope("trg_1", "thr_9", "fix pushed", "line one\nline two\x1b[2J\x07\x00 -t other")
    assert "\n" not in text and "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert text.startswith("[BRIDGE_TRIGGER id=trg_1 thread=thr_9 reason=fix_pushed] ")
    assert text.endswith(" [/BRIDGE_TRIGGER]")
    parsed = wake.parse_envelope("noise " + text + " noise")
    assert parsed == {"trigger_id": "trg_1", "thread_id": "thr_9", "reason": "fix_pushed",
                      "prompt": "line one line two [2J -t other"}


def test_envelope_is_capped_at_8_kib_and_keeps_its_closing_tag():
    text = wake.envelope("trg_1", "thr_9", "r", "é" * 100_000)
    assert len(text.encode("utf-8")) <= wake.ENVELOPE_LIMIT
    assert text.endswith("[/BRIDGE_TRIGGER]")
    assert wake.parse_envelope(text) is not None


def test_delivery_backoff_doubles_from_two_seconds():
    assert [wake.delivery_backoff(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_runtime_templates_defaults_and_overrides(tmp_path):
    templates = load_templates(None)
    assert templates["codex"]["resume"] == ["codex", "exec", "resume", "{session_id}", "{prompt}"]
    assert templates["claude"]["spawn"] == ["claude", "-p", "{prompt}"]
    assert templates["generic"] == {"resume": None, "spawn": None}
    path = tmp_path / "rt.json"
    path.write_text(json.dumps({"generic": {"spawn": ["agent", "--prompt", "{prompt}"]}}))
    assert load_templates(str(path))["generic"]["spawn"] == ["agent", "--prompt", "{prompt}"]
    argv = render(["agent", "--prompt", "{prompt}"], {"prompt": "a b; rm -rf / $(x)"})
    assert argv == ["agent", "--prompt", "a b; rm -rf / $(x)"]  # one argument, never split or interpreted


@pytest.mark.parametrize("bad", [[], "codex", {"resume": "codex"}, {"spawn": ["x", "{nope}"]}, {"other": ["x"]}])
def test_malformed_runtime_files_are_refused(tmp_path, bad):
    path = tmp_path / "rt.json"
    path.write_text(json.dumps({"generic": bad}))
    with pytest.raises(ValueError):
        load_templates(str(path))
