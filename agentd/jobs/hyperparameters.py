"""OpenAI-style "auto" hyperparameters: epochs, batch size and learning rate chosen from the data set's size.

OpenAI's fine-tuning API defaults `n_epochs`, `batch_size` and `learning_rate_multiplier` to
"auto" and picks them once it has counted the training examples. agentd follows the rules
OpenAI documented for its fine-tuning endpoints and data-preparation cookbook:

- n_epochs: 3, raised until n_examples × n_epochs ≥ 100 (at most 25 epochs) and lowered until
  n_examples × n_epochs ≤ 25,000 (at least 1), so a small set is seen often enough to be
  learned and a large one is not over-trained;
- batch_size: ≈ 0.2 % of the examples, at least 1 and at most 256, so a small upload takes one
  example per step (several per step average a tiny set's signal away); a batch above 8 is run
  as micro-batches of ≤ 8 with gradient accumulation (the job shows examples per update);
- learning_rate_multiplier: by the chosen batch size, 1 / 2 / 4 for batches of ≤ 8 / ≤ 64 / more
  — OpenAI's 0.05 / 0.1 / 0.2 ratios, scaled so the method's default rate (`BASE_LEARNING_RATE`
  in agentd.jobs.fine_tune, already tuned for small batches) is what any set under ~4,500
  examples trains at.

A number the caller gives always wins; agentd's own `epochs` and `learning_rate` keys count as
given values of `n_epochs` and `learning_rate_multiplier`.
"""

from __future__ import annotations

import math
from typing import Any

AUTO = "auto"
AUTO_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 100, 25_000
MIN_EPOCHS, MAX_EPOCHS = 1, 25
BATCH_FRACTION, MAX_BATCH_SIZE = 0.002, 256
# An automatic batch larger than this runs as micro-batches with gradient accumulation (memory).
MAX_MICRO_BATCH = 8
# (largest batch size, multiplier of the method's default learning rate), smallest batches first.
LEARNING_RATE_STEPS = ((8, 1.0), (64, 2.0))
LARGE_BATCH_MULTIPLIER = 4.0
# agentd's own spellings that, when given, make the matching OpenAI key explicit.
_OWN_ALIASES = {"n_epochs": "epochs", "learning_rate_multiplier": "learning_rate"}


def is_auto(value: Any) -> bool:
    """Missing and "auto" (any case) both mean: choose it from the data."""
    return value is None or (isinstance(value, str) and value.strip().lower() == AUTO)


def auto_epochs(n_examples: int) -> int:
    """3 epochs; more (≤ 25) until ≥ 100 examples pass through training, fewer (≥ 1) until ≤ 25,000 do."""
    n_examples = max(1, n_examples)
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """≈ 0.2 % of the examples, between 1 and 256."""
    return max(1, min(MAX_BATCH_SIZE, round(n_examples * BATCH_FRACTION)))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    """Larger batches average out more noise, so they take a larger step."""
    for largest, multiplier in LEARNING_RATE_STEPS:
        if batch_size <= largest:
            return multiplier
    return LARGE_BATCH_MULTIPLIER


def resolve_hyperparameters(requested: dict[str, Any] | None, n_examples: int, method: str) -> dict[str, Any]:
    """`requested` with every "auto" (or missing) n_epochs, batch_size and learning_rate_multiplier
    replaced by the number chosen for `n_examples` training examples; other keys pass through.

    `method` (lora, qlora, full) is accepted so a method-specific rule can be added without
    changing callers; today the multiplier applies to each method's own default rate.
    """
    del method  # the multiplier is relative to the method's default rate, so one rule fits all
    resolved = {key: value for key, value in (requested or {}).items() if not (key in AUTO_KEYS and is_auto(value))}
    if "n_epochs" not in resolved and "epochs" not in resolved:
        resolved["n_epochs"] = auto_epochs(n_examples)
    if "batch_size" not in resolved:
        resolved["batch_size"] = auto_batch_size(n_examples)
    if "learning_rate_multiplier" not in resolved and "learning_rate" not in resolved:
        batch_size = resolved["batch_size"]
        resolved["learning_rate_multiplier"] = (auto_learning_rate_multiplier(batch_size)
                                                if isinstance(batch_size, int) else 1.0)
    return resolved


def chosen_automatically(requested: dict[str, Any] | None) -> list[str]:
    """Which of the OpenAI keys `resolve_hyperparameters` fills in for this request."""
    requested = requested or {}
    return [key for key in AUTO_KEYS
            if is_auto(requested.get(key)) and _OWN_ALIASES.get(key) not in requested]


def describe_choice(values: dict[str, Any], auto: list[str], n_examples: int) -> str:
    """The event a job shows, e.g. `Hyperparameters chosen: n_epochs=5, batch_size=1,
    learning_rate_multiplier=1 (auto, from 24 examples)`."""
    shown = ", ".join(f"{key}={_number(values[key])}" for key in AUTO_KEYS if key in values)
    examples = f"{n_examples} example{'s' if n_examples != 1 else ''}"
    if not auto:
        how = "as given"
    elif len(auto) == len(AUTO_KEYS):
        how = f"auto, from {examples}"
    else:
        how = f"{', '.join(auto)} auto, from {examples}; the rest as given"
    return f"Hyperparameters chosen: {shown} ({how})"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
