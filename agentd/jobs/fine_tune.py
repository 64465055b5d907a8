"""The fine-tune job: parameters from the store → `training.train` → a new model recorded as the result."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentd.jobs.store import FAILED, QUEUED, VALIDATING, Job, JobStore
from agentd.jobs.worker import Reporter
from training import Callbacks, DataError, TrainingConfig, load_examples, parse_file, train

KIND = "fine_tune"
# OpenAI's hyperparameters, then agentd's own (any TrainingConfig field, `method` lora/qlora/full).
_OPENAI_KEYS = {"n_epochs": "epochs", "batch_size": "batch_size"}
_OWN_KEYS = set(TrainingConfig.model_fields) - {"base_model", "train_files", "validation_files", "output_dir", "seed"}
BASE_LEARNING_RATE = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}


class FineTuneRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def training_params(base_model_dir: Path, train_files: list[Path], validation_files: list[Path],
                    hyperparameters: dict[str, Any] | None, seed: int | None) -> dict[str, Any]:
    """Validated TrainingConfig fields (all but output_dir) from OpenAI-style hyperparameters."""
    fields: dict[str, Any] = {"base_model": str(base_model_dir), "train_files": [str(p) for p in train_files],
                              "validation_files": [str(p) for p in validation_files]}
    if seed is not None:
        fields["seed"] = seed
    multiplier = None
    for key, value in (hyperparameters or {}).items():
        if value == "auto":
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
    # An unknown method gets a placeholder rate here; TrainingConfig then refuses the method by name.
    base_rate = BASE_LEARNING_RATE.get(fields.get("method", "lora"), BASE_LEARNING_RATE["lora"])
    if multiplier is not None:
        if not isinstance(multiplier, (int, float)) or multiplier <= 0:
            raise FineTuneRequestError("learning_rate_multiplier must be a positive number",
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


def create_job(store: JobStore, file_store, *, model: str, base_folder: Path, training_file: str,
               validation_file: str | None = None, hyperparameters: dict[str, Any] | None = None,
               seed: int | None = None, suffix: str | None = None, metadata: dict[str, Any] | None = None) -> Job:
    """A job in `validating_files`; `validate_files` then queues or fails it. Raises FineTuneRequestError."""
    from tools.files import FileNotFound

    paths = {}
    for param, file_id in (("training_file", training_file), ("validation_file", validation_file)):
        if file_id is None:
            continue
        try:
            paths[param] = file_store.path(file_id)
        except FileNotFound:
            raise FineTuneRequestError(f"no file with id {file_id!r}; upload it with purpose 'fine-tune' first",
                                       param=param) from None
    training = training_params(base_folder, [paths["training_file"]],
                               [paths["validation_file"]] if validation_file else [], hyperparameters, seed)
    return submit(store, model=model, training=training, training_file=training_file,
                  validation_file=validation_file, suffix=suffix, metadata=metadata, status=VALIDATING)


def validate_upload(data: bytes, filename: str) -> None:
    """A `fine-tune` upload: JSONL records only (raw text goes as `{"text": ...}` lines)."""
    if not filename.endswith((".jsonl", ".json")) and not data.lstrip().startswith(b"{"):
        raise ValueError("fine-tune files are JSONL (one JSON object per line); send raw text as "
                         '{"text": ...} records')
    parse_file(data, filename)


def validate_files(store: JobStore, job_id: str) -> None:
    """Parse every record once (slow for big files: run it off the event loop)."""
    training = store.get(job_id).params["training"]
    try:
        load_examples(training["train_files"] + training["validation_files"])
    except DataError as error:
        store.finish(job_id, FAILED, error={"code": "invalid_training_file", "message": str(error),
                                            "param": "training_file"}, message=f"file validation failed: {error}")
        return
    store.transition(job_id, VALIDATING, QUEUED, "files validated; the job is queued")


def submit(store: JobStore, *, model: str, training: dict[str, Any], training_file: str,
           validation_file: str | None = None, suffix: str | None = None,
           metadata: dict[str, Any] | None = None, status: str = QUEUED) -> Job:
    params = {"model": model, "training": training, "training_file": training_file,
              "validation_file": validation_file, "suffix": suffix}
    return store.create(KIND, params, metadata=metadata, status=status, prefix="ftjob")


def fine_tuned_model_id(base: str, job_id: str, suffix: str | None) -> str:
    """OpenAI's shape: `ft:BASE:ORG:SUFFIX:ID`."""
    return f"ft:{base}:agentd:{suffix or ''}:{job_id.rsplit('-', 1)[-1][:8]}"


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
