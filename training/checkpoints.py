"""Checkpoint folders: written beside their final name and renamed, so a kill -9 never leaves half a one.

A checkpoint holds what the backend saves (weights that train, optimizer, schedule), the RNG
states and the loop's own state; resuming from it replays the same batches with the same
randomness, so the loss curve continues as if nothing had happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(match[1]), path) for path in root.iterdir()
             if (match := _NAME.match(path.name)) and (path / "state.json").is_file()]
    return sorted(found)


def latest(root: Path) -> tuple[int, Path] | None:
    found = checkpoints(root)
    return found[-1] if found else None


def save(root: Path, step: int, backend, state: dict[str, Any], keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    staging = root / f".staging-{step}"
    if backend.rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    backend.barrier()
    backend.save(staging)  # collective under DeepSpeed: every rank writes its shard
    backend.barrier()
    if backend.rank != 0:
        return final
    torch.save(_rng_state(), staging / "rng.pt")
    (staging / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for _, old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".staging-*"):
        if leftover != staging:
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def load(folder: Path, backend) -> dict[str, Any]:
    backend.load(folder)
    _set_rng_state(torch.load(folder / "rng.pt", weights_only=False))
    return json.loads((folder / "state.json").read_text())


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
