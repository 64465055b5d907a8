"""OpenAI's Evals API as a Task: an eval's testing criteria applied to a run's data source.

`task_from_spec({"type": "openai_eval", "eval": {...}, "data_source": {...}})` is what
`evaluation.tasks.load_task` dispatches to. The eval is `{"id", "name", "data_source_config",
"testing_criteria"}` (checked by `check_eval_config`), the data source one of:

- `jsonl`: rows `{"item": {...}, "sample": {...}}` whose outputs come with the data (no model is
  asked; run it with the `GivenOutputs` model),
- `completions`: rows `{"item": {...}}`, each turned into chat messages by `input_messages`
  (a template over `{{item.x}}`, or an `item_reference` to a messages field) and answered by the
  model under test,
- `agentd_task`: a built-in benchmark task by name (its own metrics; the eval's graders do not apply).

Sources must be inline (`file_content`): whoever resolves uploaded `file_id`s (the server) puts
their rows inline with `rows_from_jsonl` first, so the library never reads a file store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from evaluation import graders
from evaluation.data import parse_jsonl
from evaluation.metrics import MetricValue, mean, mean_stderr
from evaluation.requests import EvalModel, EvaluationError, GenerateRequest, ModelInfo
from evaluation.tasks.base import Sample, SampleScore, ScoringContext, Task

DATA_SOURCE_TYPES = ("jsonl", "completions", "agentd_task")
DEFAULT_MAX_TOKENS = 256
# Fields of a completions run's sampling_params that this runner applies; any other set field is
# refused, so that nothing a client asks for is silently ignored.
_SAMPLING_FIELDS = {"temperature", "max_completion_tokens", "seed"}


# -- checking what a client sent -----------------------------------------------------------------


def check_eval_config(data_source_config: Any, testing_criteria: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(stored data_source_config, checked testing criteria), or EvaluationError naming the field.

    The stored config is OpenAI's response shape: `{"type": "custom", "schema": {...item, sample...}}`.
    """
    if not isinstance(data_source_config, dict):
        raise EvaluationError("data_source_config: must be an object", param="data_source_config")
    kind = data_source_config.get("type")
    if kind != "custom":
        raise EvaluationError(f"data_source_config.type: {kind!r} is not supported here; use 'custom' with an "
                              "item_schema (there are no stored completions or logs to query)",
                              param="data_source_config.type")
    item_schema = data_source_config.get("item_schema")
    if not isinstance(item_schema, dict):
        raise EvaluationError("data_source_config.item_schema: a JSON schema object for each row's item",
                              param="data_source_config.item_schema")
    _check_schema(item_schema, "data_source_config.item_schema")
    include_sample = data_source_config.get("include_sample_schema", False)
    if not isinstance(include_sample, bool):
        raise EvaluationError("data_source_config.include_sample_schema: must be true or false",
                              param="data_source_config.include_sample_schema")
    if not isinstance(testing_criteria, list) or not testing_criteria:
        raise EvaluationError("testing_criteria: a non-empty list of graders", param="testing_criteria")
    fields = _item_fields(item_schema)
    checked = [graders.check_grader(spec, f"testing_criteria[{index}]", fields)
               for index, spec in enumerate(testing_criteria)]
    names = [spec["name"] for spec in checked]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise EvaluationError(f"testing_criteria[{index}].name: {name!r} is used twice; grader names must differ",
                                  param=f"testing_criteria[{index}].name")
    properties: dict[str, Any] = {"item": item_schema}
    if include_sample:
        properties["sample"] = SAMPLE_SCHEMA
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "custom", "schema": schema}, checked


SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
    },
    "required": ["model", "choices", "output_text"],
}


def _check_schema(schema: dict[str, Any], param: str) -> None:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        raise EvaluationError(f"{param}: not a valid JSON schema: {error.message}", param=param) from None


def _item_fields(item_schema: dict[str, Any]) -> set[str] | None:
    """The fields templates may use, when the schema closes the item's fields; None when it does not."""
    properties = item_schema.get("properties")
    if not isinstance(properties, dict) or item_schema.get("additionalProperties") not in (None, False):
        return None
    return set(properties)


