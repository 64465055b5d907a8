"""The models a server offers: specs parsed from the command line, engines loaded in the background."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.embedded import EMBEDDED_MODEL_ID, embedded_model_folder
from pipelines.engine import TextEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: Literal["embedded", "local", "upstream"]
    location: str = ""  # a folder for local models, a base URL for upstream ones
    upstream_model: str | None = None
    api_key: str | None = None


def parse_model_spec(text: str) -> ModelSpec:
    """`embedded`, `PATH`, `ID=PATH`, or `ID=http(s)://host/v1[#upstream-model]`."""
    if text == "embedded":
        return ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")
    model_id, sep, location = text.partition("=")
    if not sep:
        location, model_id = text, Path(text).name
    if location.startswith(("http://", "https://")):
        url, _, upstream = location.partition("#")
        return ModelSpec(id=model_id, kind="upstream", location=url, upstream_model=upstream or None)
    if not Path(location, "config.json").is_file():
        raise ValueError(f"{location} is not a transformers model folder (no config.json)")
    return ModelSpec(id=model_id, kind="local", location=location)


class ModelRegistry:
    """Engines by model id. Loading happens off the event loop; `ready` says when all are up."""

    def __init__(self, specs: list[ModelSpec], data_dir: Path, dtype: str = "auto"):
        self.specs = {spec.id: spec for spec in specs}
        self.engines: dict[str, TextEngine] = {}
        self.failures: dict[str, str] = {}
        self._data_dir = data_dir
        self._dtype = dtype

    @property
    def ready(self) -> bool:
        return len(self.engines) + len(self.failures) == len(self.specs) and not self.failures

    async def load_all(self) -> None:
        for spec in self.specs.values():
            try:
                self.engines[spec.id] = await asyncio.to_thread(self._load, spec)
            except Exception as error:  # noqa: BLE001 - recorded and reported by /health
                log.exception("loading %s failed", spec.id)
                self.failures[spec.id] = str(error)

    def _load(self, spec: ModelSpec) -> TextEngine:
        if spec.kind == "upstream":
            from pipelines.openai_engine import OpenAIUpstreamEngine

            return OpenAIUpstreamEngine(
                spec.id, spec.location, upstream_model=spec.upstream_model, api_key=spec.api_key
            )
        from pipelines.transformers_engine import TransformersEngine

        folder = embedded_model_folder(self._data_dir) if spec.kind == "embedded" else spec.location
        return TransformersEngine(spec.id, folder, dtype=self._dtype)

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()
