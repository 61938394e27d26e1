"""The documentation stays true to the code and stands alone.

docs/api.md is the contract the README promises: every command, error code, thread status and transition, and
setting in the code must be in it (its generated part current with `scripts/gen_api_docs.py`). No user-facing text
(README, docs/, runbooks/, benchmarks/README.md, `--help`, the OpenAPI document) may point at a document that is
not in the repository (`SPEC`, `../shared`, `§` section numbers).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from bridge_ops.acceptance import CONTRACT_METRICS

from bridge.cli.main import cli
from bridge.domain.lifecycle import STATUSES, TRANSITIONS
from bridge.errors import ERROR_CLASSES
from bridge.http.openapi import build_openapi
from bridge.services.commands import COMMANDS
from bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
FOREIGN_REFERENCE = re.compile(r"\bSPEC\b|\.\./shared|shared docs|§\s*\d")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api_doc() -> str:
    assert API_DOC.is_file(), "docs/api.md is missing: the README's contract must live in the repository"
    return API_DOC.read_text(encoding="utf-8")


def test_generated_part_is_current(api_doc: str) -> None:
    assert _generator().current(api_doc) == api_doc, "docs/api.md is stale: run scripts/gen_api_docs.py"


def test_every_command_and_field_is_documented(api_doc: str) -> None:
    schemas = build_openapi()["components"]["schemas"]
    for command in COMMANDS.values():
        section = _section(api_doc, f"### `{command.name}`")
        for model in (command.input, command.output):
            for field in schemas[model.__name__]["properties"]:
                assert f"`{field}`" in section, f"{command.name}: field {field} of {model.__name__} not in docs/api.md"


def test_every_error_code_is_documented_with_status_and_exit_code(api_doc: str) -> None:
    for error in ERROR_CLASSES:
        row = f"| `{error.code}` | {error.http_status} | {error.exit_code} |"
        assert row in api_doc, f"error {error.code} ({error.http_status}, exit {error.exit_code}) not in docs/api.md"


def test_every_thread_status_and_transition_is_documented(api_doc: str) -> None:
    for status in STATUSES:
        assert f"`{status}`" in api_doc, f"thread status {status} not in docs/api.md"
    for (frm, to), operation in TRANSITIONS.items():
        assert f"| `{frm}` | `{to}` | {operation} |" in api_doc, f"transition {frm} -> {to} not in docs/api.md"


def test_every_setting_is_documented(api_doc: str) -> None:
    for field in dataclasses.fields(Settings):
        env = field.metadata["env"]
        assert f"| `{env}` |" in api_doc, f"setting {env} not in the settings table of docs/api.md"


def test_every_contract_metric_is_documented(api_doc: str) -> None:
    missing = [name for name in CONTRACT_METRICS if f"`{name}`" not in api_doc]
    assert not missing, f"contract metrics not in docs/api.md: {missing}"


def test_the_readme_points_at_the_repository_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/api.md" in readme


def _console_commands(markdown: str) -> Iterator[str]:
    """Each `$ ` command of the ```console blocks, with its continuation lines joined."""
    for block in re.findall(r"```console\n(.*?)```", markdown, flags=re.DOTALL):
        command: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ ") or (command and command[-1].endswith("\\")):
                command.append(line)
            if command and not command[-1].endswith("\\"):
                yield " ".join(command)
                command = []


def test_readme_curl_lines_use_bridge_url_and_fail_loudly() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    curls = [c for c in _console_commands(readme) if "curl " in c]
    assert curls, "the README shows no curl command"
    for command in curls:
        assert '"$BRIDGE_URL/' in command, f"curl without $BRIDGE_URL: {command}"
        assert re.search(r"curl -f|--fail", command), f"curl that fails silently (use -fsS): {command}"
    assert "localhost:8765" not in readme
    typed = [c for c in _console_commands(readme) if c.startswith("$ bridge ") or "curl " in c]  # not pasted output
    urls = [c for c in typed if "127.0.0.1:8765" in c]
    assert not urls, f"hard-coded bridge address outside `export BRIDGE_URL=`: {urls}"


def _user_facing_documents() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield ROOT / "benchmarks" / "README.md"
    for folder in ("docs", "runbooks"):
        yield from sorted((ROOT / folder).rglob("*.md"))


def test_no_document_points_outside_the_repository() -> None:
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in _user_facing_documents()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if FOREIGN_REFERENCE.search(line)]
    assert not found, "references to a document not in the repository:\n" + "\n".join(found)


def _help_texts(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    with click.Context(command, info_name=" ".join(path)) as ctx:
        yield " ".join(path), command.get_help(ctx)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    yield from _help_texts(sub, (*path, name))


def test_no_help_text_or_api_description_points_outside_the_repository() -> None:
    found = [name for name, text in _help_texts(cli, ("bridge",)) if FOREIGN_REFERENCE.search(text)]
    assert not found, f"--help of {found} points at a document not in the repository"
    openapi = json.dumps(build_openapi(), ensure_ascii=False)
    assert not FOREIGN_REFERENCE.search(openapi), "the OpenAPI document points at a document not in the repository"


def _section(text: str, heading: str) -> str:
    assert heading in text, f"{heading} not in docs/api.md"
    start = text.index(heading) + len(heading)
    end = text.find("\n### ", start)
    return text[start:] if end < 0 else text[start:end]
