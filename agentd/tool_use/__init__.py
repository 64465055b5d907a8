"""The tool-use adapter: a LoRA for the embedded model, made by agentd's own training pipeline
from synthetic agent runs over the tool registry (`python -m agentd.tool_use.build`), shipped in
`adapter/` and used by agents that think with the embedded model unless turned off."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelSpec

ADAPTER_DIR = Path(__file__).parent / "adapter"
TOOL_USE_MODEL_ID = f"{EMBEDDED_MODEL_ID}-tool-use"


@cache
def manifest() -> dict[str, Any] | None:
    """What the shipped adapter was trained on (tools, data, time, seed); None when it is not there."""
    path = ADAPTER_DIR / "manifest.json"
    if not (path.is_file() and (ADAPTER_DIR / "adapter_model.safetensors").is_file()):
        return None
    return json.loads(path.read_text())


def known_tools() -> frozenset[str]:
    """The tools the shipped adapter was trained to call."""
    found = manifest()
    return frozenset(found["tools"]) if found else frozenset()


def tool_use_spec() -> ModelSpec:
    """The embedded model with the adapter merged in, listed as a child of the embedded model."""
    return ModelSpec(id=TOOL_USE_MODEL_ID, kind="embedded", adapter=str(ADAPTER_DIR), parent=EMBEDDED_MODEL_ID)


@cache
def tool_router() -> Any:
    """The router shipped with the adapter (agentd.tool_use.router.ToolRouter), or None."""
    from agentd.tool_use.router import ToolRouter

    return ToolRouter.load(ADAPTER_DIR) if manifest() is not None else None
