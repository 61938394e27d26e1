"""Runtime adapters as data: each kind names its resume and spawn argv templates.

Templates are lists of strings with `{session_id}`, `{prompt}`, `{agent_id}`, `{thread_id}`, `{trigger_id}`
placeholders, rendered per argument (a placeholder's value is one argument, never split, never a shell). A JSON
file (`--runtimes-file` / `BRIDGE_RUNTIMES_FILE`) overrides or adds kinds, e.g.
`{"generic": {"resume": ["my-agent", "--resume", "{session_id}", "{prompt}"], "spawn": ["my-agent", "{prompt}"]}}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Formatter

PLACEHOLDERS = frozenset({"session_id", "prompt", "agent_id", "thread_id", "trigger_id"})

DEFAULT_TEMPLATES: dict[str, dict[str, list[str] | None]] = {
    "codex": {"resume": ["codex", "exec", "resume", "{session_id}", "{prompt}"],
              "spawn": ["codex", "exec", "{prompt}"]},
    "claude": {"resume": ["claude", "-p", "--resume", "{session_id}", "{prompt}"],
               "spawn": ["claude", "-p", "{prompt}"]},
    "generic": {"resume": None, "spawn": None},
}


def load_templates(path: str | None) -> dict[str, dict[str, list[str] | None]]:
    """Built-in templates overlaid with a JSON file's; raise ValueError on a malformed file."""
    templates = {kind: dict(entry) for kind, entry in DEFAULT_TEMPLATES.items()}
    if path is None:
        return templates
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("runtimes file must hold an object of kinds")
    for kind, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"resume", "spawn"}:
            raise ValueError(f"runtime {kind!r}: expected an object with 'resume' and/or 'spawn'")
        for step, argv in entry.items():
            if argv is not None:
                _check_template(kind, step, argv)
        templates.setdefault(kind, {"resume": None, "spawn": None}).update(entry)
    return templates


def _check_template(kind: str, step: str, argv: object) -> None:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"runtime {kind!r} {step}: expected a non-empty list of strings")
    for arg in argv:
        for _, name, _, _ in Formatter().parse(arg):
            if name is not None and name not in PLACEHOLDERS:
                raise ValueError(f"runtime {kind!r} {step}: unknown placeholder {{{name}}}")


def render(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill placeholders argument by argument."""
    return [arg.format_map({k: values.get(k, "") for k in PLACEHOLDERS}) for arg in template]
