"""Prometheus metrics: one registry per app; counters fed by the event hub, gauges read at scrape."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bridge.services.control import freeze_state
from bridge.services.core import Bridge
from bridge.store import control as control_store
from bridge.store import threads as thread_store
from bridge.store import triggers as trigger_store

disable_created_metrics()  # the *_created series only add noise to a small local service

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StateCollector(Collector):
    """Gauges computed from the database at scrape time, so every process reports the shared truth."""

    def __init__(self, bridge: Bridge, metrics: Metrics):
        self.bridge, self.metrics = bridge, metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        threads = GaugeMetricFamily("bridge_threads", "Threads by status.", labels=["status"])
        counts = self.bridge.store.read(lambda conn: thread_store.count_by_status(conn, self.bridge.workspace))
        for status in ("active", "blocked", "resolved", "closed"):
            threads.add_metric([status], counts.get(status, 0))
        yield threads
        frozen = GaugeMetricFamily("bridge_frozen", "1 when writes are frozen (label mode).", labels=["mode"])
        mode = freeze_state(self.bridge)
        frozen.add_metric([mode or "none"], 1 if mode else 0)
        yield frozen
        jobs = GaugeMetricFamily("bridge_trigger_jobs", "Trigger jobs by status.", labels=["status"])
        by_status = self.bridge.store.read(lambda conn: trigger_store.count_by_status(conn, self.bridge.workspace))
        for status in ("queued", "awaiting_ack", "resume", "spawn", "delivered", "resumed", "spawned", "failed"):
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        tick = GaugeMetricFamily("bridge_worker_last_tick_timestamp_seconds",
                                 "Unix time of the worker's last completed tick (0 when none ran).")
        beat = self.bridge.store.read(lambda conn: control_store.get_flag(conn, "worker_heartbeat"))
        tick.add_metric([], float(beat) if beat else 0.0)
        yield tick
        waiting = GaugeMetricFamily("bridge_long_polls_waiting", "Long-polls waiting now in this process.")
        waiting.add_metric([], self.bridge.waits.held)
        yield waiting


class _Summed(Collector):
    """Every serving process's counters and histograms summed (prometheus-client's multiprocess files); the families
    no process has a sample of yet are declared without samples, so every name is exposed from the first scrape, as
    with one process."""

    def __init__(self, declared: list[Counter | Histogram]):
        self.declared = declared

    def collect(self) -> Iterator[Metric]:
        families = list(MultiProcessCollector(None).collect())
        yield from families
        names = {family.name for family in families}
        for metric in self.declared:
            yield from (family for family in metric.describe() if family.name not in names)


class Metrics:
    """The metric families of one app instance."""

    def __init__(self, bridge: Bridge):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bridge_requests_total", "Requests by command and result code.",
                                ["command", "code"], registry=r)
        self.duration = Histogram("bridge_request_duration_seconds", "Request duration by command.", ["command"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.mcp_requests = Counter("bridge_mcp_requests_total",
                                    "Authenticated POST /mcp messages by JSON-RPC method, protocol version, tool and "
                                    "result code (a tool call also counts in bridge_requests_total as its command).",
                                    ["method", "version", "tool", "code"], registry=r)
        self.long_poll_refused = Counter("bridge_long_poll_refused_total",
                                         "Long-polls answered at once because a wait cap was reached, by reason.",
                                         ["reason"], registry=r)
        self.connections_dropped = Counter("bridge_connections_dropped_total",
                                           "Connections closed before delivering a request: read_timeout (too slow) "
                                           "or evicted (the connection limit made room for a new one).",
                                           ["reason"], registry=r)
        self.posted = Counter("bridge_messages_posted_total", "Messages committed.", registry=r)
        self.post_to_visible = Histogram("bridge_post_to_visible_seconds",
                                         "Commit of a message to its delivery to a long-polling reader.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.escalations = Counter("bridge_escalations_total", "Threads escalated, by reason class.", ["reason"],
                                   registry=r)
        self.loop_guard = Counter("bridge_loop_guard_trips_total", "Loop guard trips by kind.", ["kind"],
                                  registry=r)
        self.auth_failures = Counter("bridge_auth_failures_total", "Refused credentials by reason.", ["reason"],
                                     registry=r)
        self.refusal_audits_suppressed = Counter(
            "bridge_refusal_audits_suppressed_total",
            "Refusals (401/403, refused writes) not written to the audit trail because their actor exceeded its "
            "audit rate, by what the actor is keyed by (agent or address).", ["actor"], registry=r)
        self.trigger_attempts = Counter("bridge_trigger_attempts_total", "Trigger attempts by result.", ["result"],
                                        registry=r)
        self.trigger_dispatch = Histogram("bridge_trigger_dispatch_seconds",
                                          "Message committed (or trigger created) to delivered/resumed/spawned.",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self._declared = [self.requests, self.duration, self.mcp_requests, self.long_poll_refused,
                          self.connections_dropped, self.posted, self.post_to_visible, self.escalations,
                          self.loop_guard, self.auth_failures, self.refusal_audits_suppressed, self.trigger_attempts,
                          self.trigger_dispatch]
        self._state = _StateCollector(bridge, self)
        r.register(self._state)
        bridge.events.subscribe(self.on_event)

    def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Update counters from service events."""
        if name == "message_posted":
            self.posted.inc()
        elif name == "long_poll_refused":
            self.long_poll_refused.labels(reason=fields["reason"]).inc()
        elif name == "message_visible":
            self.post_to_visible.observe(max(0.0, time.time() - _iso_seconds(fields["created_at"])))
        elif name == "escalation":
            self.escalations.labels(reason=reason_class(str(fields["reason"]))).inc()
        elif name == "refusal_audit_suppressed":
            self.refusal_audits_suppressed.labels(actor=fields["actor"]).inc()
        elif name == "loop_guard_trip":
            self.loop_guard.labels(kind=fields["kind"]).inc()
        elif name == "trigger_attempt":
            self.trigger_attempts.labels(result=fields["code"] or fields["outcome"]).inc()
        elif name == "trigger_finished" and fields["status"] != "failed":
            self.trigger_dispatch.observe(max(0.0, time.time() - fields["started_at"] / 1000))

    def render(self) -> bytes:
        """The Prometheus text exposition (with several serving processes: every process's counters summed)."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_Summed(self._declared))
        registry.register(self._state)
        return generate_latest(registry)


def reason_class(reason: str) -> str:
    """A bounded label for an escalation reason: its known prefix, else `manual`."""
    prefix = reason.split(":", 1)[0]
    return prefix if prefix in ("loop_guard", "human_override", "coordinator_override") else "manual"


def _iso_seconds(text: str) -> float:
    from bridge.domain.identifiers import parse_iso

    return parse_iso(text) / 1000
