"""`bridge serve` (HTTP API and supervisor worker in one process) and `bridge worker` (the worker alone)."""

from __future__ import annotations

import sys

import click

from bridge import logs
from bridge.cli.common import load_settings, opened
from bridge.cli.output import fail
from bridge.doctor import LISTEN_ERRORS, bind_problem, bind_reason
from bridge.domain.vocabulary import Reason
from bridge.errors import Unavailable


@click.command()
@click.option("--host", default=None, help="Bind address [env BRIDGE_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env BRIDGE_PORT; default 8765; 0 picks one].")
@click.option("--db", default=None, help="Database file [env BRIDGE_DB; default ./bridge.db].")
@click.option("--workspace", default=None, help="Workspace served [env BRIDGE_WORKSPACE; default: default].")
@click.option("--synchronous", default=None, help="FULL or NORMAL [env BRIDGE_SYNCHRONOUS; default FULL].")
@click.option("--threads", type=int, default=None,
              help="HTTP worker threads per process [env BRIDGE_THREADS; default 32].")
@click.option("--processes", type=int, default=None,
              help="Serving processes on the one port and database [env BRIDGE_PROCESSES; default one per two "
                   "cores, at most 4].")
@click.option("--jwks-file", default=None, help="Also accept tokens signed by keys in this JWKS file.")
@click.option("--jwks-url", default=None, help="Also accept tokens signed by keys served at this https JWKS URL.")
@click.option("--jwks-ca-file", default=None, help="CA bundle to trust for --jwks-url (private issuers).")
@click.option("--issuer", default=None, help="Expected iss claim [env BRIDGE_ISSUER; default bridge-local].")
@click.option("--audience", default=None, help="Expected aud claim [env BRIDGE_AUDIENCE; default bridge].")
@click.option("--worker/--no-worker", "with_worker", default=True, show_default=True,
              help="Run the supervisor worker in this process.")
@click.option("--host-id", default=None,
              help="The host this runs on: its worker wakes only runtimes registered here [env BRIDGE_HOST_ID; "
                   "default: the machine's host name].")
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@click.option("--runtimes-file", default=None, help="JSON runtime adapters [env BRIDGE_RUNTIMES_FILE].")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR [env BRIDGE_LOG_LEVEL].")
def serve(with_worker: bool, **flags: object) -> None:
    """Run the HTTP API on 127.0.0.1:8765 (and the worker) with zero configuration."""
    settings = load_settings(**flags)
    logs.configure(settings.log_level)
    if settings.port and (problem := bind_problem(settings.host, settings.port)) is not None:
        details = {"reason": Reason.CANNOT_LISTEN, "host": settings.host, "port": settings.port}
        fail(Unavailable(problem, details), False)

    def announce(host: str, port: int) -> None:
        click.echo(f"bridge {settings.workspace!r} listening on http://{host}:{port} (db {settings.location}, "
                   f"{processes} process{'es' if processes > 1 else ''})", err=True)
        click.echo(f"mint a token: bridge token issue --db {settings.db} --url http://{host}:{port} "
                   "--agent-id <agent> --role participant", err=True)
        click.echo(f"READY http://{host}:{port}", err=True)

    processes = settings.serve_processes
    try:
        with opened(settings, as_json=False, create=True) as parts:  # creates or migrates the database (or says why)
            if processes == 1:
                from bridge.http.server import serve_forever

                serve_forever(parts, with_worker=with_worker,
                              on_start=lambda server: announce(server.effective_host, server.effective_port))
                return
        from bridge.http.processes import serve_processes  # closed above: nothing open crosses the fork

        sys.exit(serve_processes(settings, processes, with_worker=with_worker, on_start=announce))
    except OSError as exc:  # the port was taken between the probe and the bind
        if exc.errno not in LISTEN_ERRORS:
            raise
        fail(Unavailable(bind_reason(settings.host, settings.port, exc), {"reason": Reason.CANNOT_LISTEN}), False)


@click.command()
@click.option("--db", default=None, help="Database file [env BRIDGE_DB; default ./bridge.db].")
@click.option("--workspace", default=None, help="Workspace [env BRIDGE_WORKSPACE; default: default].")
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@click.option("--runtimes-file", default=None, help="JSON runtime adapters [env BRIDGE_RUNTIMES_FILE].")
@click.option("--host", default=None, help="Where the API listens (given to spawned agents) [env BRIDGE_HOST].")
@click.option("--port", type=int, default=None, help="The API's port (given to spawned agents) [env BRIDGE_PORT].")
@click.option("--host-id", default=None,
              help="The host this runs on: its worker wakes only runtimes registered here [env BRIDGE_HOST_ID; "
                   "default: the machine's host name].")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR [env BRIDGE_LOG_LEVEL].")
def worker(**flags: object) -> None:
    """Run the supervisor worker alone (wakes agents; several processes may share the database)."""
    import signal
    import threading

    from bridge.worker.supervisor import Supervisor

    settings = load_settings(**flags)
    logs.configure(settings.log_level)
    stop = threading.Event()
    with opened(settings, as_json=False) as parts:
        supervisor = Supervisor(parts.bridge)

        def handle(signum: int, frame: object) -> None:
            stop.set()
            supervisor.nudge.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        click.echo(f"READY worker {supervisor.worker_id} on host {supervisor.host} (db {settings.location})", err=True)
        supervisor.run(stop)
