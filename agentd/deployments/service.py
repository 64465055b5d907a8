"""The deployments service: one front for deploying, following, changing and undeploying served models.

The HTTP routes, the agents' `deploy` tools and the CLI (through HTTP) all go through it. Each
deployment is a row in SQLite before anything relies on it; its engine runs in a `Runner`
(`runners.py`) that a background task launches, so `create` answers at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from agentd.deployments.model import (ENGINES, LIVE, TERMINAL, Deployment, DeploymentError, EngineName,
                                      parse_keep_alive)
from agentd.deployments.runners import EmbeddedRunner, Runner, VLLMRunner
from agentd.deployments.sources import Source, resolve_adapter, resolve_model
from agentd.deployments.store import DeploymentStore
from pipelines.registry import ModelRegistry, ModelSpec

log = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")


class DeploymentService:
    """Deployments recorded under `data_dir`, served through `registry`.

    `resolve` names the model behind a fine-tuned id (`ft:...`); `vllm_python` is the Python of
    the vLLM venv (None: found as `agentd.deployments.vllm.find_vllm_python` says); idle
    deployments are checked against their keep_alive every `check_s` seconds.
    """

    def __init__(self, data_dir: Path, registry: ModelRegistry, *, resolve: Callable[[str], ModelSpec | None] | None = None,
                 vllm_python: Path | None = None, vllm_startup_timeout_s: float = 900.0, check_s: float = 5.0):
        self.data_dir, self.registry, self.resolve = Path(data_dir), registry, resolve
        self.store = DeploymentStore(self.data_dir / "deployments.sqlite")
        self.vllm_python, self.vllm_startup_timeout_s, self.check_s = vllm_python, vllm_startup_timeout_s, check_s
        self._runners: dict[str, Runner] = {}
        self._launches: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._expiry: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Brings back what a stopped server was serving, and starts unloading idle deployments."""
        self._loop = asyncio.get_running_loop()
        for deployment in self.store.list(LIVE):
            if deployment.pid is not None:  # a server killed outright leaves its vLLM behind: free it first
                from agentd.deployments.vllm import reap_orphan

                await asyncio.to_thread(reap_orphan, deployment.pid)
            self.store.update(deployment.id, status="pending",
                              event=("recovering", "the server restarted: launching it again"))
            self._launch(deployment.id, recovered=True)
        self._expiry = asyncio.create_task(self._expire_idle())

    async def close(self) -> None:
        """Stops every engine and process, leaving the records as they are for the next `start`."""
        tasks = [task for task in [self._expiry, *self._launches.values()] if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for deployment_id in list(self._runners):
            try:
                await self._runners.pop(deployment_id).stop()
            except Exception:  # noqa: BLE001 - one that will not stop must not keep the others running
                log.exception("stopping deployment %s at shutdown failed", deployment_id)
            # Its process is gone: a pid left in the record could name someone else's by the next start.
            self.store.update(deployment_id, pid=None)
        self.store.close()

    # -- creating ---------------------------------------------------------------------------

    async def create(self, *, model: str, engine: str = "auto", name: str | None = None,
                     adapters: Sequence[str | dict] = (), dtype: str | None = None, max_model_len: int | None = None,
                     keep_alive: float | str | None = None, engine_args: dict | None = None) -> Deployment:
        """A `pending` deployment launching in the background (`wait` or `follow` it).

        Raises DeploymentError (400 a bad field, 404 an unknown model or adapter, 409 an id
        already served) before anything is recorded.
        """
        self._loop = asyncio.get_running_loop()
        if not isinstance(model, str) or not model.strip():
            raise DeploymentError("model must name a served model, a fine-tuned model id or a model folder",
                                  param="model")
        if engine not in ENGINES:
            raise DeploymentError(f"engine {engine!r} is not one of {list(ENGINES)}", param="engine",
                                  code="invalid_value")
        keep_alive_s = parse_keep_alive(keep_alive)
        options = _options(dtype, max_model_len, engine_args)
        if name is not None and (not isinstance(name, str) or not name.strip() or name != name.strip()):
            raise DeploymentError(f"name {name!r} must be a non-empty model id without surrounding spaces",
                                  param="name")
        if isinstance(adapters, (str, dict)):
            raise DeploymentError("adapters is a list", param="adapters")
        source, default_id = await asyncio.to_thread(resolve_model, model, self.registry, self.resolve)
        pairs = [await asyncio.to_thread(resolve_adapter, adapter, self.registry, self.resolve, f"adapters[{index}]")
                 for index, adapter in enumerate(adapters)]
        engine_name = self._choose_engine(engine)
        if pairs and source.adapter and engine_name == "embedded":
            raise DeploymentError(f"{model} is itself a base model plus an adapter; on the embedded engine adapters "
                                  "go on a base model: deploy the base with these adapters", param="adapters")
        served_id = name or default_id
        self._check_free([served_id, *(adapter_id for adapter_id, _ in pairs)],
                         "name" if name else "model")
        now = int(time.time())
        deployment = self.store.create(Deployment(
            id="", model=model, served_id=served_id, engine=engine_name, status="pending", adapters=dict(pairs),
            options=options, keep_alive_s=keep_alive_s, created_at=now, updated_at=now, source=source.to_dict()))
        self._launch(deployment.id)
        return self.get(deployment.id)

    def _choose_engine(self, engine: str) -> EngineName:
        """vLLM when asked, or for "auto" when a CUDA GPU and a vLLM venv are both there."""
        if engine == "embedded":
            return "embedded"
        try:
            from agentd.deployments.vllm import VLLMUnavailable, cuda_available, find_vllm_python
        except ImportError as error:
            if engine == "vllm":
                raise DeploymentError(f"vLLM deployments are not available in this build ({error})",
                                      param="engine", code="vllm_unavailable") from None
            return "embedded"
        if engine == "auto" and not cuda_available():
            return "embedded"
        try:
            find_vllm_python(self.vllm_python)
        except VLLMUnavailable as error:
            if engine == "auto":
                return "embedded"
            raise DeploymentError(str(error), param="engine", code="vllm_unavailable") from None
        return "vllm"

    def _check_free(self, model_ids: list[str], param: str) -> None:
        from agentd.agents.runtime import AGENT_TYPES

        seen: set[str] = set()
        for model_id in model_ids:
            if model_id in seen:
                raise DeploymentError(f"{model_id} is named twice in this deployment", param="adapters")
            seen.add(model_id)
            owner = next((d for d in self.store.list(LIVE) if model_id in d.model_ids), None)
            # An on-demand entry (a fine-tune the jobs service offers) is taken over by the deployment.
            startup = model_id in self.registry.specs and model_id not in self.registry.on_demand
            if owner is not None or startup or model_id in AGENT_TYPES:
                by = f"deployment {owner.id}" if owner else "this server's own models"
                raise DeploymentError(f"{model_id} is already served (by {by}); pass `name` to serve it under "
                                      "another id, or undeploy the other first", 409, param=param,
                                      code="model_already_served")

    # -- launching --------------------------------------------------------------------------

    def _launch(self, deployment_id: str, *, recovered: bool = False) -> None:
        self._launches[deployment_id] = asyncio.create_task(self._run_launch(deployment_id, recovered))

    async def _run_launch(self, deployment_id: str, recovered: bool) -> None:
        try:
            deployment = self.store.get(deployment_id)
            self._set(deployment_id, status="loading", error=None,
                      event=("loading", f"loading {deployment.model} on the {deployment.engine} engine"))
            for model_id in deployment.model_ids:
                if model_id in self.registry.on_demand:
                    await self.registry.remove(model_id)
            try:
                runner = self._runner(deployment)
                self._runners[deployment_id] = runner
                await runner.start()
            except asyncio.CancelledError:
                self._runners.pop(deployment_id, None)
                raise
            except Exception as error:  # noqa: BLE001 - the launch's outcome, recorded for the client
                log.warning("deployment %s failed to launch: %s", deployment_id, error)
                self._runners.pop(deployment_id, None)
                self._set(deployment_id, status="failed", error=str(error), pid=None,
                          event=("failed", f"launch failed: {error}"))
                return
            self._set(deployment_id, status="ready", pid=runner.pid, url=runner.url, restarts=runner.restarts,
                      event=("ready", f"{', '.join(deployment.model_ids)} ready on the {deployment.engine} engine"
                                      + (" (after a server restart)" if recovered else "")))
        finally:
            self._launches.pop(deployment_id, None)
            self._notify()

    def _runner(self, deployment: Deployment) -> Runner:
        source = Source(**deployment.source)
        if deployment.engine == "embedded":
            return EmbeddedRunner(self.registry, deployment, source)
        from agentd.deployments.vllm import find_vllm_python

        log_path = self.data_dir / "deployments" / deployment.id / "vllm.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return VLLMRunner(self.registry, deployment, source, python=find_vllm_python(self.vllm_python),
                          log_path=log_path, startup_timeout_s=self.vllm_startup_timeout_s,
                          on_event=lambda kind, message: self._from_vllm(deployment.id, kind, message))

    def _from_vllm(self, deployment_id: str, kind: str, message: str) -> None:
        """A vLLM server's own event: log lines and launches recorded, its watchdog's verdicts applied."""
        loop = self._loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop and loop is not None:
            loop.call_soon_threadsafe(self._from_vllm, deployment_id, kind, message)
            return
        launching = deployment_id in self._launches
        runner = self._runners.get(deployment_id)
        if kind == "crashed":
            self._set(deployment_id, status="loading", event=("crashed", message))
        elif kind == "ready" and not launching and runner is not None:  # back up after a crash
            self._set(deployment_id, status="ready", pid=runner.pid, restarts=runner.restarts,
                      event=("ready", f"restarted: {message}"))
        elif kind == "failed" and not launching:  # the watchdog gave up restarting it
            asyncio.ensure_future(self._fail(deployment_id, message))
        elif kind == "spawned" and runner is not None:
            # Recorded at once, not when ready: an agentd killed while vLLM loads reaps it on its next start.
            self._set(deployment_id, pid=runner.pid, event=("spawned", message))
        elif kind in ("launching", "log", "restarting"):
            self.store.add_event(deployment_id, kind, message)
            self._notify()

    async def _fail(self, deployment_id: str, reason: str) -> None:
        async with self._lock(deployment_id):
            if self.store.get(deployment_id).status == "stopped":
                return  # undeployed meanwhile: the watchdog's verdict no longer applies
            runner = self._runners.pop(deployment_id, None)
            if runner is not None:
                await runner.stop()
            self._set(deployment_id, status="failed", error=reason, pid=None, event=("failed", reason))

    # -- reading ----------------------------------------------------------------------------

    def get(self, deployment_id: str) -> Deployment:
        """The deployment with its live figures (memory, last use); DeploymentError 404 if unknown."""
        return self._with_live_figures(self.store.get(deployment_id))

    def list(self, *, include_stopped: bool = False) -> list[Deployment]:
        statuses = () if include_stopped else (*LIVE, "failed")
        return [self._with_live_figures(deployment) for deployment in self.store.list(statuses)]

    def _with_live_figures(self, deployment: Deployment) -> Deployment:
        used = [at for at in map(self.registry.last_used, deployment.model_ids) if at is not None]
        deployment.last_used_at = max(used, default=None)
        runner = self._runners.get(deployment.id)
        if runner is not None and deployment.status in LIVE:
            deployment.memory_bytes = runner.memory_bytes()
            deployment.pid, deployment.restarts = runner.pid, runner.restarts
        return deployment

    def parent_of(self, model_id: str) -> str | None:
        """The base model an adapter is served on (for /v1/models); None for a model of its own."""
        spec = self.registry.specs.get(model_id)
        return spec.parent if spec is not None else None

    async def wait(self, deployment_id: str, timeout: float | None = None) -> Deployment:
        """The deployment once ready, failed or stopped; as it is then when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wake = self._wake
            deployment = self.get(deployment_id)
            if deployment.status in TERMINAL and deployment_id not in self._launches:
                return deployment
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return deployment
            try:
                await asyncio.wait_for(wake.wait(), min(left or 1.0, 1.0))
            except TimeoutError:
                pass

    def events(self, deployment_id: str, after: int = 0) -> list[dict[str, Any]]:
        self.store.get(deployment_id)  # 404 for an unknown id
        return self.store.events(deployment_id, after)

    async def follow(self, deployment_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Recorded events after `after`, then new ones as they come, until a terminal status."""
        while True:
            wake = self._wake
            # Status first: the event recorded with a terminal status is then always in the batch read next.
            finished = self.store.get(deployment_id).status in TERMINAL and deployment_id not in self._launches
            for event in self.store.events(deployment_id, after):
                after = event["seq"]
                yield event
            if finished:
                return
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except TimeoutError:
                pass

    # -- changing ---------------------------------------------------------------------------

    async def delete(self, deployment_id: str) -> Deployment:
        """Unloads it (kills its process group), frees its ids; the record stays, `stopped`."""
        deployment = self.store.get(deployment_id)
        if deployment.status == "stopped":
            return self.get(deployment_id)
        async with self._lock(deployment_id):
            task = self._launches.get(deployment_id)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            runner = self._runners.pop(deployment_id, None)
            if runner is not None:
                await runner.stop()
            return self._set(deployment_id, status="stopped", pid=None, event=("stopped", "undeployed"))

    async def add_adapter(self, deployment_id: str, adapter: str | dict) -> Deployment:
        """Loads one more adapter on a ready deployment: `ft:...` id, folder path, or {"name", "path"}."""
        async with self._lock(deployment_id):
            deployment = self._ready(deployment_id)
            if deployment.source.get("adapter") and deployment.engine == "embedded":
                raise DeploymentError(f"{deployment.model} is itself a base model plus an adapter; on the embedded "
                                      "engine adapters go on a base model", param="adapter")
            adapter_id, folder = await asyncio.to_thread(resolve_adapter, adapter, self.registry, self.resolve,
                                                         "adapter")
            self._check_free([adapter_id], "adapter")
            if adapter_id in self.registry.on_demand:
                await self.registry.remove(adapter_id)
            await self._runners[deployment_id].add_adapter(adapter_id, folder)
            return self._set(deployment_id, adapters={**deployment.adapters, adapter_id: folder},
                             event=("adapter_added", f"adapter {adapter_id} added ({folder})"),
                             event_data={"adapter": adapter_id})

    async def remove_adapter(self, deployment_id: str, adapter_id: str) -> Deployment:
        async with self._lock(deployment_id):
            deployment = self.store.get(deployment_id)
            if adapter_id not in deployment.adapters:
                raise DeploymentError(f"deployment {deployment_id} has no adapter {adapter_id!r}; it has "
                                      f"{sorted(deployment.adapters)}", 404, param="adapter_id",
                                      code="adapter_not_found")
            if deployment.status == "stopped":
                raise DeploymentError(f"deployment {deployment_id} is stopped", 409, code="deployment_stopped")
            if deployment.status in ("pending", "loading"):  # its runner is loading this adapter, or restarting
                raise DeploymentError(f"deployment {deployment_id} is {deployment.status}; adapters can be removed "
                                      "once it is ready (or undeploy it)", 409, code="deployment_not_ready")
            runner, note = self._runners.get(deployment_id), ""
            if runner is not None:
                from agentd.deployments.vllm import VLLMError

                try:
                    await runner.remove_adapter(adapter_id)
                except VLLMError as error:  # agentd routes nothing to it any more, nor serves it after a restart
                    note = f" (vLLM did not unload it: {error})"
            adapters = {key: value for key, value in deployment.adapters.items() if key != adapter_id}
            return self._set(deployment_id, adapters=adapters, event=("adapter_removed",
                                                                      f"adapter {adapter_id} removed{note}"),
                             event_data={"adapter": adapter_id})

    def _ready(self, deployment_id: str) -> Deployment:
        deployment = self.store.get(deployment_id)
        if deployment.status != "ready" or deployment_id not in self._runners:
            raise DeploymentError(f"deployment {deployment_id} is {deployment.status}; adapters can be added "
                                  "once it is ready", 409, code="deployment_not_ready")
        return deployment

    # -- keep_alive -------------------------------------------------------------------------

    async def _expire_idle(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            for deployment in self.store.list(("ready",)):
                try:
                    await self._expire_if_idle(deployment.id)
                except Exception:  # noqa: BLE001 - one deployment's trouble must not stop the others' expiry
                    log.exception("checking deployment %s for expiry failed", deployment.id)

    async def _expire_if_idle(self, deployment_id: str) -> None:
        deployment = self.get(deployment_id)
        expires_at = deployment.expires_at()
        if expires_at is None or time.time() < expires_at or deployment_id in self._launches:
            return
        if any(self.registry.in_use(model_id) for model_id in deployment.model_ids):
            return
        async with self._lock(deployment_id):
            if self.store.get(deployment_id).status not in LIVE:
                return  # undeployed (or failed) while the lock was waited for
            runner = self._runners.pop(deployment_id, None)
            if runner is not None:
                await runner.stop()
            self._set(deployment_id, status="stopped", pid=None, event=(
                "expired", f"unloaded after {deployment.keep_alive_s:g} s without a request (keep_alive)"))

    # -- helpers ----------------------------------------------------------------------------

    def _set(self, deployment_id: str, *, event: tuple[str, str] | None = None,
             event_data: dict[str, Any] | None = None, **fields: Any) -> Deployment:
        self.store.update(deployment_id, event=event, event_data=event_data, **fields)
        self._notify()
        return self.get(deployment_id)

    def _notify(self) -> None:
        """Wakes every waiter and follower; each then reads what changed from the store."""
        self._wake.set()
        self._wake = asyncio.Event()

    def _lock(self, deployment_id: str) -> asyncio.Lock:
        return self._locks.setdefault(deployment_id, asyncio.Lock())


def _options(dtype: str | None, max_model_len: int | None, engine_args: dict | None) -> dict[str, Any]:
    if dtype is not None and dtype not in _DTYPES:
        raise DeploymentError(f"dtype {dtype!r} is not one of {list(_DTYPES)}", param="dtype", code="invalid_value")
    if max_model_len is not None and (isinstance(max_model_len, bool) or not isinstance(max_model_len, int)
                                      or max_model_len < 1):
        raise DeploymentError(f"max_model_len {max_model_len!r} must be a positive integer", param="max_model_len",
                              code="invalid_value")
    if engine_args is not None and not isinstance(engine_args, dict):
        raise DeploymentError("engine_args is an object of vLLM flags, e.g. {\"enforce_eager\": true}",
                              param="engine_args")
    try:  # bad flag names, and keys agentd sets itself (model, port, host…), refused now, not at launch
        from agentd.deployments.vllm import engine_flags

        engine_flags(dict(engine_args or {}))
    except ValueError as error:
        raise DeploymentError(str(error), param="engine_args", code="invalid_value") from None
    return {"dtype": dtype, "max_model_len": max_model_len, "engine_args": dict(engine_args or {})}