def check_data_source(data_source: Any, eval_config: dict[str, Any]) -> dict[str, Any]:
    """The data source as the job will run it, or EvaluationError naming the field (`data_source.…`).

    `eval_config` is the stored eval (`data_source_config` in its response shape). Rows are
    checked against the eval's item schema here, so a bad row is a 400 rather than a failed run.
    """
    if not isinstance(data_source, dict) or data_source.get("type") not in DATA_SOURCE_TYPES:
        kind = data_source.get("type") if isinstance(data_source, dict) else None
        raise EvaluationError(f"data_source.type: {kind!r} is not supported; use one of "
                              f"{', '.join(DATA_SOURCE_TYPES)}", param="data_source.type")
    kind = data_source["type"]
    if kind == "agentd_task":
        from evaluation.tasks import builtin_tasks

        # Built-in names only: a path here would have the server read any file it can as task data
        # and hand its rows back in the output items.
        if not isinstance(data_source.get("task"), str) or data_source["task"] not in builtin_tasks():
            raise EvaluationError(f"data_source.task: {data_source.get('task')!r} is not a built-in task; use one of "
                                  f"{', '.join(builtin_tasks())}", param="data_source.task")
        if not isinstance(data_source.get("model"), str) or not data_source["model"]:
            raise EvaluationError("data_source.model: the model to evaluate", param="data_source.model")
        for key, least in (("limit", 1), ("num_fewshot", 0), ("seed", 0), ("batch_size", 1)):
            value = data_source.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise EvaluationError(f"data_source.{key}: an integer of at least {least}", param=f"data_source.{key}")
        return dict(data_source)
    rows = _rows(data_source)
    schema = eval_config["data_source_config"]["schema"]["properties"]["item"]
    _check_rows(rows, schema)
    checked = {"type": kind, "source": {"type": "file_content", "content": rows}}
    if kind == "completions":
        if not isinstance(data_source.get("model"), str) or not data_source["model"]:
            raise EvaluationError("data_source.model: a completions run needs the model that answers",
                                  param="data_source.model")
        checked["model"] = data_source["model"]
        checked["input_messages"] = _check_input_messages(data_source.get("input_messages"), _item_fields(schema))
        checked["sampling_params"] = _check_sampling(data_source.get("sampling_params"))
    return checked


def _rows(data_source: dict[str, Any]) -> list[dict[str, Any]]:
    source = data_source.get("source")
    if not isinstance(source, dict) or source.get("type") != "file_content":
        kind = source.get("type") if isinstance(source, dict) else None
        raise EvaluationError(f"data_source.source.type: {kind!r} is not supported; give rows as file_content or "
                              "an uploaded file as file_id", param="data_source.source.type")
    content = source.get("content")
    if not isinstance(content, list) or not content:
        raise EvaluationError("data_source.source.content: a non-empty list of {item, sample?} rows",
                              param="data_source.source.content")
    rows = []
    for index, row in enumerate(content):
        where = f"data_source.source.content[{index}]"
        if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
            raise EvaluationError(f"{where}.item: each row needs an item object", param=f"{where}.item")
        if row.get("sample") is not None and not isinstance(row["sample"], dict):
            raise EvaluationError(f"{where}.sample: must be an object", param=f"{where}.sample")
        rows.append({"item": row["item"], **({"sample": row["sample"]} if row.get("sample") is not None else {})})
    return rows


def _check_rows(rows: list[dict[str, Any]], item_schema: dict[str, Any]) -> None:
    import jsonschema

    validator = jsonschema.validators.validator_for(item_schema)(item_schema)
    for index, row in enumerate(rows):
        error = jsonschema.exceptions.best_match(validator.iter_errors(row["item"]))
        if error is not None:
            where = f"data_source.source.content[{index}].item"
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise EvaluationError(f"{where}{path}: {error.message} (the eval's item_schema)", param=where + path)


def _check_input_messages(value: Any, item_fields: set[str] | None) -> dict[str, Any]:
    param = "data_source.input_messages"
    if not isinstance(value, dict):
        raise EvaluationError(f"{param}: a template of messages, or an item_reference", param=param)
    if value.get("type") == "item_reference":
        reference = value.get("item_reference")
        if not isinstance(reference, str) or not reference.startswith("item."):
            raise EvaluationError(f"{param}.item_reference: a path into the item, like item.messages",
                                  param=f"{param}.item_reference")
        return {"type": "item_reference", "item_reference": reference}
    if value.get("type") != "template":
        raise EvaluationError(f"{param}.type: {value.get('type')!r}; use template or item_reference",
                              param=f"{param}.type")
    messages = graders.check_messages(value.get("template"), f"{param}.template")
    for index, message in enumerate(messages):
        for path in graders.template_paths(message["content"], f"{param}.template[{index}].content"):
            where = f"{param}.template[{index}].content"
            if path[0] == "sample":
                raise EvaluationError(f"{where}: the input cannot use the sample, which does not exist yet",
                                      param=where, code="invalid_template")
            if item_fields is not None and len(path) > 1 and path[1] not in item_fields:
                raise EvaluationError(f"{where}: {{{{item.{path[1]}}}}} is not a field of the item schema",
                                      param=where, code="invalid_template")
    return {"type": "template", "template": messages}


