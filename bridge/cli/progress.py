"""Progress of the long commands (`ops readiness`, `ops drill`, `ops sli`, `ops reliability`, `db backup`,
`db check`): status rows on a terminal, nothing anywhere else.

A step prints `step i/n: name ...` when it starts and ` ok (3.2s)` when it ends; a loop of many small rounds gets
click's progress bar. Both go to stderr, and only when stderr is a terminal and the command was not asked for
`--json`: stdout carries the result alone, and a pipe, a file, a CI log or a test harness sees no progress at all.

Built on click rather than rich: click is already a dependency and its progress bar does the redrawing a long
loop needs; rich would add a dependency (with its own dependencies) for a handful of status lines.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

import click


def is_terminal(stream: TextIO) -> bool:
    """True when `stream` is a terminal (a closed or replaced stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Step:
    """One running step; set `verdict` (default "ok") before it ends to report something else."""

    name: str
    verdict: str = "ok"


class Progress:
    """Status rows for a command of `total` steps, shown only on a terminal and never with `--json`.

    `enabled` overrides the terminal test (True: always show, False: never)."""

    def __init__(self, total: int, *, as_json: bool = False, enabled: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (not as_json and is_terminal(self.stream)) if enabled is None else enabled
        self.total = total
        self.done = 0

    def note(self, text: str) -> None:
        """A line of its own (e.g. what happens between steps)."""
        if self.enabled:
            click.echo(text, file=self.stream)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """`step i/n: name ... <verdict> (<seconds>s)`; an exception ends the step as "error" and propagates."""
        self.done += 1
        current = Step(name)
        if self.enabled:
            click.echo(f"step {self.done}/{self.total}: {name} ...", file=self.stream, nl=False)
        started = time.monotonic()
        try:
            yield current
        except KeyboardInterrupt:
            self._end("interrupted", started)
            raise
        except BaseException:
            self._end("error", started)
            raise
        self._end(current.verdict, started)

    def _end(self, verdict: str, started: float) -> None:
        if self.enabled:
            click.echo(f" {verdict} ({time.monotonic() - started:.1f}s)", file=self.stream)

    @contextlib.contextmanager
    def bar(self, length: int, label: str) -> Iterator[Callable[[int], None]]:
        """A click progress bar of `length` rounds; yields its `update(n)` (a no-op when progress is not shown)."""
        if not self.enabled:
            yield lambda _n: None
            return
        with click.progressbar(length=length, label=label, file=self.stream, show_pos=True, show_eta=True) as bar:
            yield bar.update
