"""The training loop: data → packed batches → steps → checkpoints → the adapter or model.

`train(config, callbacks)` runs one fine-tune to the end (or until `should_stop` says so),
resuming from the newest checkpoint in the output folder when there is one.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training import checkpoints
from training.backends import make_backend
from training.config import TrainingConfig
from training.data import Example, load_examples
from training.encoding import encode
from training.model import TrainingError, WeightedCausalLMLoss, load_model, load_tokenizer, use_bf16
from training.packing import Batch, Row, collate, epoch_batches, one_per_row, pack


class Callbacks:
    """Override what you need; every hook is called on the main rank only."""

    def on_message(self, text: str) -> None: ...

    def on_step(self, report: dict[str, Any]) -> None: ...

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool:
        return False


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    trained_tokens: int
    final_loss: float | None
    valid_loss: float | None
    stopped: bool
    final_dir: Path | None = None
    merged_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Data:
    rows: list[Row]
    validation: list[Row]
    pad_id: int


def train(config: TrainingConfig, callbacks: Callbacks | None = None) -> TrainResult:
    callbacks = callbacks or Callbacks()
    _seed(config.seed)
    tokenizer = load_tokenizer(config)
    data = _prepare_data(config, tokenizer, callbacks)
    bf16 = use_bf16(config)
    model = load_model(config)
    module = WeightedCausalLMLoss(model)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    micro_per_epoch = _MicroBatches.per_epoch(data, config)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.gradient_accumulation_steps))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = _schedule(config, optimizer, total_steps)
    backend = make_backend(module, optimizer, scheduler, config, bf16)
    main = backend.rank == 0
    try:
        return _loop(config, data, backend, model, tokenizer, total_steps, micro_per_epoch,
                     callbacks if main else Callbacks())
    finally:
        backend.close()


def _loop(config, data: _Data, backend, model, tokenizer, total_steps, micro_per_epoch, callbacks) -> TrainResult:
    history: list[dict[str, Any]] = []
    start = 0
    found = checkpoints.latest(config.checkpoint_dir)
    if found:
        state = checkpoints.load(found[1], backend)
        start, history = state["step"], state["history"]
        callbacks.on_message(f"resumed from checkpoint at step {start}")
    callbacks.on_message(f"training {total_steps} steps on {len(data.rows)} rows "
                         f"({config.method}{', DeepSpeed ' + str(config.deepspeed) if config.deepspeed else ''})")
    every = config.checkpoint_every or max(1, total_steps // 10)
    plan = _MicroBatches(data, config, backend)
    trained_tokens = sum(entry["tokens"] for entry in history)
    started = time.perf_counter()
    step = start
    for step in range(start + 1, total_steps + 1):
        if backend.any_rank(callbacks.should_stop()):
            done = step - 1
            if done > start and done % every:  # keep what was learnt since the last checkpoint
                _checkpoint(config, backend, history, callbacks)
            callbacks.on_message(f"stopped before step {step}")
            return TrainResult(step - 1, total_steps, trained_tokens, _last(history, "loss"),
                               _last(history, "valid_loss"), stopped=True, history=history)
        tick = time.perf_counter()
        batches = [plan.batch(index) for index in range((step - 1) * config.gradient_accumulation_steps,
                                                        step * config.gradient_accumulation_steps)]
        weight = sum(batch.trained_tokens for batch in batches) or 1.0
        loss_sum = 0.0
        for batch in batches:
            loss = backend.loss(batch) / weight
            backend.backward(loss)
            loss_sum += float(loss.detach())
        learning_rate = backend.learning_rate
        grad_norm = backend.step()
        tokens = sum(batch.tokens for batch in batches)
        trained_tokens += tokens
        elapsed = time.perf_counter() - tick
        report = {"step": step, "total_steps": total_steps,
                  "epoch": round(step * config.gradient_accumulation_steps / micro_per_epoch, 3),
                  "loss": loss_sum, "learning_rate": learning_rate, "grad_norm": grad_norm, "tokens": tokens,
                  "tokens_per_second": tokens / elapsed if elapsed else 0.0,
                  "eta_seconds": (time.perf_counter() - started) / (step - start) * (total_steps - step)}
        if not math.isfinite(loss_sum):
            raise TrainingError(f"the loss became {loss_sum} at step {step}; try a lower learning rate")
        if data.validation and ((config.eval_every and step % config.eval_every == 0) or step == total_steps):
            report["valid_loss"] = evaluate(backend, data.validation, config.batch_size, data.pad_id)
        history.append(report)
        callbacks.on_step(report)
        if step % every == 0 or step == total_steps:
            _checkpoint(config, backend, history, callbacks)
    final_dir = _save_final(config, backend, model, tokenizer)
    merged = None
    if config.merge and backend.rank == 0:
        from training.export import merge_adapter

        callbacks.on_message("merging the adapter into the base model")
        merged = merge_adapter(config.base_model, final_dir, config.merged_dir)
    return TrainResult(step, total_steps, trained_tokens, _last(history, "loss"), _last(history, "valid_loss"),
                       stopped=False, final_dir=final_dir, merged_dir=merged, history=history)


def _checkpoint(config: TrainingConfig, backend, history: list[dict[str, Any]], callbacks: Callbacks) -> None:
    """A checkpoint after the last step in `history`, which it carries so a resumed run reports it whole."""
    last = history[-1]
    path = checkpoints.save(config.checkpoint_dir, last["step"], backend, {"step": last["step"], "history": history},
                            config.keep_checkpoints)
    callbacks.on_checkpoint(last["step"], path, {k: v for k, v in last.items() if k in ("loss", "valid_loss")})


class _MicroBatches:
    """Micro-batch number → batch, across epochs; each epoch reshuffled by (seed, epoch)."""

    def __init__(self, data: _Data, config: TrainingConfig, backend):
        self._data, self._config, self._backend = data, config, backend
        self._epoch, self._batches = -1, []

    @staticmethod
    def per_epoch(data: _Data, config: TrainingConfig) -> int:
        return math.ceil(len(data.rows) / config.batch_size)

    def batch(self, index: int) -> Batch:
        epoch, position = divmod(index, self.per_epoch(self._data, self._config))
        if epoch != self._epoch:
            batches = epoch_batches(self._data.rows, self._config.batch_size, self._config.seed, epoch)
            # Under a launcher each rank takes its own share of the epoch's batches.
            self._batches = batches[self._backend.rank::self._backend.world_size] or batches
            self._epoch = epoch
        rows = self._batches[position % len(self._batches)]
        return collate(rows, self._data.pad_id)


@torch.no_grad()
def evaluate(backend, rows: list[Row], batch_size: int, pad_id: int) -> float:
    total, weight = 0.0, 0.0
    backend.module.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start: start + batch_size], pad_id)
            total += float(backend.loss(batch))
            weight += batch.trained_tokens
    finally:
        backend.module.train()
    return total / weight if weight else float("nan")


def _prepare_data(config: TrainingConfig, tokenizer, callbacks: Callbacks) -> _Data:
    examples = load_examples(config.train_files)
    validation: list[Example] = load_examples(config.validation_files) if config.validation_files else []
    if not validation and config.validation_fraction:
        shuffled = list(examples)
        random.Random(config.seed).shuffle(shuffled)
        count = max(1, round(len(shuffled) * config.validation_fraction))
        if count >= len(shuffled):
            raise TrainingError(f"validation_fraction {config.validation_fraction} leaves no training examples")
        validation, examples = shuffled[:count], shuffled[count:]
    encoded = encode(examples, tokenizer, config.seq_len)
    if encoded.truncated or encoded.dropped:
        callbacks.on_message(f"{encoded.truncated} examples were longer than seq_len {config.seq_len} and were cut; "
                             f"{encoded.dropped} had nothing left to learn and were dropped")
    if not encoded.sequences:
        raise TrainingError("no training sequences: every example was empty after tokenization")
    # Rows no longer than the longest sequence: on a CPU a long row costs more per token than
    # several short ones (measured 95 vs 156 tokens/s at 512 vs 128), so packing only fills gaps.
    width = min(config.seq_len, max(len(sequence) for sequence in encoded.sequences))
    arrange = (lambda s: pack(s, width)) if config.packing else one_per_row
    valid_rows = arrange(encode(validation, tokenizer, config.seq_len).sequences) if validation else []
    return _Data(rows=arrange(encoded.sequences), validation=valid_rows, pad_id=tokenizer.pad_token_id)


def _schedule(config: TrainingConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def _save_final(config: TrainingConfig, backend, model, tokenizer) -> Path | None:
    with backend.full_parameters():
        if backend.rank != 0:
            return None
        config.final_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(config.final_dir, safe_serialization=True)
    tokenizer.save_pretrained(config.final_dir)
    return config.final_dir


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    return next((entry[key] for entry in reversed(history) if key in entry), None)


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
