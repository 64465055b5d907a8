"""Reports: a leaderboard of models × tasks, and the comparison of two models on one task.

The leaderboard shows each task's primary metric (the first its aggregation reports, unless one
is named) as value ± standard error, as markdown, CSV, JSON and a grouped bar chart with error
bars. A comparison gives each shared metric's delta with a 95% confidence interval
(±1.96·sqrt(se_a² + se_b²)) and says when the difference is within noise.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.metrics import MetricValue
from evaluation.results import TaskResult

_Z95 = 1.959964


@dataclass
class Cell:
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    samples: int

    def text(self) -> str:
        return _value_text(self.value, self.stderr)


@dataclass
class Leaderboard:
    models: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Cell]  # (model, task) -> the task's primary metric

    def metric_of(self, task: str) -> str:
        return next(cell.metric for (_, t), cell in self.cells.items() if t == task)

    def average(self, model: str) -> float | None:
        """The mean of a model's primary scores over the tasks where higher is better and it was
        evaluated on all of them (an average over different task sets would not compare)."""
        cells = [self.cells.get((model, task)) for task in self.tasks]
        if any(cell is None for cell in cells) or not all(cell.higher_is_better for cell in cells):  # type: ignore[union-attr]
            return None
        return sum(cell.value for cell in cells) / len(cells)  # type: ignore[union-attr]

    def _ranked_models(self) -> list[str]:
        # Best first by the average where there is one; models without one keep their order last.
        averages = {model: self.average(model) for model in self.models}
        return sorted(self.models, key=lambda m: (averages[m] is None, -(averages[m] or 0.0)))

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for model in self._ranked_models():
            scores = {}
            for task in self.tasks:
                cell = self.cells.get((model, task))
                if cell is not None:
                    scores[task] = {"metric": cell.metric, "value": cell.value, "stderr": cell.stderr,
                                    "higher_is_better": cell.higher_is_better, "samples": cell.samples}
            rows.append({"model": model, "average": self.average(model), "scores": scores})
        return {"object": "leaderboard", "tasks": [{"task": t, "metric": self.metric_of(t)} for t in self.tasks],
                "data": rows}

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def markdown(self) -> str:
        header = ["model"] + [f"{task} ({self.metric_of(task)})" for task in self.tasks]
        show_average = len(self.tasks) > 1
        if show_average:
            header.append("average")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model in self._ranked_models():
            row = [model] + [self.cells[(model, t)].text() if (model, t) in self.cells else "—" for t in self.tasks]
            if show_average:
                average = self.average(model)
                row.append(f"{average:.4f}" if average is not None else "—")
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "task", "metric", "value", "stderr", "samples"])
        for model in self._ranked_models():
            for task in self.tasks:
                cell = self.cells.get((model, task))
                if cell is not None:
                    writer.writerow([model, task, cell.metric, f"{cell.value:.6g}",
                                     "" if cell.stderr is None else f"{cell.stderr:.6g}", cell.samples])
        return out.getvalue()

    def png(self, path: str | Path) -> Path:
        """A grouped bar chart: one group per task, one bar per model, error bars of ±1 stderr."""
        import matplotlib

        matplotlib.use("Agg")  # no display: render to a file, safe in a server thread
        import matplotlib.pyplot as plt

        models = self._ranked_models()
        width = 0.8 / max(1, len(models))
        figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(self.tasks) + 2), 4.5))
        try:
            for index, model in enumerate(models):
                xs, values, errors = [], [], []
                for position, task in enumerate(self.tasks):
                    cell = self.cells.get((model, task))
                    if cell is not None:
                        xs.append(position - 0.4 + width * (index + 0.5))
                        values.append(cell.value)
                        errors.append(cell.stderr or 0.0)
                axes.bar(xs, values, width, yerr=errors, capsize=3, label=model)
            axes.set_xticks(range(len(self.tasks)))
            axes.set_xticklabels([f"{t}\n({self.metric_of(t)})" for t in self.tasks], fontsize=8)
            axes.set_ylabel("score (± standard error)")
            axes.set_title("Leaderboard")
            axes.legend(fontsize=8)
            figure.tight_layout()
            path = Path(path)
            figure.savefig(path, format="png", dpi=100)
        finally:
            plt.close(figure)
        return path


def leaderboard(results: list[TaskResult], metrics: dict[str, str] | None = None) -> Leaderboard:
    """Models × tasks from `results`; a later result for the same model × task replaces an earlier
    one. `metrics` names the metric to show per task (default: the task's first)."""
    metrics = metrics or {}
    models: list[str] = []
    tasks: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for result in results:
        models += [result.model] if result.model not in models else []
        tasks += [result.task] if result.task not in tasks else []
        name = metrics.get(result.task) or next(iter(result.metrics), None)
        if name is None or name not in result.metrics:
            continue
        value = result.metrics[name]
        cells[(result.model, result.task)] = Cell(name, value.value, value.stderr, value.higher_is_better,
                                                  result.samples)
    tasks = [t for t in tasks if any(task == t for _, task in cells)]
    return Leaderboard(models=models, tasks=tasks, cells=cells)


@dataclass
class MetricDelta:
    metric: str
    a: float
    b: float
    delta: float  # b - a
    ci_low: float | None  # 95% interval of the delta; None when a standard error is missing
    ci_high: float | None
    within_noise: bool | None  # the interval contains 0; None when it cannot be told
    better: str | None  # "a", "b", or None when within noise or unknown


@dataclass
class Comparison:
    task: str
    model_a: str
    model_b: str
    deltas: list[MetricDelta] = field(default_factory=list)
    within_noise: bool = True  # the primary (first) metric's difference is within noise
    note: str = ""

    def text(self) -> str:
        return self.note

    def markdown(self) -> str:
        lines = [f"| metric | {self.model_a} | {self.model_b} | delta | 95% CI |", "|---|---|---|---|---|"]
        for d in self.deltas:
            ci = f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]" if d.ci_low is not None else "—"
            lines.append(f"| {d.metric} | {d.a:.4f} | {d.b:.4f} | {d.delta:+.4f} | {ci} |")
        return "\n".join(lines) + f"\n\n{self.note}\n"


