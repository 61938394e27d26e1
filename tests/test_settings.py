"""Configuration: flags > environment > defaults; invalid settings fail fast, all listed."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.settings import Settings, parse_duration, parse_size


def test_defaults_match_the_contract():
    s = Settings.load({}, env={})
    assert (s.host, s.port, s.db, s.workspace, s.synchronous) == ("127.0.0.1", 8765, "./bridge.db", "default", "FULL")
    assert (s.token_max_ttl, s.token_leeway) == (86400, 5)
    assert (s.max_body, s.max_header) == (256 * 1024, 16 * 1024)
    assert (s.write_quota_per_min, s.write_burst) == (120, 30)
    assert (s.loop_guard_turns, s.loop_guard_repeats) == (20, 3)
    assert (s.worker_poll, s.worker_lease, s.ack_timeout, s.delivery_retries) == (5, 30, 8, 2)
    assert (s.quiet_window, s.defer_recheck, s.max_defer) == (20, 5, 60)
    assert (s.resume_attempts, s.session_stale, s.trigger_rate_per_min, s.command_timeout) == (2, 43200, 10, 120)


def test_the_defaults_that_once_lived_in_the_code_are_unchanged():
    s = Settings.load({}, env={})
    assert s.token_ttl == 8 * 3600
    assert (s.refusal_audits_per_min, s.refusal_audit_burst) == (60, 20)
    assert (s.write_batch, s.commit_poll, s.storage_probe_interval, s.eviction_log_interval) == (128, 0.005, 1, 60)
    assert (s.worker_tick_gap, s.worker_claim_batch, s.worker_jobs_per_tick) == (0.01, 16, 256)
    assert (s.ack_recheck, s.busy_recheck, s.launch_settle) == (0.2, 0.5, 1)
    assert (s.crash_loop_failures, s.crash_loop_window) == (3, 15 * 60)


def test_new_tunables_are_validated():
    env = {"BRIDGE_TOKEN_TTL": "0s", "BRIDGE_REFUSAL_AUDIT_BURST": "-1", "BRIDGE_WRITE_BATCH": "0",
           "BRIDGE_WORKER_CLAIM_BATCH": "0", "BRIDGE_COMMIT_POLL": "0", "BRIDGE_ACK_RECHECK": "2m",
           "BRIDGE_CRASH_LOOP_FAILURES": "0"}
    with pytest.raises(ConfigError) as info:
        Settings.load({}, env=env)
    problems = "\n".join(info.value.details["problems"])
    for name in ("token ttl", "refusal_audit_burst", "write_batch", "worker_claim_batch", "commit_poll",
                 "ack_recheck", "crash_loop_failures"):
        assert name in problems
    assert len(info.value.details["problems"]) == len(env)
    tuned = Settings.load({}, env={"BRIDGE_ACK_RECHECK": "50ms", "BRIDGE_CRASH_LOOP_WINDOW": "5m"})
    assert (tuned.ack_recheck, tuned.crash_loop_window) == (0.05, 300)


def test_flags_beat_environment_beat_defaults():
    env = {"BRIDGE_PORT": "9000", "BRIDGE_WORKSPACE": "team-a", "BRIDGE_ACK_TIMEOUT": "500ms"}
    s = Settings.load({"port": 9100}, env=env)
    assert s.port == 9100
    assert s.workspace == "team-a"
    assert s.ack_timeout == 0.5


def test_every_bad_setting_is_listed():
    env = {"BRIDGE_PORT": "http", "BRIDGE_SYNCHRONOUS": "OFF", "BRIDGE_TOKEN_LEEWAY": "30s",
           "BRIDGE_WORKSPACE": "no spaces"}
    with pytest.raises(ConfigError) as info:
        Settings.load({}, env=env)
    problems = "\n".join(info.value.details["problems"])
    for name in ("BRIDGE_PORT", "BRIDGE_SYNCHRONOUS", "leeway", "workspace"):
        assert name in problems
    assert len(info.value.details["problems"]) == 4


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("20s", 20), ("8h", 28800), ("2m", 120), ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "five", "-1s", "1w"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes():
    assert parse_size("256KiB") == 262144
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("lots")


def test_data_dir_sits_next_to_the_database(tmp_path):
    s = Settings.load({"db": str(tmp_path / "x" / "team.db")}, env={})
    assert s.data_dir == tmp_path / "x" / "team.data"
