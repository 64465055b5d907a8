"""Models under test: local weights through the embedded engine, or any OpenAI-compatible endpoint.

`open_model(target)` turns a target dict (what the jobs service resolves a model id to) into an
`EvalModel`. Both kinds answer the four request types; their log-likelihoods follow
lm-evaluation-harness (its hf backend for local weights, its `local-completions` model for
endpoints), so scores can be compared with the harness's.
"""

from __future__ import annotations

import os
from typing import Any

from evaluation.endpoint_model import EndpointModel
from evaluation.local_model import LocalModel, rolling_windows, weights_fingerprint
from evaluation.requests import EvalModel, EvaluationError

__all__ = ["EndpointModel", "LocalModel", "open_model", "rolling_windows", "weights_fingerprint"]


def open_model(target: dict[str, Any]) -> EvalModel:
    """`{"type": "local", "id", "path", "adapter"?, "dtype"?, "chat_template"?}` or
    `{"type": "endpoint", "id", "base_url", "model", "api_key_env"?, "chat"?}`.

    Secrets never travel in the dict: `api_key_env` names the environment variable holding the key.
    """
    if not isinstance(target, dict):
        raise EvaluationError(f"a model target is a dict, not {type(target).__name__}", param="model")
    kind = target.get("type")
    if kind == "local":
        _require(target, "id", "path")
        return LocalModel.load(
            target["id"],
            target["path"],
            adapter=target.get("adapter"),
            dtype=target.get("dtype") or "auto",
            chat_template=target.get("chat_template"),  # None: the model's own template, if it has one
        )
    if kind == "given":  # the data carries the outputs (an Evals API jsonl run): nothing to ask
        from evaluation.openai_evals import GivenOutputs

        return GivenOutputs(target.get("id") or "given-outputs")
    if kind == "endpoint":
        _require(target, "id", "base_url", "model")
        api_key = None
        if target.get("api_key_env"):
            api_key = os.environ.get(target["api_key_env"])
            if not api_key:
                raise EvaluationError(
                    f"model {target['id']}: the environment variable {target['api_key_env']} "
                    "holding its API key is not set",
                    param="model",
                )
        return EndpointModel(
            target["base_url"], target["model"], api_key=api_key, chat=bool(target.get("chat", False)),
            model_id=target["id"],
        )
    raise EvaluationError(f"unknown model target type {kind!r}; use 'local', 'endpoint' or 'given'", param="model")


def _require(target: dict[str, Any], *keys: str) -> None:
    missing = [key for key in keys if not target.get(key)]
    if missing:
        raise EvaluationError(
            f"a {target.get('type')} model target needs {', '.join(missing)}", param="model"
        )
