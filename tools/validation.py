"""Argument checks for tools known only by a JSON schema (remote and MCP tools)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from tools.base import ToolArgumentError
from tools.media import File, Image


def check_against_schema(schema: dict[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate before anything leaves this process; media arguments become data: URLs,
    since a file id names a file in *this* server's store, which the remote cannot read."""
    arguments = dict(arguments)
    for key, prop in schema.get("properties", {}).items():
        kind = prop.get("x-agentd-type")
        if kind and key in arguments and not isinstance(arguments[key], (bytes, bytearray)):
            try:
                arguments[key] = (Image if kind == "image" else File).from_value(arguments[key]).to_data_url()
            except ValueError as error:
                raise ToolArgumentError(f"invalid arguments — {key}: {error}") from None
        elif isinstance(arguments.get(key), File):
            arguments[key] = arguments[key].to_data_url()
    validator = jsonschema.Draft202012Validator(schema)
    problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if problems:
        described = "; ".join(f"{'.'.join(map(str, p.absolute_path)) or 'arguments'}: {p.message}" for p in problems)
        raise ToolArgumentError(f"invalid arguments — {described}",
                                errors=[{"loc": list(p.absolute_path), "msg": p.message} for p in problems])
    return arguments

