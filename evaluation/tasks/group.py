"""A group of tasks evaluated as one (the harness's `group:`), e.g. `mmlu_subset`.

Sample ids are `<subtask>/<id>` and per-sample metrics are keyed `<subtask>/<metric>`, so the
group reports each subtask's numbers next to the overall ones. An overall mean pools every
sample, which is the harness's size-weighted mean of the subtasks (`weight_by_size: true`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from evaluation import metrics
from evaluation.metrics import MetricValue
from evaluation.requests import EvaluationError
from evaluation.tasks.base import Sample, SampleScore, ScoringContext, Task


class TaskGroup(Task):
    def __init__(self, name: str, version: str, tasks: list[Task], *, aggregate: list[str] | None = None,
                 description: str = "", source: str = ""):
        if not tasks:
            raise EvaluationError(f"group {name!r} lists no tasks", param="task")
        self.name, self.tasks, self.description, self.source = name, tasks, description, source
        self._by_name = {task.name: task for task in tasks}
        if len(self._by_name) != len(tasks) or any("/" in task.name for task in tasks):
            raise EvaluationError(f"group {name!r}: subtask names must be unique and contain no '/'", param="task")
        # a subtask's new version must not reuse the group's cached samples
        versions = ",".join(f"{task.name}={task.version}" for task in tasks)
        self.version = f"{version}-{hashlib.sha256(versions.encode()).hexdigest()[:8]}"
        types = {task.output_type for task in tasks}
        self.output_type = types.pop() if len(types) == 1 else "mixed"
        self.num_fewshot = max(task.num_fewshot for task in tasks)
        shared = set.intersection(*(set(self._metric_names(task)) for task in tasks))
        self.aggregate_metrics = aggregate if aggregate is not None else sorted(shared)
        unknown = set(self.aggregate_metrics) - shared
        if unknown:
            raise EvaluationError(f"group {name!r}: aggregate metrics {sorted(unknown)} are not reported by every "
                                  "subtask", param="aggregate_metric_list")

    @staticmethod
    def _metric_names(task: Task) -> list[str]:
        return list(task.describe()["metrics"]) if not isinstance(task, TaskGroup) else task.aggregate_metrics

    def samples(self, *, limit: int | None = None, num_fewshot: int | None = None, seed: int = 1234,
                chat_template: bool = False) -> list[Sample]:
        """Every subtask's samples; `limit` applies to each subtask, as in the harness."""
        out = []
        for task in self.tasks:
            for sample in task.samples(limit=limit, num_fewshot=num_fewshot, seed=seed, chat_template=chat_template):
                out.append(Sample(id=f"{task.name}/{sample.id}", requests=sample.requests, target=sample.target,
                                  prompt=sample.prompt, doc=sample.doc))
        return out

    async def score(self, sample: Sample, responses: list, ctx: ScoringContext) -> SampleScore:
        name, _, own_id = sample.id.partition("/")
        if name not in self._by_name:
            raise EvaluationError(f"sample {sample.id!r} belongs to no task of group {self.name!r}")
        inner = Sample(id=own_id, requests=sample.requests, target=sample.target, prompt=sample.prompt, doc=sample.doc)
        score = await self._by_name[name].score(inner, responses, ctx)
        return SampleScore(metrics={f"{name}/{key}": value for key, value in score.metrics.items()},
                           output=score.output, parsed=score.parsed)

    def aggregate(self, scores: list[SampleScore]) -> dict[str, MetricValue]:
        results: dict[str, MetricValue] = {}
        for metric in self.aggregate_metrics:
            pooled = [value for score in scores for key, value in score.metrics.items()
                      if key.rpartition("/")[2] == metric]
            overall = metrics.aggregate_metric(metric, pooled)
            if overall is not None:
                results[metric] = overall
        for task in self.tasks:
            prefix = f"{task.name}/"
            own = [SampleScore(metrics={key[len(prefix):]: value for key, value in score.metrics.items()
                                        if key.startswith(prefix)}, output=score.output, parsed=score.parsed)
                   for score in scores if any(key.startswith(prefix) for key in score.metrics)]
            if own:
                results.update({f"{prefix}{key}": value for key, value in task.aggregate(own).items()})
        return results

    def describe(self) -> dict[str, Any]:
        subtasks = [task.describe() for task in self.tasks]
        return {"name": self.name, "version": self.version, "output_type": self.output_type,
                "metrics": self.aggregate_metrics, "samples": sum(sub["samples"] for sub in subtasks),
                "num_fewshot": self.num_fewshot, "source": self.source, "description": self.description,
                "subtasks": [sub["name"] for sub in subtasks]}
