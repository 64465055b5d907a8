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
    adapter: str | None = None  # a PEFT adapter folder merged into `location` when loading


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
        # Models added while serving (fine-tunes) load on first use; they do not hold up `ready`.
        self.on_demand: set[str] = set()
        self._loading: dict[str, asyncio.Task] = {}
        self._data_dir = data_dir
        self._dtype = dtype

    @property
    def ready(self) -> bool:
        startup = [model_id for model_id in self.specs if model_id not in self.on_demand]
        return all(model_id in self.engines for model_id in startup) and not self.failures.keys() - self.on_demand

    def add(self, spec: ModelSpec) -> None:
        """Offer one more model; it loads on its first request (see `ensure`)."""
        self.specs[spec.id] = spec
        self.on_demand.add(spec.id)
        self.failures.pop(spec.id, None)

    async def ensure(self, model_id: str) -> None:
        """Load an on-demand model now if it is not loaded; concurrent callers share one load."""
        if model_id not in self.on_demand or model_id in self.engines or model_id in self.failures:
            return
        task = self._loading.get(model_id)
        if task is None:
            task = self._loading[model_id] = asyncio.create_task(self._load_recorded(self.specs[model_id]))
        await asyncio.shield(task)

    async def _load_recorded(self, spec: ModelSpec) -> None:
        try:
            self.engines[spec.id] = await asyncio.to_thread(self._load, spec)
        except Exception as error:  # noqa: BLE001 - recorded and reported by /health and the 503
            log.exception("loading %s failed", spec.id)
            self.failures[spec.id] = str(error)
        finally:
            self._loading.pop(spec.id, None)

    def folder(self, model_id: str) -> Path:
        """The weights folder of a local model, for training on it."""
        spec = self.specs.get(model_id)
        if spec is None:
            local = sorted(m for m, s in self.specs.items() if s.kind != "upstream" and not s.adapter)
            raise ValueError(f"model {model_id!r} is not served here; models that can be fine-tuned: {local}")
        if spec.kind == "upstream":
            raise ValueError(f"{model_id} is served by an upstream API; only local models can be fine-tuned")
        if spec.adapter:
            raise ValueError(f"{model_id} is a base model plus an adapter; fine-tune its merged export instead")
        return embedded_model_folder(self._data_dir) if spec.kind == "embedded" else Path(spec.location)

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
        return TransformersEngine(spec.id, folder, dtype=self._dtype, adapter=spec.adapter)

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        for engine in self.engines.values():
            await engine.close()
