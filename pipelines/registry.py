"""The models a server offers: specs parsed from the command line, engines loaded in the background."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.embedded import EMBEDDED_MODEL_ID, embedded_model_folder
from pipelines.engine import EngineError, TextEngine

log = logging.getLogger(__name__)
# Engines for local models: transformers' eager forward in our own batching loop, or OpenVINO GenAI's
# continuous-batching pipeline (paged KV cache, prefix caching, chunked prefill) on an IR exported once.
BACKENDS = ("transformers", "openvino")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: Literal["embedded", "local", "upstream"]
    location: str = ""  # a folder for local models, a base URL for upstream ones
    upstream_model: str | None = None
    api_key: str | None = field(default=None, repr=False)  # a bearer key: kept out of logs and reprs
    adapter: str | None = None  # a PEFT adapter folder merged into `location` when loading
    parent: str | None = None  # the base model id an adapter is served on (listed in /v1/models)
    dtype: str | None = None  # overrides the registry's dtype for this model (a deployment's own)
    relay: bool = False  # an upstream this server launched itself: plain chat passes through as bytes
    backend: Literal["transformers", "openvino"] | None = None  # a local model's engine; None: the registry's


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
    """Engines by model id. Loading happens off the event loop; `ready` says when all are up.

    Models added while serving (fine-tunes, their checkpoints) load on first use and do not hold
    up `ready`. `resolve(model_id)`, when set, names the model behind an id not offered yet (it
    may be slow: it runs in a thread). Under `on_demand_memory_mb`, loading one more on-demand
    model first closes the least recently used idle ones: never one a request holds a `lease` on.
    Models a deployment manages (`add_managed`) load when it says (`load`), leave when it says
    (`remove`), never hold up `ready` and are never closed to make room.
    """

    def __init__(self, specs: list[ModelSpec], data_dir: Path, dtype: str = "auto",
                 on_demand_memory_mb: float | None = None, backend: str = "transformers", kv_cache_mb: float = 1024,
                 precision: str = "bf16"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.specs = {spec.id: spec for spec in specs}
        self.engines: dict[str, TextEngine] = {}
        self.failures: dict[str, str] = {}
        self.on_demand: set[str] = set()
        self.managed: set[str] = set()
        self.resolve: Callable[[str], ModelSpec | None] | None = None
        self.on_demand_memory_mb = on_demand_memory_mb
        self._loading: dict[str, asyncio.Task] = {}
        self._last_used: dict[str, float] = {}
        self._sizes: dict[str, int] = {}
        self._leases: dict[str, weakref.WeakSet[Lease]] = {}
        self._room = asyncio.Lock()  # one on-demand load (and the unloading it needs) at a time
        self._data_dir = data_dir
        self._dtype = dtype
        self._backend = backend
        self._kv_cache_mb, self._precision = kv_cache_mb, precision  # the openvino engine's

    @property
    def ready(self) -> bool:
        optional = self.on_demand | self.managed
        startup = [model_id for model_id in self.specs if model_id not in optional]
        return all(model_id in self.engines for model_id in startup) and not self.failures.keys() - optional

    def add(self, spec: ModelSpec) -> None:
        """Offer one more model; it loads on its first request (see `ensure`)."""
        if self.specs.get(spec.id) == spec:
            return
        self.specs[spec.id] = spec
        self.on_demand.add(spec.id)
        self.failures.pop(spec.id, None)

    def add_managed(self, spec: ModelSpec) -> None:
        """Offer a model a deployment manages: requests see 503 "still loading" until `load`.

        It replaces an on-demand entry of the same id (a fine-tune the jobs service offered),
        whose engine, if loaded, the caller closes through `remove` first.
        """
        self.specs[spec.id] = spec
        self.managed.add(spec.id)
        self.on_demand.discard(spec.id)
        self.failures.pop(spec.id, None)

    async def load(self, model_id: str) -> TextEngine:
        """Load a managed model now (off the event loop); the load's exception is raised as is."""
        loading = asyncio.ensure_future(asyncio.to_thread(self._load, self.specs[model_id]))
        try:
            engine = await asyncio.shield(loading)
        except asyncio.CancelledError:
            # The thread cannot be stopped: close the engine it makes, or it would hold its memory.
            loading.add_done_callback(_close_when_loaded)
            raise
        if model_id not in self.specs:  # removed while it loaded
            await engine.close()
            raise EngineError(f"model {model_id} was removed while it loaded", 409, param="model")
        self.engines[model_id], self._sizes[model_id] = engine, _engine_bytes(engine)
        return engine

    async def remove(self, model_id: str) -> None:
        """Stop offering a model and close its engine, if loaded; unknown ids are ignored."""
        self.specs.pop(model_id, None)
        for bookkeeping in (self.on_demand, self.managed):
            bookkeeping.discard(model_id)
        for table in (self.failures, self._last_used, self._sizes):
            table.pop(model_id, None)
        task = self._loading.pop(model_id, None)
        if task is not None:
            task.cancel()
        engine = self.engines.pop(model_id, None)
        if engine is not None:
            await engine.close()

    def last_used(self, model_id: str) -> float | None:
        """Unix time of the last request that leased the model (its start or its end)."""
        return self._last_used.get(model_id)

    def in_use(self, model_id: str) -> bool:
        """Whether a request holds the model now (a lease, or a sequence generating)."""
        return model_id in self.engines and self._in_use(model_id)

    def memory_bytes(self, model_id: str) -> int | None:
        """The bytes of a loaded local engine's parameters; None while not loaded."""
        return self._sizes.get(model_id) if model_id in self.engines else None

    async def ensure(self, model_id: str) -> None:
        """Load an on-demand model now if it is not loaded; concurrent callers share one load.

        An id not offered yet is first looked up with `resolve`; one that stays unknown is left
        for the caller to refuse.
        """
        if model_id in self.specs and model_id not in self.on_demand:
            if model_id in self.engines:
                self._last_used[model_id] = time.time()
            return
        if model_id not in self.engines and model_id not in self.failures and (
                model_id in self.specs or self.resolve is not None):
            task = self._loading.get(model_id)
            if task is None:
                task = self._loading[model_id] = asyncio.create_task(self._load_on_demand(model_id))
            await asyncio.shield(task)
        if model_id in self.engines:
            self._last_used[model_id] = time.time()

    async def lease(self, model_id: str) -> Lease:
        """The engine of `model_id` for one request, loaded if need be (see `ensure`) and kept
        loaded until the lease is released or dropped. EngineError as `engine` raises it."""
        self._check_startup_parent(model_id)
        lease = Lease(self, model_id)
        self._leases.setdefault(model_id, weakref.WeakSet()).add(lease)  # held while loading, too
        try:
            await self.ensure(model_id)
            lease.engine = self.engine(model_id)
        except BaseException:
            lease.release()
            raise
        return lease

    def _check_startup_parent(self, model_id: str) -> None:
        """An adapter served on a start-up model waits for that model's load (EngineError 503 as `engine`
        raises it) rather than loading the same base weights a second time beside it."""
        spec = self.specs.get(model_id)
        parent = spec.parent if spec is not None else None
        if parent in self.specs and parent not in self.on_demand | self.managed:
            self.engine(parent)

    def _in_use(self, model_id: str) -> bool:
        return bool(self._leases.get(model_id)) or self.engines[model_id].active_sequences > 0

    async def _load_on_demand(self, model_id: str) -> None:
        try:
            spec = self.specs.get(model_id)
            if spec is None:
                spec = await asyncio.to_thread(self.resolve, model_id)
                if spec is None:
                    return
                self.add(spec)
            async with self._room:
                await self._make_room(_weights_bytes(self._folder_of(spec)), keep=model_id)
                engine = await asyncio.to_thread(self._load, spec)
                self.engines[model_id], self._sizes[model_id] = engine, _engine_bytes(engine)
                await self._make_room(0, keep=model_id)
        except Exception as error:  # noqa: BLE001 - recorded and reported by /health and the 503
            log.exception("loading %s failed", model_id)
            self.on_demand.add(model_id)
            self.failures[model_id] = str(error)
        finally:
            self._loading.pop(model_id, None)

    async def _make_room(self, needed: int, keep: str) -> None:
        """Close least recently used idle on-demand engines until `needed` more bytes fit the budget.

        Called under `self._room`; a model leased or generating while an earlier one closes is skipped.
        """
        if self.on_demand_memory_mb is None:
            return
        budget = self.on_demand_memory_mb * 2**20
        loaded = [model_id for model_id in self.engines if model_id in self.on_demand]
        used = sum(self._sizes.get(model_id, 0) for model_id in loaded)
        by_age = sorted((model_id for model_id in loaded if model_id != keep and self._sizes.get(model_id)),
                        key=lambda model_id: self._last_used.get(model_id, 0.0))
        for model_id in by_age:
            if used + needed <= budget:
                return
            if model_id not in self.engines or self._in_use(model_id):
                continue
            engine = self.engines.pop(model_id)
            used -= self._sizes.pop(model_id, 0)
            log.info("unloading %s to stay under the on-demand memory budget", model_id)
            await engine.close()
        if used + needed > budget:
            log.warning("on-demand models need %d MiB, over the budget of %g MiB: the others are busy",
                        (used + needed) // 2**20, self.on_demand_memory_mb)

    def _folder_of(self, spec: ModelSpec) -> Path | None:
        if spec.kind == "upstream":
            return None
        return embedded_model_folder(self._data_dir) if spec.kind == "embedded" else Path(spec.location)

    def folder_of(self, spec: ModelSpec) -> Path | None:
        """A spec's weights folder (the embedded model's converted folder for `embedded`); None upstream."""
        return self._folder_of(spec)

    def engine(self, model_id: str) -> TextEngine:
        """The loaded engine; EngineError 503 while it loads or after a failed load, 404 when unknown."""
        if model_id in self.engines:
            return self.engines[model_id]
        if model_id in self.failures:
            raise EngineError(f"model {model_id} failed to load: {self.failures[model_id]}", 503, param="model")
        if model_id in self.specs:
            raise EngineError(f"model {model_id} is still loading; try again shortly", 503, param="model")
        raise EngineError(f"The model `{model_id}` does not exist. Available: {sorted(self.specs)}", 404,
                          param="model", code="model_not_found")

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
        return self._folder_of(spec)

    async def load_all(self) -> None:
        """Loads the start-up models. A snapshot: while it awaits, deployments being recovered and
        the jobs service's fine-tunes add specs of their own (they load themselves)."""
        startup = [spec for spec in list(self.specs.values()) if spec.id not in self.on_demand | self.managed]
        for spec in startup:
            try:
                self.engines[spec.id] = await asyncio.to_thread(self._load, spec)
            except Exception as error:  # noqa: BLE001 - recorded and reported by /health
                log.exception("loading %s failed", spec.id)
                self.failures[spec.id] = str(error)

    def _load(self, spec: ModelSpec) -> TextEngine:
        if spec.kind == "upstream":
            from pipelines.openai_engine import OpenAIUpstreamEngine

            return OpenAIUpstreamEngine(
                spec.id, spec.location, upstream_model=spec.upstream_model, api_key=spec.api_key, relay=spec.relay
            )
        if (spec.backend or self._backend) == "openvino" and not spec.dtype:
            try:
                from pipelines.openvino_engine import OpenVINOEngine

                return OpenVINOEngine(spec.id, self._folder_of(spec), cache_dir=self._data_dir / "openvino",
                                      adapter=spec.adapter, kv_cache_mb=self._kv_cache_mb, precision=self._precision)
            except Exception as error:  # noqa: BLE001 - the server's default engine; named for this model, it fails
                if spec.backend == "openvino":
                    raise
                log.warning("%s: the openvino engine cannot serve it (%s: %s); serving it with transformers",
                            spec.id, type(error).__name__, error)
        from pipelines.transformers_engine import TransformersEngine

        return TransformersEngine(spec.id, self._folder_of(spec), dtype=spec.dtype or self._dtype,
                                  adapter=spec.adapter)

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        for engine in self.engines.values():
            await engine.close()


class Lease:
    """One request's hold on a model: the registry does not unload it to make room while the
    lease is held, that is until `release()` or until nothing refers to the lease any more."""

    def __init__(self, registry: ModelRegistry, model_id: str):
        self._registry, self.model_id = registry, model_id
        self.engine: TextEngine | None = None

    def release(self) -> None:
        leases = self._registry._leases.get(self.model_id)
        if leases is not None and self in leases:
            leases.discard(self)
            if self.model_id in self._registry.engines:  # idle time counts from the end of the request
                self._registry._last_used[self.model_id] = time.time()


def _close_when_loaded(loading: asyncio.Future) -> None:
    if not loading.cancelled() and loading.exception() is None:
        asyncio.ensure_future(loading.result().close())


def _weights_bytes(folder: Path | None) -> int:
    """What a model's weights take on disk: the guess for its memory before it is loaded."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))


def _engine_bytes(engine: TextEngine) -> int:
    """The bytes of a local engine's parameters; 0 for one whose weights live elsewhere (upstream)."""
    model = getattr(engine, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return 0
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
