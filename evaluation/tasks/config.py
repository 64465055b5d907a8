"""A task definition as data: lm-evaluation-harness's YAML fields, checked once when loaded.

Supported fields (harness meaning unless noted): `task`, `dataset_path`, `dataset_name`,
`dataset_kwargs` (`data_files: {split: file}` when `dataset_path` is json/jsonl/csv/arrow),
`validation_split`, `test_split`, `fewshot_split`, `fewshot_config.sampler` (default | first_n),
`process_docs` (a name from `evaluation.tasks.process_docs`), `output_type`, `doc_to_text`,
`doc_to_target`, `doc_to_choice`, `target_delimiter`, `fewshot_delimiter`, `num_fewshot`,
`generation_kwargs` (`until`, `max_gen_toks`, `temperature`, `do_sample`), `repeats`,
`filter_list` (first pipeline) or `filter` (a list of steps), `metric_list`, `metadata.version`,
`description`. Ours: `doc_id` (the column holding a stable document id), `rows` (inline data),
`doc_to_messages` (a column of chat messages: the prompt when a chat template is applied).
Fields the harness has but that change nothing here (tags, decontamination) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.metrics import metric_spec
from evaluation.requests import EvaluationError

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")

DEFAULT_METRICS = {
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}

# Which metrics each output type can compute; `rouge` stands for rouge1/rouge2/rougeL together.
ALLOWED_METRICS = {
    "multiple_choice": {"acc", "acc_norm"},
    "loglikelihood": {"perplexity", "acc"},
    "loglikelihood_rolling": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
    "generate_until": {"exact_match", "f1", "bleu", "chrf", "rouge", "rouge1", "rouge2", "rougeL",
                       "llm_judge", "pass_at_k"},
}

_KNOWN_FIELDS = {
    "task", "dataset_path", "dataset_name", "dataset_kwargs", "validation_split", "test_split",
    "fewshot_split", "fewshot_config", "process_docs", "output_type", "doc_to_text", "doc_to_target",
    "doc_to_choice", "target_delimiter", "fewshot_delimiter", "num_fewshot", "generation_kwargs",
    "repeats", "filter_list", "filter", "metric_list", "metadata", "description", "doc_id", "rows",
    "doc_to_messages",
}
# Harness fields accepted and ignored: they only tag, alias or decontaminate.
_IGNORED_FIELDS = {"tag", "task_alias", "training_split", "should_decontaminate",
                   "doc_to_decontamination_query", "include", "group_alias"}
_FILTER_FUNCTIONS = {"regex", "take_first", "lowercase", "uppercase", "remove_whitespace", "strip"}


@dataclass
class MetricConfig:
    name: str  # as written: acc, exact_match, rouge, pass_at_k, llm_judge, ...
    options: dict[str, Any] = field(default_factory=dict)  # k for pass_at_k; model, scale for llm_judge

    def reported(self) -> list[str]:
        """The metric names this entry reports."""
        if self.name == "rouge":
            return ["rouge1", "rouge2", "rougeL"]
        if self.name == "pass_at_k":
            return [f"pass@{k}" for k in self.options["k"]]
        return [self.name]


@dataclass
class TaskConfig:
    task: str
    output_type: str
    version: str
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_choice: Any = None
    doc_to_messages: str | None = None  # ours: a column of chat messages, the prompt under a chat template
    dataset_path: str | None = None
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] | None = None
    validation_split: str | None = None
    test_split: str | None = None
    fewshot_split: str | None = None
    fewshot_sampler: str = "default"
    process_docs: str | None = None
    doc_id: str | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    until: list[str] = field(default_factory=list)
    max_gen_toks: int = 256
    temperature: float = 0.0
    repeats: int = 1
    filters: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[MetricConfig] = field(default_factory=list)
    description: str = ""
    base_dir: Path | None = None  # where relative data files are looked up

    @property
    def eval_split(self) -> str:
        split = self.test_split or self.validation_split
        assert split is not None  # checked in parse_config
        return split

    def reported_metrics(self) -> list[str]:
        return [name for metric in self.metrics for name in metric.reported()]


def _fail(task: str, message: str, param: str) -> EvaluationError:
    return EvaluationError(f"task {task!r}: {message}", param=param)


def parse_config(raw: dict[str, Any], *, base_dir: Path | None = None, default_version: str | None = None
                 ) -> TaskConfig:
    """Check a task definition and return it typed; every problem is an EvaluationError naming the field."""
    if not isinstance(raw, dict):
        raise EvaluationError("a task definition must be a mapping of fields", param="task")
    name = raw.get("task")
    if not isinstance(name, str) or not name.strip():
        raise EvaluationError("a task definition needs a `task` name", param="task")
    unknown = set(raw) - _KNOWN_FIELDS - _IGNORED_FIELDS
    if unknown:
        raise _fail(name, f"unknown fields {sorted(unknown)}; known: {sorted(_KNOWN_FIELDS)}", sorted(unknown)[0])

    output_type = raw.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise _fail(name, f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}", "output_type")

    version = (raw.get("metadata") or {}).get("version", default_version)
    if version is None:
        raise _fail(name, "needs metadata.version (results are cached per task version)", "metadata.version")

    config = TaskConfig(task=name, output_type=output_type, version=str(version), base_dir=base_dir)
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "dataset_path", "dataset_name",
                "validation_split", "test_split", "fewshot_split", "process_docs", "doc_id", "description",
                "doc_to_messages"):
        if raw.get(key) is not None:
            setattr(config, key, raw[key])
    for key in ("target_delimiter", "fewshot_delimiter"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise _fail(name, f"{key} must be a string", key)
            setattr(config, key, raw[key])
    config.dataset_kwargs = dict(raw.get("dataset_kwargs") or {})
    config.fewshot_sampler = (raw.get("fewshot_config") or {}).get("sampler", "default")
    if config.fewshot_sampler not in ("default", "first_n"):
        raise _fail(name, "fewshot_config.sampler must be default or first_n", "fewshot_config.sampler")

    _parse_data(config, raw)
    _parse_numbers(config, raw)
    _parse_generation(config, raw.get("generation_kwargs"))
    config.filters = _parse_filters(name, raw)
    config.metrics = _parse_metrics(name, output_type, raw.get("metric_list"))

    if output_type != "loglikelihood_rolling" and config.doc_to_text is None:
        raise _fail(name, "needs doc_to_text (the prompt)", "doc_to_text")
    if config.doc_to_target is None:
        raise _fail(name, "needs doc_to_target (the answer)", "doc_to_target")
    if output_type == "multiple_choice" and config.doc_to_choice is None:
        raise _fail(name, "a multiple_choice task needs doc_to_choice", "doc_to_choice")
    for metric in config.metrics:
        if metric.name == "pass_at_k" and max(metric.options["k"]) > config.repeats:
            raise _fail(name, f"pass@{max(metric.options['k'])} needs repeats >= {max(metric.options['k'])} "
                        "samples per problem", "repeats")
    if config.process_docs is not None:
        from evaluation.tasks.process_docs import PROCESSORS

        if config.process_docs not in PROCESSORS:
            raise _fail(name, f"unknown process_docs {config.process_docs!r}; known: {sorted(PROCESSORS)}",
                        "process_docs")
    return config


def _parse_data(config: TaskConfig, raw: dict[str, Any]) -> None:
    rows = raw.get("rows")
    if rows is not None:
        if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
            raise _fail(config.task, "rows must be a non-empty list of objects", "rows")
        config.rows = rows
        config.validation_split = config.validation_split or "validation"
    elif not config.dataset_path:
        raise _fail(config.task, "needs a dataset_path (or inline rows)", "dataset_path")
    if config.test_split is None and config.validation_split is None:
        raise _fail(config.task, "needs a validation_split or test_split to evaluate on", "validation_split")


def _parse_numbers(config: TaskConfig, raw: dict[str, Any]) -> None:
    for key in ("num_fewshot", "repeats"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "num_fewshot" else 1):
                raise _fail(config.task, f"{key} must be a {'non-negative' if key == 'num_fewshot' else 'positive'} "
                            f"integer, got {value!r}", key)
            setattr(config, key, value)


def _parse_generation(config: TaskConfig, kwargs: Any) -> None:
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise _fail(config.task, "generation_kwargs must be a mapping", "generation_kwargs")
    until = kwargs.get("until", [config.fewshot_delimiter])  # the harness's default stop
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(stop, str) and stop for stop in until):
        raise _fail(config.task, "generation_kwargs.until must be a list of non-empty strings",
                    "generation_kwargs.until")
    config.until = until
    max_tokens = kwargs.get("max_gen_toks", 256)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise _fail(config.task, "generation_kwargs.max_gen_toks must be a positive integer",
                    "generation_kwargs.max_gen_toks")
    config.max_gen_toks = max_tokens
    temperature = kwargs.get("temperature", 0.0 if not kwargs.get("do_sample") else 1.0)
    if not isinstance(temperature, int | float) or temperature < 0:
        raise _fail(config.task, "generation_kwargs.temperature must be >= 0", "generation_kwargs.temperature")
    config.temperature = float(temperature)


def _parse_filters(task: str, raw: dict[str, Any]) -> list[dict[str, Any]]:
    steps = raw.get("filter")
    if steps is None and raw.get("filter_list"):
        pipelines = raw["filter_list"]
        if not isinstance(pipelines, list) or not isinstance(pipelines[0], dict):
            raise _fail(task, "filter_list must be a list of {name, filter: [steps]}", "filter_list")
        steps = pipelines[0].get("filter")
    if steps is None:
        return []
    if not isinstance(steps, list) or not all(isinstance(step, dict) and "function" in step for step in steps):
        raise _fail(task, "a filter is a list of steps like {function: regex, regex_pattern: ...}", "filter")
    for step in steps:
        if step["function"] not in _FILTER_FUNCTIONS:
            raise _fail(task, f"unknown filter function {step['function']!r}; known: {sorted(_FILTER_FUNCTIONS)}",
                        "filter")
        if step["function"] == "regex":
            import re

            try:
                re.compile(step.get("regex_pattern", ""))
            except re.error as error:
                raise _fail(task, f"bad regex_pattern: {error}", "filter") from error
    return steps


def _parse_metrics(task: str, output_type: str, metric_list: Any) -> list[MetricConfig]:
    if metric_list is None:
        return [MetricConfig(name) for name in DEFAULT_METRICS[output_type]]
    if not isinstance(metric_list, list) or not metric_list:
        raise _fail(task, "metric_list must be a non-empty list", "metric_list")
    metrics = []
    for entry in metric_list:
        entry = {"metric": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            raise _fail(task, "each metric_list entry needs a `metric` name", "metric_list")
        name = entry["metric"]
        if name not in ALLOWED_METRICS[output_type]:
            raise _fail(task, f"metric {name!r} does not apply to {output_type}; use one of "
                        f"{sorted(ALLOWED_METRICS[output_type])}", "metric_list")
        # aggregation/higher_is_better are fixed per metric here, as the harness's defaults
        options = {k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better")}
        if name == "pass_at_k":
            k = options.get("k", [1])
            k = [k] if isinstance(k, int) else k
            if not isinstance(k, list) or not all(isinstance(i, int) and i >= 1 for i in k):
                raise _fail(task, "pass_at_k needs k: a positive integer or a list of them", "metric_list")
            options["k"] = k
        if name == "llm_judge" and options.get("scale", "1-10") not in ("1-10", "pass_fail"):
            raise _fail(task, "llm_judge scale must be 1-10 or pass_fail", "metric_list")
        metric = MetricConfig(name, options)
        for reported in metric.reported():
            metric_spec(reported)
        metrics.append(metric)
    return metrics
