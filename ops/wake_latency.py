"""Message-to-wake and message-to-ack latency of the real wake pipeline, over N posts.

    python -m bridge_ops.wake_latency [--iterations 100] [--out report.json]

Starts, in a temporary directory: the bridge (waitress on 127.0.0.1, port 0, `synchronous=FULL`), the supervisor
worker loop, a private tmux server (`tmux -L bridge-wake-<random>`) and a stand-in reviewer agent in a pane that
heartbeats as idle. Each iteration opens a fresh thread (so the trigger storm guard, 10 per thread and agent per
minute, never defers a measurement), has an executioner post to it, and waits until the reviewer's read cursor
reaches that message. Timestamps come from the bridge's own records on one clock: the message's `created_at`
(committed), the `typed` attempt (the envelope typed into the pane: message-to-wake) and the read cursor's
`updated_at` (the stand-in acknowledged: message-to-ack). Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bridge.settings import Settings
from bridge.testing.client import Client, new_thread, post
from bridge.testing.inprocess import waitress_thread
from bridge.testing.processes import HOST
from bridge.testing.stats import summary
from bridge.testing.tmux import private_tmux, socket_name, stop_tmux
from bridge.testing.tokens import Minter
from bridge.wiring import build
from bridge.worker.supervisor import Supervisor


def run_wake_latency(iterations: int = 100, workdir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Measure the pipeline; return the report (latencies in milliseconds)."""
    with tempfile.TemporaryDirectory(prefix="bridge-wake-") as tmp, contextlib.ExitStack() as cleanup:
        root = Path(workdir or tmp)
        tmux = private_tmux(socket_name("bridge-wake"))
        cleanup.callback(stop_tmux, tmux)
        settings = Settings.load({"db": str(root / "bridge.db"), "tmux_socket": tmux.socket_name,
                                  "write_quota_per_min": 0, "loop_guard_turns": 0}, env={})
        parts = build(settings)
        cleanup.callback(parts.close)
        url = f"http://{HOST}:{cleanup.enter_context(waitress_thread(parts))}"
        supervisor = Supervisor(parts.bridge, tmux)
        supervisor.url = url
        stop = threading.Event()
        worker = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        worker.start()
        cleanup.callback(worker.join, timeout=15)
        cleanup.callback(supervisor.nudge.set)
        cleanup.callback(stop.set)
        mint = Minter(parts.key, settings)
        coord = cleanup.enter_context(Client(url, mint("coord", "coordinator")))
        executioner = cleanup.enter_context(Client(url, mint("executioner")))
        token_file = root / "reviewer.token"
        token_file.write_text(mint("reviewer"))
        pane = tmux.new_window(settings.workspace_tmux_session, "reviewer", [
            sys.executable, "-m", "bridge.standin", "--url", url, "--token-file", str(token_file), "agent"])
        tmux.run("set-option", "-t", settings.workspace_tmux_session, "history-limit", "50000")
        if not tmux.wait_for_text(pane, "STANDIN READY", timeout=20):
            raise RuntimeError(f"stand-in did not start: {tmux.capture(pane)}")
        wake_ms, ack_ms, last_trigger = [], [], None
        for i in range(iterations):
            thread_id = new_thread(coord, ["reviewer", "executioner"], f"wake {i}")
            posted = post(executioner, thread_id, f"please re-review #{i}")
            deadline = time.monotonic() + 30
            row: list[Any] = []
            while time.monotonic() < deadline and not row:  # acked, and the worker recorded its typing
                row = parts.bridge.store.read(lambda c, t=thread_id, seq=posted["seq"]: c.execute(
                    "SELECT m.created_at, a.finished_at, r.updated_at, j.trigger_id FROM messages m"
                    " JOIN trigger_jobs j ON j.thread_id = m.thread_id"
                    " JOIN trigger_attempts a ON a.trigger_id = j.trigger_id AND a.outcome = 'typed'"
                    " JOIN read_cursors r ON r.thread_id = m.thread_id AND r.agent_id = 'reviewer'"
                    " WHERE m.thread_id = ? AND m.seq = ? AND r.last_read_seq >= m.seq"
                    " ORDER BY a.attempt_id LIMIT 1", (t, seq)).fetchall())
                if not row:
                    time.sleep(0.001)
            if not row:
                raise RuntimeError(f"iteration {i}: no ack within 30 s")
            created, typed, acked, last_trigger = row[0]
            wake_ms.append(typed - created)
            ack_ms.append(acked - created)
            if progress:
                print(f"\r{i + 1}/{iterations} wake {typed - created} ms ack {acked - created} ms",
                      end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        visible = tmux.wait_for_text(pane, f"STANDIN ACKED trigger={last_trigger}", timeout=5)
        return {"iterations": iterations, "message_to_wake_ms": summary(wake_ms),
                "message_to_ack_ms": summary(ack_ms), "last_envelope_visible_in_pane": visible,
                "synchronous": settings.synchronous, "worker_poll_s": settings.worker_poll}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_ops.wake_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run_wake_latency(args.iterations, progress=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
