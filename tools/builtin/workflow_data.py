"""The evaluation set `tune_and_evaluate` holds out of a training file when no task is named.

A seeded fifth of the records (at least one, at most 200) becomes a user task file in the shape
the evaluation package reads (OpenAI `messages`: the last assistant turn is the target; raw
`text` records: perplexity); the model is trained on the rest, uploaded as its own file, so the
scores measure what it learned rather than what it memorised.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.base import ToolError
from tools.files import FileStore

HELD_OUT_SHARE, MAX_HELD_OUT = 0.2, 200
SEED = 0


@dataclass(frozen=True)
class HeldOut:
    train_file_id: str
    eval_path: Path
    train_records: int
    eval_records: int


def held_out_count(records: int) -> int:
    """How many of `records` are held out: about a fifth, at least 1, at most 200."""
    return min(MAX_HELD_OUT, max(1, round(records * HELD_OUT_SHARE)))


def hold_out(file_store: FileStore, file_id: str, folder: Path, seed: int = SEED) -> HeldOut:
    """Split the stored JSONL file `file_id`: the training part uploaded (purpose fine-tune), the
    held-out part written under `folder` as `<name>_heldout.jsonl` (its task name)."""
    from training import DataError
    from training.data import parse_record

    stored = file_store.get(file_id)
    lines = [line for line in file_store.read(file_id).decode("utf-8").splitlines() if line.strip()]
    if len(lines) < 2:
        raise ToolError(f"stage fine-tune: {stored.filename} has {len(lines)} record(s); holding some out for "
                        "the evaluation needs at least 2, or name the evaluation tasks")
    chosen = set(random.Random(seed).sample(range(len(lines)), held_out_count(len(lines))))
    try:
        rows = [_eval_row(parse_record(json.loads(lines[index]))) for index in sorted(chosen)]
    except (DataError, ValueError) as error:
        raise ToolError(f"stage fine-tune: {stored.filename} cannot be split for evaluation: {error}") from None
    rows = _one_shape(rows)
    name = Path(stored.filename).stem
    train = "".join(line + "\n" for index, line in enumerate(lines) if index not in chosen)
    train_id = file_store.put(train.encode(), f"{name}_train.jsonl", purpose="fine-tune",
                              mime_type="application/jsonl").id
    eval_path = Path(folder) / file_id / f"{name}_heldout.jsonl"
    eval_path.parent.mkdir(parents=True, exist_ok=True)
    eval_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return HeldOut(train_id, eval_path, len(lines) - len(chosen), len(rows))


def _eval_row(example: Any) -> dict[str, Any]:
    if not example.is_chat:
        return {"text": example.text}
    turns = list(example.turns)
    last = max((index for index, turn in enumerate(turns) if turn.role == "assistant"), default=len(turns) - 1)
    return {"messages": [{"role": turn.role, "content": turn.content} for turn in turns[:last + 1]]}


def _one_shape(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A task has one shape: conversations when there are any (raw text records are rare in chat data).
    chats = [row for row in rows if "messages" in row]
    return chats or rows
