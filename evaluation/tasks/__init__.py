"""Tasks: what to ask a model and how to score it, defined as data.

`load_task(spec)` gives a `Task` from a built-in name (`builtin_tasks()`), a user's JSONL / CSV /
JSON / YAML file, or a dict; tasks yield `Sample`s of requests, score each sample's responses into
a `SampleScore`, and aggregate those into `MetricValue`s with standard errors.
"""

from __future__ import annotations

from evaluation.metrics import MetricValue
from evaluation.tasks.base import Sample, SampleScore, ScoringContext, Task
from evaluation.tasks.configurable import ConfigurableTask
from evaluation.tasks.group import TaskGroup
from evaluation.tasks.loader import builtin_tasks, load_task

__all__ = ["ConfigurableTask", "MetricValue", "Sample", "SampleScore", "ScoringContext", "Task", "TaskGroup",
           "builtin_tasks", "load_task"]
