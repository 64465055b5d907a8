"""What a person means by a model name: "smollm2", "the base model", or an exact served id.

Users (and small models acting for them) rarely type `smollm2-135m-instruct`; the tools that
take a model (finetune, evaluate, compare_models, deploy, tune_and_evaluate) resolve the name
against the ids the server serves before handing it to a service, and a name that fits none,
or several, is an observation listing the served ids, so the next call can pick one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tools.base import ToolError

# Words for "the model this server ships with"; they mean the embedded model when it is served.
BASE_ALIASES = frozenset({"base", "default", "embedded", "the base model", "base model", "the default model",
                          "default model", "the embedded model", "embedded model", "the base", "original",
                          "the original model"})
# Names a service understands itself: fine-tunes and their checkpoints (offered on demand, so
# perhaps not listed yet), endpoints (`URL#model`) and model folders.
_PASSED_THROUGH = ("ft:", "http://", "https://", "/", "./", "../", "~")


class UnknownModel(ToolError):
    """No served id fits the name (the message lists the served ids)."""


def resolve_model(name: str, served: Iterable[str], default: str | None) -> str:
    """The served id `name` means: the exact id; else the one id it is a prefix of, or else a
    substring of (case-insensitive; spaces and underscores count as hyphens; among several, the
    one every other extends, as a model's id and its variants' ids do); a base alias
    ("base", "default", "embedded", "the base model") means `default` when it is served.

    Fine-tuned ids (`ft:…`), URLs and paths are returned as given: their services resolve them.
    Raises UnknownModel (a ToolError) naming the served ids when nothing fits, ToolError when
    more than one id does.
    """
    ids = list(dict.fromkeys(served))
    wanted = name.strip()
    if wanted in ids or wanted.startswith(_PASSED_THROUGH) or ("/" in wanted and " " not in wanted):
        return wanted
    key = _key(wanted)
    if key in {_key(alias) for alias in BASE_ALIASES}:
        if default and default in ids:
            return default
        raise ToolError(f"{name!r} means the base model, but no base model is served here; served models: "
                        f"{_listing(ids)}")
    for fits in (lambda served_key: served_key == key, lambda served_key: served_key.startswith(key),
                 lambda served_key: key in served_key):
        found = [model_id for model_id in ids if fits(_key(model_id))] if key else []
        shortest = min(found, key=len, default=None)
        # One that the others extend (smollm2-135m-instruct, not its -tool-use variant) is the one meant.
        if shortest is not None and all(_key(other).startswith(_key(shortest)) for other in found):
            return shortest
        if len(found) > 1:
            raise ToolError(f"{name!r} could mean any of {_listing(found)}; name one of them exactly")
    raise UnknownModel(f"model {name!r} is not served here; served models: {_listing(ids)}")


def served_by_jobs(service: Any) -> list[str] | None:
    """The ids a jobs service's resolver serves (a server's `ServedModels`), or None when it
    cannot say (a bare service, as in the CLI and some tests): then names go through as given."""
    from agentd.jobs.evaluate import ServedModels

    target = getattr(service, "model_target", None)
    if isinstance(target, ServedModels):
        return [*target.specs(), *target.agents()]
    return None


def served_by_deployments(service: Any) -> list[str] | None:
    """The ids a deployments service can deploy by name: its registry's, and the embedded model
    (always deployable, served or not); None without a registry."""
    from pipelines.embedded import EMBEDDED_MODEL_ID

    registry = getattr(service, "registry", None)
    return list(dict.fromkeys([*registry.specs, EMBEDDED_MODEL_ID])) if registry is not None else None


def resolve_if_known(name: str, served: list[str] | None) -> str:
    """`resolve_model` against `served`, the embedded model as the base; `name` as given when
    the served ids are unknown."""
    from pipelines.embedded import EMBEDDED_MODEL_ID

    return name if served is None else resolve_model(name, served, EMBEDDED_MODEL_ID)


def _key(name: str) -> str:
    return "-".join(name.lower().replace("_", " ").replace("-", " ").split())


def _listing(ids: list[str]) -> str:
    return ", ".join(ids) if ids else "none"
