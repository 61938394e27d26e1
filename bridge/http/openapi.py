"""OpenAPI 3.1 document of every `/v1` command, generated from the pydantic models that validate them."""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

import bridge
from bridge.errors import ERROR_CLASSES
from bridge.services.commands import COMMANDS, Command

REF = "#/components/schemas/{model}"


@functools.cache
def build_openapi() -> dict[str, Any]:
    """The OpenAPI document (a plain dict ready for JSON; built once per process, do not mutate)."""
    models = [(c.input, "validation") for c in COMMANDS.values()] + \
             [(c.output, "serialization") for c in COMMANDS.values()]
    _, schemas = models_json_schema(models, ref_template=REF)
    components = dict(schemas.get("$defs", {}))
    components["ErrorEnvelope"] = {
        "type": "object", "required": ["error", "request_id", "occurred_at"],
        "properties": {
            "error": {"type": "object", "required": ["code", "message", "details"], "properties": {
                "code": {"type": "string", "enum": sorted({e.code for e in ERROR_CLASSES})},
                "message": {"type": "string"}, "details": {"type": "object"}}},
            "request_id": {"type": "string"}, "occurred_at": {"type": "string", "format": "date-time"}},
    }
    paths: dict[str, Any] = {}
    for command in COMMANDS.values():
        paths[f"/v1/mcp/{command.name}"] = {"post": {
            "operationId": command.name, "summary": command.summary, "description": _description(command),
            "security": [{"bearer": []}],
            "requestBody": {"required": _body_required(command), "content": {"application/json": {
                "schema": {"$ref": REF.format(model=command.input.__name__)}}}},
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {
                    "schema": {"$ref": REF.format(model=command.output.__name__)}}}},
                "default": {"description": "Error", "content": {"application/json": {
                    "schema": {"$ref": REF.format(model="ErrorEnvelope")}}}},
            },
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agent bridge", "version": bridge.__version__},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


IDENTITY_HINTS = ("Identity comes from the bearer token; the identity fields ({fields}) only repeat it: each one "
                  "given must equal the token's claim (workspace_id: else 403 WORKSPACE_MISMATCH; the others: else "
                  "403 FORBIDDEN with details.reason claim_mismatch).")


def _description(command: Command) -> str:
    """What the command does (as the MCP tool says it), then the identity-hint rule for its own hint fields."""
    fields = ", ".join(name for name, _ in command.input.claim_fields())
    return f"{command.description}\n\n{IDENTITY_HINTS.format(fields=fields)}"


def _body_required(command: Command) -> bool:
    """A body is required only when the input has a required field: a missing body is read as `{}`."""
    return any(info.is_required() for info in command.input.model_fields.values())
