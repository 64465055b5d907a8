"""The fine-tune job: parameters from the store → `training.train` → a new model recorded as the result."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentd.jobs.hyperparameters import (MAX_MICRO_BATCH, chosen_automatically, describe_choice,
                                         resolve_hyperparameters)
from agentd.jobs.store import FAILED, QUEUED, SUCCEEDED, VALIDATING, Job, JobStore
from agentd.jobs.worker import Reporter
from pipelines.registry import ModelSpec
from training import Callbacks, DataError, TrainingConfig, load_examples, parse_file, train

KIND = "fine_tune"
# OpenAI's hyperparameters, then agentd's own (any TrainingConfig field, `method` lora/qlora/full).
_OPENAI_KEYS = {"n_epochs": "epochs", "batch_size": "batch_size"}
# Paths on the server are not a client's to name (init_adapter: the adapter build's second stage).
_OWN_KEYS = set(TrainingConfig.model_fields) - {"base_model", "train_files", "validation_files", "output_dir", "seed",
                                                "init_adapter"}
BASE_LEARNING_RATE = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}


class FineTuneRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def training_params(base_model_dir: Path, train_files: list[Path], validation_files: list[Path],
                    hyperparameters: dict[str, Any] | None, seed: int | None, *, n_examples: int) -> dict[str, Any]:
    """Validated TrainingConfig fields (all but output_dir) from OpenAI-style hyperparameters, "auto"
    ones chosen for `n_examples` training examples (see agentd.jobs.hyperparameters)."""
    fields: dict[str, Any] = {"base_model": str(base_model_dir), "train_files": [str(p) for p in train_files],
                              "validation_files": [str(p) for p in validation_files]}
    if seed is not None:
        fields["seed"] = seed
    method = (hyperparameters or {}).get("method", "lora")
    resolved = resolve_hyperparameters(hyperparameters, n_examples, method if isinstance(method, str) else "lora")
    multiplier = None
    for key, value in resolved.items():
        if value == "auto":  # an own field's "auto" (bf16) is its default
            continue
        if key == "learning_rate_multiplier":
            multiplier = value
        elif key in _OPENAI_KEYS:
            fields[_OPENAI_KEYS[key]] = value
        elif key in _OWN_KEYS:
            fields[key] = value
        else:
            raise FineTuneRequestError(f"unknown hyperparameter {key!r}; known: n_epochs, batch_size, "
                                       f"learning_rate_multiplier, {', '.join(sorted(_OWN_KEYS))}",
                                       param=f"hyperparameters.{key}")
    if "batch_size" in chosen_automatically(hyperparameters) and "gradient_accumulation_steps" not in fields:
        fields.update(_accumulated(fields["batch_size"]))
    # An unknown method gets a placeholder rate here; TrainingConfig then refuses the method by name.
    base_rate = BASE_LEARNING_RATE.get(fields.get("method", "lora"), BASE_LEARNING_RATE["lora"])
    if multiplier is not None:
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier <= 0:
            raise FineTuneRequestError("learning_rate_multiplier must be a positive number or \"auto\"",
                                       param="hyperparameters.learning_rate_multiplier")
        fields["learning_rate"] = fields.get("learning_rate") or base_rate * multiplier
    elif "learning_rate" not in fields:
        fields["learning_rate"] = base_rate
    try:
        config = TrainingConfig(**fields, output_dir=Path("unused"))
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise FineTuneRequestError(f"{name}: {first['msg']}", param=f"hyperparameters.{name}") from None
    return config.model_dump(mode="json", exclude={"output_dir"})


def _accumulated(batch_size: int) -> dict[str, int]:
    """An automatic batch as micro-batches of at most MAX_MICRO_BATCH with gradient accumulation:
    the same examples per update without holding hundreds of sequences in memory at once."""
    steps = math.ceil(batch_size / MAX_MICRO_BATCH)
    return {"batch_size": math.ceil(batch_size / steps), "gradient_accumulation_steps": steps}


def openai_hyperparameters(training: dict[str, Any]) -> dict[str, Any]:
    """A job's training configuration as OpenAI shows it: n_epochs, batch_size (examples per update,
    micro-batches × accumulation), learning_rate_multiplier (of the method's default rate)."""
    epochs = training["epochs"]
    multiplier = training["learning_rate"] / BASE_LEARNING_RATE[training["method"]]
    return {"n_epochs": int(epochs) if float(epochs).is_integer() else epochs,
            "batch_size": training["batch_size"] * training["gradient_accumulation_steps"],
            "learning_rate_multiplier": round(multiplier, 6)}


def count_examples(paths: list[Path]) -> int:
    """How many examples the files hold as `training.parse_file` reads them (a .txt file is one, a
    JSONL file one per non-blank line), without parsing them: cheap enough to choose the "auto"
    hyperparameters when the job is created; the full check of every record runs afterwards."""
    total = 0
    for path in paths:
        try:
            if path.name.endswith(".txt"):
                total += path.is_file()
                continue
            with path.open("rb") as lines:
                total += sum(1 for line in lines if line.strip())
        except OSError:
            continue  # a missing or unreadable file fails the job's validation, which says why
    return total


def validate_upload(data: bytes, filename: str) -> None:
    """A `fine-tune` upload: JSONL records only (raw text goes as `{"text": ...}` lines)."""
    if not filename.endswith((".jsonl", ".json")) and not data.lstrip().startswith(b"{"):
        raise ValueError("fine-tune files are JSONL (one JSON object per line); send raw text as "
                         '{"text": ...} records')
    parse_file(data, filename)


def validate_files(store: JobStore, job_id: str) -> None:
    """Parse every record once (slow for big files: run it off the event loop)."""
    job = store.get(job_id)
    training = job.params["training"]
    try:
        load_examples(training["train_files"] + training["validation_files"])
    except DataError as error:
        store.finish(job_id, FAILED, error={"code": "invalid_training_file", "message": str(error),
                                            "param": "training_file"}, message=f"file validation failed: {error}")
        return
    chosen = job.params.get("hyperparameters") or {}
    # Said before the job queues, so it is the first thing a client following the job reads about training.
    shown = openai_hyperparameters(training)
    store.add_event(job_id, describe_choice(shown, chosen.get("auto", []), chosen.get("n_examples", 0)),
                    data={"hyperparameters": shown, **chosen})
    store.transition(job_id, VALIDATING, QUEUED, "files validated; the job is queued")


def fine_tuned_model_id(base: str, job_id: str, suffix: str | None) -> str:
    """OpenAI's shape: `ft:BASE:ORG:SUFFIX:ID`."""
    return f"ft:{base}:agentd:{suffix or ''}:{job_id.rsplit('-', 1)[-1][:8]}"


def checkpoint_model_id(job: Job, step: int) -> str:
    """OpenAI's shape for a checkpoint, `ft:BASE:ORG:SUFFIX:ID:ckpt-step-N`; served like the final model."""
    return f"{fine_tuned_model_id(job.params['model'], job.id, job.params.get('suffix'))}:ckpt-step-{step}"


# Which job (first hex digits of its id) and, for a checkpoint, which step a model id names.
_MODEL_ID = re.compile(r"ft:.+:(?P<short>[0-9a-f]{8})(?::ckpt-step-(?P<step>\d+))?")


def parse_model_id(model_id: str) -> tuple[str, int | None] | None:
    """(job id prefix, checkpoint step or None) for a fine-tuned model id; None for any other id."""
    match = _MODEL_ID.fullmatch(model_id)
    if match is None:
        return None
    return f"ftjob-{match['short']}", int(match["step"]) if match["step"] else None


def fine_tuned_spec(job: Job) -> ModelSpec | None:
    """The model a succeeded fine-tune job serves: its merged folder, or its base plus the adapter."""
    result = job.result or {}
    if job.kind != KIND or job.status != SUCCEEDED or not result.get("fine_tuned_model"):
        return None
    if result.get("model_dir"):
        return ModelSpec(id=result["fine_tuned_model"], kind="local", location=result["model_dir"])
    return ModelSpec(id=result["fine_tuned_model"], kind="local", location=result["base_model_dir"],
                     adapter=result["adapter_dir"])


def checkpoint_spec(job: Job, step: int, checkpoint: Path) -> ModelSpec:
    """The model checkpoint `step` serves. A checkpoint holds only what resuming needs, so its
    weights are written once as an adapter (lora) or a model folder (full) beside it: slow, call
    it off the event loop."""
    training = job.params["training"]
    servable = checkpoint / "servable"
    if not servable.is_dir():
        _export_checkpoint(TrainingConfig(**training, output_dir=checkpoint.parent.parent), checkpoint, servable)
    model_id = checkpoint_model_id(job, step)
    if training["method"] == "full":
        return ModelSpec(id=model_id, kind="local", location=str(servable))
    return ModelSpec(id=model_id, kind="local", location=training["base_model"], adapter=str(servable))


def _export_checkpoint(config: TrainingConfig, checkpoint: Path, out: Path) -> None:
    from safetensors.torch import load_file

    from training.model import WeightedCausalLMLoss, load_model, load_tokenizer

    state = checkpoint / "trainable.safetensors"
    if not state.is_file():
        raise ValueError(f"checkpoint {checkpoint.name} has no single-file weights (a DeepSpeed checkpoint?); "
                         "serve the job's final model instead")
    model = load_model(config)
    # The same wrapper training saved from, so the parameter names match.
    loaded = WeightedCausalLMLoss(model).load_state_dict(load_file(state), strict=False)
    if loaded.unexpected_keys:
        raise ValueError(f"checkpoint {checkpoint.name} does not match its base model "
                         f"(unexpected {loaded.unexpected_keys[:3]})")
    staging = Path(tempfile.mkdtemp(prefix=".servable-", dir=checkpoint))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(config).save_pretrained(staging)
        with contextlib.suppress(OSError):  # another request exported it meanwhile: keep theirs
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _JobCallbacks(Callbacks):
    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_message(self, text: str) -> None:
        self.reporter.message(text)

    def on_step(self, report: dict[str, Any]) -> None:
        data = {"step": report["step"], "train_loss": report["loss"], "learning_rate": report["learning_rate"],
                "grad_norm": report["grad_norm"], "tokens": report["tokens"],
                "tokens_per_second": report["tokens_per_second"], "epoch": report["epoch"]}
        if "valid_loss" in report:
            data["valid_loss"] = report["valid_loss"]
        self.reporter.metrics(report["step"], data,
                              f"Step {report['step']}/{report['total_steps']}: training loss={report['loss']:.4f}")
        self.reporter.progress({key: report[key] for key in
                                ("step", "total_steps", "loss", "tokens_per_second", "eta_seconds", "epoch")})

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        store, job_id = self.reporter.store, self.reporter.job.id
        for known in store.checkpoints(job_id):
            if not Path(known["path"]).exists():  # pruned by keep-last-N
                store.drop_checkpoint(job_id, known["path"])
        store.add_checkpoint(job_id, step, str(path), {"step": step, **metrics})
        self.reporter.message(f"checkpoint at step {step}")

    def should_stop(self) -> bool:
        return self.reporter.stop_requested()


def run(job: Job, reporter: Reporter) -> dict[str, Any] | None:
    params = job.params
    config = TrainingConfig(**params["training"], output_dir=reporter.job_dir / "output")
    outcome = train(config, _JobCallbacks(reporter))
    if outcome.stopped:
        return None
    store = reporter.store
    model_dir = outcome.merged_dir or (outcome.final_dir if config.method == "full" else None)
    adapter = outcome.final_dir if config.method != "full" else None
    for name, location in (("adapter", adapter), ("model", model_dir)):
        if location is not None:
            store.add_artifact(job.id, name, "folder", str(location))
    result_file = _results_file(reporter, outcome.history)
    store.add_artifact(job.id, "step_metrics.csv", "file", result_file)
    return {"fine_tuned_model": fine_tuned_model_id(params["model"], job.id, params.get("suffix")),
            "base_model": params["model"],
            "base_model_dir": str(config.base_model), "adapter_dir": str(adapter) if adapter else None,
            "model_dir": str(model_dir) if model_dir else None, "trained_tokens": outcome.trained_tokens,
            "steps": outcome.steps, "final_loss": outcome.final_loss, "valid_loss": outcome.valid_loss,
            "result_files": [result_file]}


def _results_file(reporter: Reporter, history: list[dict[str, Any]]) -> str:
    """The loss curve as OpenAI's step_metrics.csv, stored as a file the client can download."""
    from tools.files import FileStore

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "train_loss", "valid_loss", "learning_rate", "tokens_per_second"])
    for entry in history:
        writer.writerow([entry["step"], entry["loss"], entry.get("valid_loss", ""), entry["learning_rate"],
                         entry["tokens_per_second"]])
    store = FileStore(reporter.data_dir / "files")
    try:
        return store.put(buffer.getvalue().encode(), "step_metrics.csv", purpose="fine-tune-results").id
    finally:
        store.close()
