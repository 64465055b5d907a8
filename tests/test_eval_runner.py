"""The runner: batch-size invariance, the per-sample cache, resuming, cancelling, records, on the
tiny random model through LocalModel, with a real built-in task and a small task of our own."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from typing import Any

import pytest

from evaluation.metrics import aggregate_metric
from evaluation.models import EndpointModel
from evaluation.requests import (
    EvalModel,
    EvaluationError,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    Rolling,
    RollingRequest,
)
from evaluation.results import ResultStore, TaskResult, sample_records
from evaluation.runner import EvaluationCancelled, RunConfig, evaluate
from evaluation.tasks import MetricValue, Sample, SampleScore, ScoringContext, Task, load_task

pytestmark = pytest.mark.timeout(600)

WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "quiet", "paper"]


class MixedTask(Task):
    """Every request type in one task: a 4-way choice, a text's likelihood, a short generation."""

    name = "mixed"
    version = "1"
    output_type = "mixed"
    num_fewshot = 0

    def __init__(self, size: int = 12):
        self.size = size

    def samples(self, *, limit=None, num_fewshot=None, seed=1234, chat_template=False) -> list[Sample]:
        out = []
        for i in range(self.size if limit is None else min(limit, self.size)):
            choices = [WORDS[(i + k) % len(WORDS)] for k in range(4)]
            context = f"Item {i}: pick a word."
            text = " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(5 + i % 4))
            requests = [LoglikelihoodRequest(context, " " + c) for c in choices]
            requests += [RollingRequest(text), GenerateRequest(prompt=context, max_tokens=4)]
            out.append(Sample(id=f"s{i}", requests=requests, target=i % 4, prompt=context,
                              doc={"choices": choices, "text": text}))
        return out

    async def score(self, sample: Sample, responses: list, ctx: ScoringContext) -> SampleScore:
        *choices, rolled, generated = responses
        assert all(isinstance(c, Loglikelihood) for c in choices) and isinstance(rolled, Rolling)
        chosen = max(range(len(choices)), key=lambda k: choices[k].logprob)
        return SampleScore(metrics={"acc": float(chosen == sample.target), "perplexity": rolled.logprob / rolled.tokens,
                                    "length": float(len(generated))},
                           output=sample.doc["choices"][chosen], parsed=bool(generated.strip()))

    def aggregate(self, scores: list[SampleScore]) -> dict[str, MetricValue]:
        return {name: aggregate_metric("acc", [s.metrics[name] for s in scores])
                for name in ("acc", "perplexity", "length")}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "output_type": self.output_type,
                "metrics": ["acc", "perplexity", "length"], "samples": self.size, "source": "test"}


class CountingModel(EvalModel):
    """A real model, counting what it is asked."""

    def __init__(self, inner: EvalModel):
        self.inner, self.info = inner, inner.info
        self.requests = {"loglikelihood": 0, "rolling": 0, "generate": 0}
        self.calls = 0

    async def loglikelihood(self, requests, batch_size=8):
        self.calls += 1
        self.requests["loglikelihood"] += len(requests)
        return await self.inner.loglikelihood(requests, batch_size)

    async def loglikelihood_rolling(self, requests, batch_size=8):
        self.calls += 1
        self.requests["rolling"] += len(requests)
        return await self.inner.loglikelihood_rolling(requests, batch_size)

    async def generate(self, requests, batch_size=8):
        self.calls += 1
        self.requests["generate"] += len(requests)
        return await self.inner.generate(requests, batch_size)

    async def check(self, needs_loglikelihood):
        await self.inner.check(needs_loglikelihood)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


@pytest.fixture(scope="module")
def arc_easy():
    return load_task("arc_easy")


def run(model, task, config, store=None, **kwargs) -> TaskResult:
    return asyncio.run(evaluate(model, task, config, store, **kwargs))


def values(result: TaskResult) -> dict[str, tuple[float, float | None]]:
    return {name: (m.value, m.stderr) for name, m in result.metrics.items()}


def test_scores_do_not_depend_on_batch_size(local, arc_easy):
    for task, limit in ((arc_easy, 24), (MixedTask(), None)):
        one = run(local, task, RunConfig(limit=limit, batch_size=1))
        eight = run(local, task, RunConfig(limit=limit, batch_size=8))
        assert one.samples == eight.samples > 0
        assert set(one.metrics) == set(eight.metrics)
        for name in one.metrics:
            assert one.metrics[name].value == pytest.approx(eight.metrics[name].value, abs=1e-6), (task.name, name)


