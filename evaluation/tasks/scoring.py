"""Scoring generated answers: answer extraction, then each metric the task asks for."""

from __future__ import annotations

from typing import Any

from evaluation import metrics
from evaluation.requests import EvaluationError
from evaluation.tasks.base import Sample, SampleScore, ScoringContext
from evaluation.tasks.config import MetricConfig, TaskConfig
from evaluation.tasks.filters import apply_filters

PASS_AT_K_TIMEOUT = 10.0  # seconds per program, like HumanEval's harnesses


async def score_generation(config: TaskConfig, sample: Sample, outputs: list[str], ctx: ScoringContext) -> SampleScore:
    references = sample.target if isinstance(sample.target, list) else [str(sample.target)]
    extracted, parsed = apply_filters(config.filters, outputs)
    prediction = extracted[0] if extracted else ""
    items: dict[str, Any] = {}
    for metric in config.metrics:
        if metric.name == "exact_match":
            items["exact_match"] = metrics.exact_match(prediction, references)
        elif metric.name == "f1":
            items["f1"] = metrics.f1(prediction, references)
        elif metric.name in ("bleu", "chrf"):
            items[metric.name] = [prediction, references]
        elif metric.name in ("rouge", "rouge1", "rouge2", "rougeL"):
            scores = metrics.rouge(prediction, references)
            items.update({name: scores[name] for name in metric.reported()})
        elif metric.name == "pass_at_k":
            items.update(await _pass_at_k(metric, sample, outputs, ctx))
        elif metric.name == "llm_judge":
            grade = await _judge(metric, sample, prediction, references, ctx)
            items["llm_judge"] = grade
            parsed = parsed and grade is not None
    output = outputs[0] if len(outputs) == 1 else outputs[0] + f"\n[+{len(outputs) - 1} more samples]"
    return SampleScore(metrics=items, output=output, parsed=parsed)


async def _pass_at_k(metric: MetricConfig, sample: Sample, outputs: list[str], ctx: ScoringContext) -> dict[str, float]:
    """Run each completion with the task's tests (the target) in the sandbox; count those passing."""
    if ctx.execute is None:
        raise EvaluationError("pass@k needs a code sandbox to run completions in; none was given",
                              param="execute", code="sandbox_unavailable")
    prompt = sample.prompt  # the program is prompt + completion + tests (HumanEval's layout)
    tests = sample.target if isinstance(sample.target, str) else "\n".join(sample.target)
    passed = 0
    for output in outputs:
        ok, _ = await ctx.execute(prompt + output + "\n" + tests + "\n", float(metric.options.get("timeout",
                                                                                               PASS_AT_K_TIMEOUT)))
        passed += bool(ok)
    return {f"pass@{k}": metrics.pass_at_k(len(outputs), passed, k) for k in metric.options["k"]}


async def _judge(metric: MetricConfig, sample: Sample, prediction: str, references: list[str],
                 ctx: ScoringContext) -> float | None:
    if ctx.judge is None:
        raise EvaluationError("llm_judge needs a judge model; none was configured for this run",
                              param="judge", code="judge_unavailable")
    judge = await ctx.judge(str(metric.options.get("model", "")))
    grade, _ = await metrics.llm_judge(judge, question=sample.prompt, output=prediction, reference=references,
                                       scale=metric.options.get("scale", "1-10"))
    return grade
