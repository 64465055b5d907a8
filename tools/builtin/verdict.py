"""Which of two models is better, from an evaluation of both: per task, then overall, in words.

Each task is judged on its headline metric: the first metric whose difference is beyond noise,
else the first that differs at all, else the first (`evaluation.reports.compare` orders metrics
as the task does and computes the intervals). The tuned model is called better only when it wins
more tasks than the base; a draw keeps the base (nothing gained, nothing to deploy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentd.jobs.evaluate import format_metric


@dataclass
class Verdict:
    base: str
    tuned: str
    better: str
    summary: str
    lines: list[dict[str, Any]] = field(default_factory=list)  # one per task: its headline comparison
    scores: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (model, task) → metrics


def judge(comparisons: list[Any], entries: list[dict[str, Any]], base: str, tuned: str) -> Verdict:
    """`comparisons` are `reports.compare(base result, tuned result)` per task; `entries` the
    evaluation job's results (the metrics with their standard errors)."""
    scores = {(entry["model"], entry["task"]): entry["metrics"] for entry in entries}
    lines = [_line(comparison, scores.get((base, comparison.task), {})) for comparison in comparisons]
    lines = [line for line in lines if line is not None]
    tuned_wins = sum(line["better"] == "tuned" for line in lines)
    base_wins = sum(line["better"] == "base" for line in lines)
    better = tuned if tuned_wins > base_wins else base
    return Verdict(base, tuned, better, _summary(lines, base, tuned, better), lines, scores)


def results_table(verdict: Verdict) -> str:
    """Markdown: task | metric | base | tuned, each value ± its standard error."""
    rows = ["| task | metric | base | tuned |", "|---|---|---|---|"]
    tasks = dict.fromkeys(task for _, task in verdict.scores)
    for task in tasks:
        base_metrics = verdict.scores.get((verdict.base, task), {})
        tuned_metrics = verdict.scores.get((verdict.tuned, task), {})
        for metric in dict.fromkeys([*base_metrics, *tuned_metrics]):
            cells = [format_metric(found[metric]) if metric in found else "—"
                     for found in (base_metrics, tuned_metrics)]
            rows.append(f"| {task} | {metric} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def _line(comparison: Any, base_metrics: dict[str, Any]) -> dict[str, Any] | None:
    deltas = comparison.deltas
    if not deltas:
        return None
    headline = (next((d for d in deltas if d.within_noise is False), None)
                or next((d for d in deltas if d.a != d.b), None) or deltas[0])
    higher_is_better = base_metrics.get(headline.metric, {}).get("higher_is_better", True)
    if headline.a == headline.b:
        better = None
    elif headline.better is not None:
        better = "tuned" if headline.better == "b" else "base"
    else:
        better = "tuned" if (headline.b > headline.a) == higher_is_better else "base"
    return {"task": comparison.task, "metric": headline.metric, "base": headline.a, "tuned": headline.b,
            "better": better, "beyond_noise": headline.within_noise is False, "note": comparison.note}


def _summary(lines: list[dict[str, Any]], base: str, tuned: str, better: str) -> str:
    if not lines:
        return f"{tuned} and {base} share no metric to compare; keeping {base}."
    worse = base if better == tuned else tuned
    side = "tuned" if better == tuned else "base"
    won = [line for line in lines if line["better"] == side]
    if not won:  # every task a draw
        line = lines[0]
        return (f"{tuned} and {base} score the same on {line['task']}: {line['metric']} {line['base']:.2f}; "
                f"keeping {base}.")
    line = next((one for one in won if one["beyond_noise"]), won[0])
    mine, theirs = (line["tuned"], line["base"]) if side == "tuned" else (line["base"], line["tuned"])
    noise = "" if line["beyond_noise"] else " (within noise: more samples would tell them apart better)"
    tally = f" It wins {len(won)} of {len(lines)} tasks." if len(lines) > 1 else ""
    headline = f"{line['task']}: {line['metric']} {mine:.2f} vs {theirs:.2f}"
    return f"{better} is better than {worse} on {headline}{noise}.{tally}"
