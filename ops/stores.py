"""Both stores side by side in one run: the same measurements on a SQLite file and on PostgreSQL.

For each store: `bridge_ops.load` (post p50/p95 at 1 client, posts/s and p99 at 8 clients next to `/health`, with
one and with two serving processes) and `bridge_ops.sli` (long-poll post-to-visible and message-to-wake through
tmux stand-ins). PostgreSQL is a throwaway durable server this command starts in a temporary directory (fsync on,
as a real one), one fresh database per measurement; `--postgres URL` uses an existing server's database instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
from bridge_ops.load import LoadConfig, run_load
from bridge_ops.report import publish
from bridge_ops.sli import run_sli

from bridge.cli.progress import Progress
from bridge.domain.location import redacted
from bridge.testing.postgres import PostgresServer

STORES = ("sqlite", "postgresql")


@contextlib.contextmanager
def databases(postgres: str | None) -> Iterator[Callable[[str], str]]:
    """`fresh(store)`: a new database of that store for one measurement (a file name in the run's temporary
    directory, or a PostgreSQL URL)."""
    if postgres is not None:
        yield lambda store: postgres if store == "postgresql" else "bridge.db"
        return
    with PostgresServer(durable=True) as server:
        yield lambda store: server.create_database() if store == "postgresql" else "bridge.db"


def _row(results: list[dict[str, Any]], scenario: str, clients: int) -> dict[str, Any]:
    return next((r for r in results if r["scenario"] == scenario and r["clients"] == clients), {})


def run_stores(*, seconds: float = 5.0, repeat: int = 3, sli_iterations: int = 50, postgres: str | None = None,
               on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure both stores; the report has one row per store and the raw reports under `runs`."""
    started = time.time()
    rows, runs = [], []
    with databases(postgres) as fresh:
        for store in STORES:
            row: dict[str, Any] = {"store": store}
            for processes in (1, 2):
                if on_step:
                    on_step(f"{store}: load with {processes} serving process(es)")
                load = run_load(LoadConfig(clients=[1, 8], seconds=seconds, repeat=repeat,
                                           scenarios=("health", "post"), db=fresh(store),
                                           serve_args=(f"--processes={processes}",)))
                runs.append({"store": store, "kind": "load", "processes": processes, "report": load})
                one, eight = _row(load["results"], "post", 1), _row(load["results"], "post", 8)
                if processes == 1:
                    row.update(post1_p50_ms=one.get("p50_ms"), post1_p95_ms=one.get("p95_ms"),
                               post8_rps=eight.get("rps"), post8_vs_health=eight.get("vs_health"),
                               post8_p99_ms=eight.get("p99_ms"))
                else:
                    row.update(post8_rps_2proc=eight.get("rps"))
            if on_step:
                on_step(f"{store}: service levels ({sli_iterations} iterations)")
            sli = run_sli(sli_iterations, db=fresh(store))
            runs.append({"store": store, "kind": "sli", "report": sli})
            for name in ("post_to_visible", "message_to_wake"):
                measured = sli["sli"][f"{name}_ms"]
                row.update({f"{name}_p50_ms": measured["p50"], f"{name}_p95_ms": measured["p95"]})
            rows.append(row)
    return {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": round(time.time() - started, 1), "seconds": seconds, "repeat": repeat,
            "sli_iterations": sli_iterations,
            "postgresql": redacted(postgres) if postgres else "throwaway durable server (fsync on)",
            "rows": rows, "runs": runs}


COLUMNS = (("post@1 p50", "post1_p50_ms"), ("post@1 p95", "post1_p95_ms"), ("post@8 /s", "post8_rps"),
           ("vs health", "post8_vs_health"), ("post@8 p99", "post8_p99_ms"), ("@8 2 procs /s", "post8_rps_2proc"),
           ("visible p50", "post_to_visible_p50_ms"), ("visible p95", "post_to_visible_p95_ms"),
           ("wake p50", "message_to_wake_p50_ms"), ("wake p95", "message_to_wake_p95_ms"))


def format_table(report: dict[str, Any]) -> str:
    """One line per store (times in ms)."""
    header = f"{'store':<12}" + "".join(f"{title:>14}" for title, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in report["rows"]:
        lines.append(f"{row['store']:<12}" + "".join(
            f"{'-' if row.get(key) is None else row[key]:>14}" for _, key in COLUMNS))
    lines.append(f"load: {report['seconds']} s per level, median of {report['repeat']} rounds; service levels: "
                 f"{report['sli_iterations']} iterations; PostgreSQL: {report['postgresql']}; "
                 f"{report['duration_s']} s in all")
    return "\n".join(lines)


@click.command("stores")
@click.option("--seconds", type=click.FloatRange(0.5, 120), default=5.0, show_default=True,
              help="Duration of each load level.")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Load rounds per store (medians are reported).")
@click.option("--sli-iterations", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="Service-level rounds per store (post-to-visible, message-to-wake).")
@click.option("--postgres", default=None, metavar="URL",
              help="Measure this PostgreSQL database (empty is best) instead of a throwaway server's.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the JSON report to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def stores(seconds: float, repeat: int, sli_iterations: int, postgres: str | None, out: str | None,
           as_json: bool) -> None:
    """SQLite and PostgreSQL side by side in one run: post latency and throughput, post-to-visible, message-to-wake.

    Exit 0 with the table, 4 when a stack or the PostgreSQL server could not start."""
    progress = Progress(2 * len(STORES) + len(STORES), as_json=as_json)
    try:
        report = run_stores(seconds=seconds, repeat=repeat, sli_iterations=sli_iterations, postgres=postgres,
                            on_step=lambda step: progress.note(step))
    except RuntimeError as exc:
        click.echo(f"error: could not start what the measurement needs: {exc}", err=True)
        sys.exit(4)
    publish(report, format_table(report), as_json=as_json, out=out)
