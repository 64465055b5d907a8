"""What `model` and `adapters` in a deployment request name: a served model, a fine-tune, a folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentd.deployments.model import DeploymentError
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelRegistry, ModelSpec

Resolve = Callable[[str], ModelSpec | None]


@dataclass(frozen=True)
class Source:
    """Weights to serve: the embedded model or a local folder, with an adapter merged on top or not."""

    kind: str  # "embedded" or "local"
    location: str = ""
    adapter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def spec(self, model_id: str, *, parent: str | None = None, adapter: str | None = None,
             dtype: str | None = None) -> ModelSpec:
        """The registry entry serving these weights as `model_id` (on the embedded engine)."""
        return ModelSpec(id=model_id, kind=self.kind, location=self.location, adapter=adapter or self.adapter,
                         parent=parent, dtype=dtype)


def resolve_model(model: str, registry: ModelRegistry, resolve: Resolve | None) -> tuple[Source, str]:
    """The weights `model` names and the id they are served as by default. Slow for a fine-tune's
    checkpoint (its weights are exported on first use): call it off the event loop."""
    if model == "embedded" or (model == EMBEDDED_MODEL_ID and model not in registry.specs):
        return Source("embedded"), EMBEDDED_MODEL_ID
    spec = registry.specs.get(model)
    if spec is None and model.startswith("ft:") and resolve is not None:
        spec = resolve(model)
    if spec is not None:
        if spec.kind == "upstream":
            raise DeploymentError(f"{model} is served by an upstream API ({spec.location}); there are no weights "
                                  "here to deploy", param="model", code="model_not_deployable")
        return Source(spec.kind, spec.location, spec.adapter), model
    folder = Path(model).expanduser()
    if folder.is_dir():
        return _folder_source(folder), folder.name
    deployable = sorted(model_id for model_id, spec in registry.specs.items()
                        if spec.kind != "upstream" and spec.parent is None)
    raise DeploymentError(f"The model `{model}` does not exist. Deployable: \"embedded\", a served model "
                          f"{deployable}, a fine-tuned model id (ft:...), or a model folder on the server",
                          404, param="model", code="model_not_found")


def _folder_source(folder: Path) -> Source:
    if (folder / "config.json").is_file():
        return Source("local", str(folder.resolve()))
    if (folder / "adapter_config.json").is_file():
        base = _adapter_base(folder)
        if base is None or not (base / "config.json").is_file():
            raise DeploymentError(f"{folder} is an adapter whose base model is not a folder here; deploy the base "
                                  "model and pass this folder in `adapters`", param="model", code="model_not_deployable")
        return Source("local", str(base.resolve()), str(folder.resolve()))
    raise DeploymentError(f"{folder} is not a transformers model folder (no config.json) nor an adapter "
                          "(no adapter_config.json)", param="model", code="model_not_deployable")


def _adapter_base(folder: Path) -> Path | None:
    try:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None
    return Path(base) if base else None


def resolve_adapter(adapter: str | dict[str, Any], registry: ModelRegistry, resolve: Resolve | None,
                    param: str = "adapters") -> tuple[str, str]:
    """(adapter model id, adapter folder) for an `ft:...` id, a folder, or {"name", "path"}."""
    if isinstance(adapter, dict):
        unknown = set(adapter) - {"name", "path"}
        if unknown or not isinstance(adapter.get("path"), str):
            raise DeploymentError(f"an adapter object is {{\"name\": ID, \"path\": FOLDER}}; got {adapter!r}",
                                  param=param, code="invalid_value")
        name = adapter.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise DeploymentError(f"adapter name {name!r} must be a non-empty string", param=param)
        adapter_id, folder = _adapter_folder(adapter["path"], param)
        return name or adapter_id, folder
    if not isinstance(adapter, str) or not adapter:
        raise DeploymentError(f"an adapter is an ft:... id, a folder, or {{\"name\", \"path\"}}; got {adapter!r}",
                              param=param, code="invalid_value")
    spec = registry.specs.get(adapter)
    if spec is None and adapter.startswith("ft:") and resolve is not None:
        spec = resolve(adapter)
    if spec is not None:
        if spec.adapter is None:
            raise DeploymentError(f"{adapter} is a full model, not an adapter; deploy it as a model of its own",
                                  param=param, code="not_an_adapter")
        return adapter, spec.adapter
    return _adapter_folder(adapter, param)


def _adapter_folder(path: str, param: str) -> tuple[str, str]:
    folder = Path(path).expanduser()
    if (folder / "adapter_config.json").is_file():
        return folder.name, str(folder.resolve())
    if (folder / "config.json").is_file():
        raise DeploymentError(f"{folder} is a full model folder, not an adapter; deploy it as a model of its own",
                              param=param, code="not_an_adapter")
    raise DeploymentError(f"adapter {path!r} was not found: give a fine-tuned model id (ft:...) or a PEFT adapter "
                          "folder on the server (with adapter_config.json)", 404, param=param, code="adapter_not_found")