def _check_sampling(value: Any) -> dict[str, Any]:
    param = "data_source.sampling_params"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvaluationError(f"{param}: must be an object", param=param)
    checked = {}
    for key, setting in value.items():
        if setting is None:
            continue
        if key == "top_p" and setting == 1:
            continue  # the default: nothing to apply
        if key not in _SAMPLING_FIELDS:
            raise EvaluationError(f"{param}.{key}: not supported by this server's eval runs (supported: "
                                  f"{', '.join(sorted(_SAMPLING_FIELDS))})", param=f"{param}.{key}")
        if isinstance(setting, bool) or not isinstance(setting, (int, float)):
            raise EvaluationError(f"{param}.{key}: must be a number", param=f"{param}.{key}")
        if key == "temperature" and not 0 <= setting <= 2:
            raise EvaluationError(f"{param}.temperature: between 0 and 2", param=f"{param}.temperature")
        if key == "max_completion_tokens" and (int(setting) != setting or setting < 1):
            raise EvaluationError(f"{param}.max_completion_tokens: a positive integer",
                                  param=f"{param}.max_completion_tokens")
        checked[key] = setting
    return checked


def rows_from_jsonl(text: str, param: str = "data_source.source.id") -> list[dict[str, Any]]:
    """An uploaded JSONL file's rows: each line `{"item": {...}, "sample": {...}?}`, or a bare item."""
    rows = [row if isinstance(row.get("item"), dict) else {"item": row}
            for row in parse_jsonl(text, f"{param}:", param)]
    if not rows:
        raise EvaluationError(f"{param}: the file has no rows", param=param)
    return rows


# -- the task --------------------------------------------------------------------------------------


