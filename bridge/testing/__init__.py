"""The one harness for everything that runs the bridge for real: tests, benchmarks, drills, the SLI, load and
reliability runs, readiness.

- `processes`: child processes (`bridge serve`, `bridge worker`, anything) started with a log file, waited for by
  their READY line, and stopped by PID (SIGTERM, then SIGKILL); `clean_env` drops inherited `BRIDGE_*` settings.
- `tmux`: a private tmux server on its own socket, killed with every pane process it had.
- `stack`: a running stack in one directory: a database, servers and workers, the private tmux, token files,
  stand-in agents in panes, read-only queries; everything it started is stopped on exit.
- `service`: the stack as users run it (worker on, default timings, FULL durability), with evidence of what runs.
- `inprocess`: in-process parts served by waitress in a thread (tests of parts, the in-process load server).
- `client`: a keep-alive HTTP/1.1 client of the `/v1` API (stdlib only, never raises for the network), the common
  calls, and a Prometheus sample reader.
- `database`: reading a database file from outside the bridge (rows, audit rows).
- `postgres`: a throwaway PostgreSQL server in a temp dir (never as root) with fresh databases, stopped by PID.
- `references`: reference implementations optimised code is checked and measured against.
- `tokens`: real signed tokens from a database's own key.
- `human`: a person at the keyboard: a tmux client attached in a pseudo-terminal.
- `stats`: nearest-rank percentiles and their summary.

Standard library and the bridge itself only (no test extras): the ops commands ship with the product and use it.
"""
