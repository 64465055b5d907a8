"""The engines a deployment runs on: the embedded engine (in this process) and a vLLM server process.

A runner owns what its deployment holds (engines, a process, registry entries) and gives all of
it back in `stop`, also after a launch that failed half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agentd.deployments.model import Deployment, DeploymentError
from agentd.deployments.sources import Source
from pipelines.registry import ModelRegistry, ModelSpec

OnEvent = Callable[[str, str], None]


class Runner(Protocol):
    pid: int | None
    url: str | None
    restarts: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def add_adapter(self, adapter_id: str, folder: str) -> None: ...
    async def remove_adapter(self, adapter_id: str) -> None: ...
    def memory_bytes(self) -> int | None: ...


class EmbeddedRunner:
    """The model (and each adapter, merged with PEFT into a copy of it) as engines in this process."""

    pid = url = None
    restarts = 0

    def __init__(self, registry: ModelRegistry, deployment: Deployment, source: Source):
        self._registry, self._source = registry, source
        self._served_id, self._dtype = deployment.served_id, deployment.options.get("dtype")
        self._adapters = dict(deployment.adapters)

    async def start(self) -> None:
        self._registry.add_managed(self._source.spec(self._served_id, dtype=self._dtype))
        for adapter_id, folder in self._adapters.items():
            self._registry.add_managed(self._adapter_spec(adapter_id, folder))
        try:
            for model_id in [self._served_id, *self._adapters]:
                await self._registry.load(model_id)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for model_id in [self._served_id, *self._adapters]:
            await self._registry.remove(model_id)

    async def add_adapter(self, adapter_id: str, folder: str) -> None:
        self._registry.add_managed(self._adapter_spec(adapter_id, folder))
        try:
            await self._registry.load(adapter_id)
        except Exception as error:
            await self._registry.remove(adapter_id)
            raise DeploymentError(f"adapter {adapter_id} failed to load on {self._served_id}: {error}",
                                  param="adapter", code="adapter_load_failed") from error
        self._adapters[adapter_id] = folder

    async def remove_adapter(self, adapter_id: str) -> None:
        self._adapters.pop(adapter_id, None)
        await self._registry.remove(adapter_id)

    def memory_bytes(self) -> int | None:
        sizes = [self._registry.memory_bytes(model_id) for model_id in [self._served_id, *self._adapters]]
        return sum(size for size in sizes if size) if any(size is not None for size in sizes) else None

    def _adapter_spec(self, adapter_id: str, folder: str) -> ModelSpec:
        # The deployment's own weights carry no adapter of theirs here: a fine-tune deployed
        # with adapters on top is refused at create time.
        return self._source.spec(adapter_id, parent=self._served_id, adapter=folder, dtype=self._dtype)


class VLLMRunner:
    """A vLLM OpenAI server process serving the base weights with LoRA adapters unmerged; the
    registry reaches it through the OpenAI-upstream engine, so chat streams pass straight through."""

    def __init__(self, registry: ModelRegistry, deployment: Deployment, source: Source, *, python: Path,
                 log_path: Path, startup_timeout_s: float, on_event: OnEvent):
        from agentd.deployments.vllm import VLLMLaunch, VLLMServer

        self._registry, self._served_id = registry, deployment.served_id
        self._adapters = dict(deployment.adapters)
        # A fine-tune of adapter kind is served as a LoRA module named by its own id, on its base.
        own_lora = {deployment.served_id: source.adapter} if source.adapter else {}
        base = registry.folder_of(ModelSpec(id=deployment.served_id, kind=source.kind, location=source.location))
        options: dict[str, Any] = deployment.options
        launch = VLLMLaunch(
            model_folder=Path(base), served_name=f"{deployment.served_id}@base" if own_lora else deployment.served_id,
            log_path=log_path, dtype=options.get("dtype"), max_model_len=options.get("max_model_len"),
            lora_modules={name: Path(folder) for name, folder in {**own_lora, **self._adapters}.items()},
            engine_args=dict(options.get("engine_args") or {}), startup_timeout_s=startup_timeout_s)
        self.server = VLLMServer(launch, python=python, on_event=on_event)
        self.url = self.server.base_url

    @property
    def pid(self) -> int | None:
        return self.server.pid

    @property
    def restarts(self) -> int:
        return self.server.restarts

    async def start(self) -> None:
        self._registry.add_managed(self._upstream_spec(self._served_id, parent=None))
        for adapter_id in self._adapters:
            self._registry.add_managed(self._upstream_spec(adapter_id, parent=self._served_id))
        try:
            await self.server.start()
            for model_id in [self._served_id, *self._adapters]:
                await self._registry.load(model_id)
        except BaseException:
            await asyncio.shield(self.stop())
            raise

    async def stop(self) -> None:
        for model_id in [self._served_id, *self._adapters]:
            await self._registry.remove(model_id)
        await self.server.stop()

    async def add_adapter(self, adapter_id: str, folder: str) -> None:
        try:
            await self.server.load_adapter(adapter_id, Path(folder))
        except Exception as error:
            raise DeploymentError(f"vLLM refused adapter {adapter_id}: {error}", param="adapter",
                                  code="adapter_load_failed") from error
        self._registry.add_managed(self._upstream_spec(adapter_id, parent=self._served_id))
        await self._registry.load(adapter_id)
        self._adapters[adapter_id] = folder

    async def remove_adapter(self, adapter_id: str) -> None:
        self._adapters.pop(adapter_id, None)
        await self._registry.remove(adapter_id)
        await self.server.unload_adapter(adapter_id)

    def memory_bytes(self) -> int | None:
        return self.server.memory_bytes() if self.server.pid else None

    def _upstream_spec(self, model_id: str, parent: str | None) -> ModelSpec:
        # relay: plain chat goes to vLLM as bytes, without being parsed and re-encoded on the way.
        return ModelSpec(id=model_id, kind="upstream", location=self.url, upstream_model=model_id, parent=parent,
                         relay=True)