def compare(a: TaskResult, b: TaskResult) -> Comparison:
    """`b` against `a` on one task, metric by metric (those both report, in `a`'s order)."""
    deltas = [_delta(name, a.metrics[name], b.metrics[name]) for name in a.metrics if name in b.metrics]
    comparison = Comparison(task=a.task, model_a=a.model, model_b=b.model, deltas=deltas)
    if a.task != b.task:
        comparison.note = f"{a.model} was evaluated on {a.task}, {b.model} on {b.task}: not comparable."
        comparison.within_noise = False
        return comparison
    if not deltas:
        comparison.note = f"{a.model} and {b.model} share no metric on {a.task}."
        return comparison
    primary = deltas[0]
    comparison.within_noise = primary.within_noise is not False
    comparison.note = _note(a, b, primary)
    return comparison


def _delta(name: str, a: MetricValue, b: MetricValue) -> MetricDelta:
    delta = b.value - a.value
    low = high = None
    within: bool | None = None
    if a.stderr is not None and b.stderr is not None and not (math.isnan(a.stderr) or math.isnan(b.stderr)):
        half = _Z95 * math.sqrt(a.stderr**2 + b.stderr**2)
        low, high = delta - half, delta + half
        within = low <= 0.0 <= high
    better = None
    if within is False:
        better = "b" if (delta > 0) == a.higher_is_better else "a"
    return MetricDelta(name, a.value, b.value, delta, low, high, within, better)


def _note(a: TaskResult, b: TaskResult, d: MetricDelta) -> str:
    head = (f"{a.task} {d.metric}: {b.model} {d.b:.4f} vs {a.model} {d.a:.4f}, "
            f"delta {d.delta:+.4f}")
    if d.within_noise is None:
        return head + " (no standard error: cannot tell whether it is noise)."
    ci = f" (95% CI {d.ci_low:+.4f} to {d.ci_high:+.4f})"
    if d.within_noise:
        return head + ci + f": within noise, {b.model} and {a.model} cannot be told apart on these {a.samples} samples."
    winner = b.model if d.better == "b" else a.model
    return head + ci + f": {winner} is better, beyond noise."


def _value_text(value: float, stderr: float | None) -> str:
    if stderr is None or math.isnan(stderr):
        return f"{value:.4f}"
    return f"{value:.4f} ± {stderr:.4f}"