def task_from_spec(spec: dict[str, Any]) -> Task:
    """The Task for `{"type": "openai_eval", "eval": {...}, "data_source": {...}}` (see the module doc)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("eval"), dict):
        raise EvaluationError("an openai_eval task needs the eval ({id, name, data_source_config, "
                              "testing_criteria})", param="eval")
    data_source = spec.get("data_source")
    if isinstance(data_source, dict) and data_source.get("type") == "agentd_task":
        from evaluation.tasks import load_task

        return load_task(data_source.get("task"))
    return OpenAIEvalTask(spec["eval"], check_data_source(data_source, spec["eval"]))


class OpenAIEvalTask(Task):
    """Every row graded by every testing criterion; a row passes when all its graders pass."""

    output_type = "generate_until"

    def __init__(self, eval_config: dict[str, Any], data_source: dict[str, Any]):
        self.eval_id = str(eval_config.get("id") or "eval")
        self.name = f"openai_eval/{self.eval_id}"
        self.description = str(eval_config.get("name") or self.eval_id)
        self.criteria = eval_config["testing_criteria"]
        self.data_source = data_source
        self.rows = data_source["source"]["content"]
        # Anything that changes a row's grade changes the version, so cached records of another
        # run of the same eval (other rows, other prompt) are never taken for this one's.
        content = {"criteria": self.criteria, "data_source": {k: v for k, v in data_source.items() if k != "model"}}
        self.version = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def samples(self, *, limit: int | None = None, num_fewshot: int | None = None, seed: int = 1234,
                chat_template: bool = False) -> list[Sample]:
        rows = self.rows if limit is None else self.rows[:limit]
        return [self._sample(index, row) for index, row in enumerate(rows)]

    def _sample(self, index: int, row: dict[str, Any]) -> Sample:
        doc = {"item": row["item"], "sample": row.get("sample")}
        if self.data_source["type"] != "completions":
            return Sample(id=str(index), requests=[], target=None, prompt="", doc=doc)
        try:
            messages = self._messages(row["item"])
        except EvaluationError as error:  # this row cannot be asked; it counts as errored, the run goes on
            return Sample(id=str(index), requests=[], target=None, prompt="", doc={**doc, "error": error.message})
        params = self.data_source.get("sampling_params") or {}
        request = GenerateRequest(messages=tuple(messages),
                                  max_tokens=int(params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS),
                                  temperature=float(params.get("temperature") or 0.0), seed=params.get("seed"))
        prompt = "\n".join(f"{message['role']}: {message['content']}" for message in messages)
        return Sample(id=str(index), requests=[request], target=None, prompt=prompt, doc={**doc, "input": messages})

    def _messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        spec = self.data_source["input_messages"]
        if spec["type"] == "template":
            return graders.render_messages(spec["template"], {"item": item})
        current: Any = item
        for key in spec["item_reference"].split(".")[1:]:
            if not isinstance(current, dict) or key not in current:
                raise EvaluationError(f"{spec['item_reference']}: the item has no field {key!r}", code="missing_field")
            current = current[key]
        if isinstance(current, str):
            return [{"role": "user", "content": current}]
        return graders.check_messages(current, spec["item_reference"])

    async def score(self, sample: Sample, responses: list, ctx: ScoringContext) -> SampleScore:
        doc = sample.doc
        if doc.get("error"):
            return _errored(doc["error"], self.criteria)
        if sample.requests:
            text = str(responses[0])
            given = {"output_text": text, "output_json": _json_or_none(text),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "model": self.data_source.get("model")}
        else:
            given = doc.get("sample") or {}
            text = str(given.get("output_text", "")) if isinstance(given, dict) else ""
        results = [await graders.grade(spec, doc["item"], given, ctx) for spec in self.criteria]
        return _score(results, text)

    def aggregate(self, scores: list[SampleScore]) -> dict[str, MetricValue]:
        out: dict[str, MetricValue] = {}
        if not scores:
            return out
        columns = {"pass_rate": [s.metrics["passed"] for s in scores],
                   "error_rate": [s.metrics["errored"] for s in scores]}
        for spec in self.criteria:
            name = spec["name"]
            columns[f"{name}/pass_rate"] = [s.metrics.get(f"{name}/passed", 0.0) for s in scores]
            columns[f"{name}/score"] = [s.metrics.get(f"{name}/score", 0.0) for s in scores]
        for name, items in columns.items():
            out[name] = MetricValue(mean(items), mean_stderr(items), higher_is_better=name != "error_rate")
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "output_type": self.output_type,
                "metrics": ["pass_rate", "error_rate"] + [f"{spec['name']}/pass_rate" for spec in self.criteria],
                "samples": len(self.rows), "source": f"OpenAI eval {self.description!r} ({self.eval_id}), "
                                                      f"{self.data_source['type']} data source",
                "description": self.description}


def _score(results: list[graders.GraderResult], output: str) -> SampleScore:
    errored = any(result.error for result in results)
    passed = not errored and all(result.passed for result in results)
    metrics: dict[str, Any] = {"passed": float(passed), "errored": float(errored),
                               "results": [result.to_dict() for result in results]}
    for result in results:
        metrics[f"{result.name}/score"] = result.score
        metrics[f"{result.name}/passed"] = float(result.passed)
    return SampleScore(metrics=metrics, output=output, parsed=all(result.parsed for result in results))


def _errored(message: str, criteria: list[dict[str, Any]]) -> SampleScore:
    results = [graders.GraderResult(spec["name"], spec["type"], 0.0, False, error=message) for spec in criteria]
    return _score(results, "")


def _json_or_none(text: str) -> Any:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, (dict, list)) else None


# -- the model of a run whose outputs come with its data ------------------------------------------


class GivenOutputs(EvalModel):
    """The "model" of a jsonl run: its rows carry the outputs, so nothing may be asked of it.

    Open it from the target `{"type": "given", "id": "given-outputs"}`.
    """

    def __init__(self, model_id: str = "given-outputs"):
        self.info = ModelInfo(id=model_id, fingerprint=f"given-outputs:{model_id}")

    def _refuse(self) -> EvaluationError:
        return EvaluationError("this run's outputs come with its data; there is no model to ask (use a "
                               "completions data source to generate outputs)", param="data_source",
                               code="no_model")

    async def loglikelihood(self, requests, batch_size: int = 8):
        raise self._refuse()

    async def loglikelihood_rolling(self, requests, batch_size: int = 8):
        raise self._refuse()

    async def generate(self, requests, batch_size: int = 8):
        raise self._refuse()