def test_accuracy_matches_the_choices_scored_one_by_one(local, arc_easy):
    result = run(local, arc_easy, RunConfig(limit=16))
    samples = arc_easy.samples(limit=16)
    correct = []
    for sample in samples:
        answers = asyncio.run(local.loglikelihood(sample.requests, batch_size=1))
        best = max(range(len(answers)), key=lambda k: answers[k].logprob)
        correct.append(float(best == sample.target))
    assert result.metrics["acc"].value == pytest.approx(sum(correct) / len(correct))
    n = len(correct)
    mean = sum(correct) / n
    stderr = math.sqrt(sum((c - mean) ** 2 for c in correct) / (n - 1) / n)
    assert result.metrics["acc"].stderr == pytest.approx(stderr)
    assert (result.task, result.model, result.samples, result.cached) == ("arc_easy", "tiny", 16, 0)
    assert result.model_fingerprint == local.info.fingerprint and result.num_fewshot == arc_easy.num_fewshot
    assert result.seed == 1234 and result.limit == 16 and result.chat_template is False


def test_a_repeated_run_makes_no_model_call(local, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    first_model, second_model = CountingModel(local), CountingModel(local)
    task = MixedTask()
    first = run(first_model, task, RunConfig(batch_size=4), store)
    assert first_model.requests == {"loglikelihood": 48, "rolling": 12, "generate": 12}
    second = run(second_model, task, RunConfig(batch_size=4), store)
    assert second_model.calls == 0 and second_model.total == 0
    assert second.cached == second.samples == 12 and first.cached == 0
    assert values(second) == values(first)
    assert second.unparsed == first.unparsed
    # use_cache=False asks the model again (and stores the same numbers).
    third_model = CountingModel(local)
    third = run(third_model, task, RunConfig(batch_size=4, use_cache=False), store)
    assert third_model.total == 72 and third.cached == 0
    for name, (value, _) in values(first).items():
        assert third.metrics[name].value == pytest.approx(value, abs=1e-6)
    # Another seed or few-shot count is another cache key.
    fourth_model = CountingModel(local)
    run(fourth_model, task, RunConfig(batch_size=4, seed=7), store)
    assert fourth_model.total == 72
    store.close()


def test_an_interrupted_run_resumes_where_it_stopped(local, arc_easy, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    config = RunConfig(limit=40, batch_size=1)  # rounds of 64 requests: 16 questions
    seen: list[tuple[int, int]] = []
    stop_after_first = CountingModel(local)
    with pytest.raises(EvaluationCancelled) as cancelled:
        run(stop_after_first, arc_easy, config, store, progress=lambda d, t: seen.append((d, t)),
            should_stop=lambda: len(seen) >= 2)
    done = cancelled.value.done
    assert 0 < done < 40 and cancelled.value.total == 40
    assert seen == [(0, 40), (done, 40)]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM eval_samples").fetchone()[0] == done
        assert db.execute("SELECT COUNT(*) FROM eval_results").fetchone()[0] == 0
    first_requests = stop_after_first.total

    resumed_model = CountingModel(local)
    progress: list[int] = []
    resumed = run(resumed_model, arc_easy, config, store, progress=lambda d, t: progress.append(d))
    assert resumed.cached == done and resumed.samples == 40
    assert progress[0] == done and progress[-1] == 40 and progress == sorted(progress)

    fresh_model = CountingModel(local)
    fresh = run(fresh_model, arc_easy, config)
    assert first_requests + resumed_model.total == fresh_model.total  # nothing computed twice
    assert values(resumed) == values(fresh)
    store.close()


def test_records_and_results_are_stored(local, arc_easy, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    result = run(local, arc_easy, RunConfig(limit=6), store)
    records = sample_records(store, result)
    samples = arc_easy.samples(limit=6)
    assert [r["sample_id"] for r in records] == [s.id for s in samples]
    assert [r["prompt"] for r in records] == [s.prompt for s in samples]
    assert [r["target"] for r in records] == [s.target for s in samples]
    assert all(r["output"] and set(r["score"]) == {"metrics", "output", "parsed"} for r in records)
    assert sum(r["score"]["metrics"]["acc"] for r in records) / 6 == pytest.approx(result.metrics["acc"].value)
    # A shorter run reads back only its own samples; the leaderboard sees the newest result.
    shorter = run(local, arc_easy, RunConfig(limit=3), store)
    assert shorter.cached == 3 and len(sample_records(store, shorter)) == 3
    assert [(r.task, r.samples) for r in store.task_results()] == [("arc_easy", 3)]
    assert [r.samples for r in store.task_results(latest=False)] == [6, 3]
    assert store.task_results()[0] == shorter
    store.close()


def test_an_endpoint_without_logprobs_fails_before_any_sample(tmp_path, arc_easy):
    from tests.test_eval_models import _no_logprobs_app
    from agentd.server.background import BackgroundServer

    server = BackgroundServer(_no_logprobs_app())
    store = ResultStore(tmp_path / "results.sqlite")

    async def attempt() -> None:
        model = EndpointModel(f"{server.url}/v1", "plain")
        try:
            await evaluate(model, arc_easy, RunConfig(limit=4), store)
        finally:
            await model.close()

    try:
        with pytest.raises(EvaluationError) as caught:
            asyncio.run(attempt())
        assert caught.value.code == "no_prompt_logprobs"
        assert store.task_results() == []
        with sqlite3.connect(tmp_path / "results.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM eval_samples").fetchone()[0] == 0
    finally:
        store.close()
        server.stop()
