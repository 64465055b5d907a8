"""OpenAI's eval graders: string_check, text_similarity, label_model, score_model and python.

A grader is the dict OpenAI's Evals API takes as a testing criterion (`{"type": "string_check",
"name": ..., "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}`).
`check_grader` validates one when an eval is created, so a mistake is a 400 naming the field
rather than a run that fails later; `grade` applies one to a data item and the model's sample.

Templates use OpenAI's `{{item.field}}` / `{{sample.output_text}}` notation: a dotted path into
the `item` (the data row) or `sample` (what the model answered) namespace, nothing else.

Supported text_similarity metrics: fuzzy_match, bleu, gleu, rouge_1 … rouge_5, rouge_l.
`meteor` (needs WordNet data) and `cosine` (needs an embedding model) are refused at create.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evaluation.requests import EvaluationError, GenerateRequest

GRADER_TYPES = ("string_check", "text_similarity", "label_model", "score_model", "python")
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
_UNSUPPORTED_METRICS = {"meteor": "it needs NLTK's WordNet data, which is not installed offline",
                        "cosine": "it needs an embedding model; use rouge_l or fuzzy_match"}
# Where OpenAI leaves a threshold optional: half way up the score's range (python graders score 0..1).
DEFAULT_PYTHON_THRESHOLD = 0.5
PYTHON_TIMEOUT_S = 20.0
JUDGE_MAX_TOKENS = 32

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)
_PATH = re.compile(r"^(item|sample)((?:\.[A-Za-z0-9_\-]+)*)$")
_GRADE_MARK = "__agentd_grade__"
_ERROR_MARK = "__agentd_grade_error__"
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass
class GraderResult:
    """One grader's verdict on one item, in the shape of an output item's `results` entry."""

    name: str
    type: str
    score: float
    passed: bool
    sample: dict[str, Any] | None = None  # what a model grader was asked and answered
    error: str | None = None  # the grader could not grade (counts as `errored`)
    parsed: bool = True  # False: a judge's answer named no label / no number
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "score": self.score, "passed": self.passed,
               "sample": self.sample}
        if self.error:
            out["error"] = self.error
        return out


# -- templates ---------------------------------------------------------------------------------


def template_paths(template: str, param: str) -> list[tuple[str, ...]]:
    """The `{{...}}` references in `template`, as (namespace, key, ...) tuples; a bad one raises."""
    if template.count("{{") != template.count("}}"):
        raise EvaluationError(f"{param}: unbalanced '{{{{' / '}}}}' in template {template!r}", param=param,
                              code="invalid_template")
    paths = []
    for match in _TEMPLATE.finditer(template):
        reference = match.group(1).strip()
        found = _PATH.match(reference)
        if not found:
            raise EvaluationError(
                f"{param}: template reference {{{{{reference}}}}} is not understood; use {{{{item.<field>}}}} "
                "for the data row or {{sample.output_text}} for the model's answer", param=param,
                code="invalid_template")
        paths.append((found.group(1), *[key for key in found.group(2).split(".") if key]))
    return paths


def render(template: str, namespaces: dict[str, Any]) -> str:
    """Fill `{{item.x}}` / `{{sample.y}}`; a missing field raises EvaluationError (that item errors)."""

    def value(match: re.Match) -> str:
        reference = match.group(1).strip()
        found = _PATH.match(reference)
        if not found:
            raise EvaluationError(f"template reference {{{{{reference}}}}} is not understood", code="invalid_template")
        current: Any = namespaces.get(found.group(1))
        for key in [key for key in found.group(2).split(".") if key]:
            if isinstance(current, dict) and key in current:
                current = current[key]
            elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
                current = current[int(key)]
            else:
                raise EvaluationError(f"{{{{{reference}}}}}: the {found.group(1)} has no field {key!r}",
                                      code="missing_field")
        if current is None:
            return ""
        return current if isinstance(current, str) else json.dumps(current)

    return _TEMPLATE.sub(value, template)


def message_text(content: Any, param: str) -> str:
    """A message's content as one string: a string, or OpenAI text parts (input_text / output_text)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    texts = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("input_text", "output_text") and \
                isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise EvaluationError(f"{param}: content of type {kind!r} is not supported; only text is",
                                  param=param, code="unsupported_content")
    return "".join(texts)


def check_messages(messages: Any, param: str) -> list[dict[str, str]]:
    """Chat message templates ({role, content}) as plain {role, content-string} dicts; bad ones raise."""
    if not isinstance(messages, list) or not messages:
        raise EvaluationError(f"{param}: must be a non-empty list of messages", param=param)
    checked = []
    for index, message in enumerate(messages):
        where = f"{param}[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise EvaluationError(f"{where}: a message needs a role and a content", param=where)
        if message["role"] not in ("system", "developer", "user", "assistant"):
            raise EvaluationError(f"{where}.role: {message['role']!r} is not system, developer, user or assistant",
                                  param=f"{where}.role")
        text = message_text(message.get("content"), f"{where}.content")
        template_paths(text, f"{where}.content")
        checked.append({"role": "system" if message["role"] == "developer" else message["role"], "content": text})
    return checked


def render_messages(messages: list[dict[str, str]], namespaces: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": message["role"], "content": render(message["content"], namespaces)} for message in messages]


# -- validation at create ----------------------------------------------------------------------


def check_grader(spec: Any, param: str, item_fields: set[str] | None = None) -> dict[str, Any]:
    """The grader `spec` as it will be stored, or EvaluationError naming the field at fault.

    `item_fields`: the fields the eval's item schema declares (None when it does not say), so
    that `{{item.anwser}}` is refused at create instead of failing every item of every run.
    """
    if not isinstance(spec, dict):
        raise EvaluationError(f"{param}: a testing criterion must be an object", param=param)
    kind = spec.get("type")
    if kind not in GRADER_TYPES:
        raise EvaluationError(f"{param}.type: unknown grader type {kind!r}; supported: {', '.join(GRADER_TYPES)}",
                              param=f"{param}.type", code="unsupported_grader")
    if not isinstance(spec.get("name"), str) or not spec["name"].strip():
        raise EvaluationError(f"{param}.name: a grader needs a name", param=f"{param}.name")
    checked = dict(spec)

    def template(key: str) -> str:
        value = spec.get(key)
        if not isinstance(value, str):
            raise EvaluationError(f"{param}.{key}: must be a string (a template)", param=f"{param}.{key}")
        _check_fields(template_paths(value, f"{param}.{key}"), item_fields, f"{param}.{key}")
        return value

    def threshold(required: bool, default: float | None = None) -> float | None:
        value = spec.get("pass_threshold", default)
        if value is None and required:
            raise EvaluationError(f"{param}.pass_threshold: required for a {kind} grader",
                                  param=f"{param}.pass_threshold")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise EvaluationError(f"{param}.pass_threshold: must be a number", param=f"{param}.pass_threshold")
        return None if value is None else float(value)

    if kind == "string_check":
        template("input"), template("reference")
        if spec.get("operation") not in STRING_OPERATIONS:
            raise EvaluationError(f"{param}.operation: {spec.get('operation')!r} is not one of "
                                  f"{', '.join(STRING_OPERATIONS)}", param=f"{param}.operation")
    elif kind == "text_similarity":
        template("input"), template("reference")
        metric = spec.get("evaluation_metric")
        if metric in _UNSUPPORTED_METRICS:
            raise EvaluationError(f"{param}.evaluation_metric: {metric!r} is not supported here: "
                                  f"{_UNSUPPORTED_METRICS[metric]}", param=f"{param}.evaluation_metric",
                                  code="unsupported_metric")
        if metric not in SIMILARITY_METRICS:
            raise EvaluationError(f"{param}.evaluation_metric: {metric!r} is not one of "
                                  f"{', '.join(SIMILARITY_METRICS)}", param=f"{param}.evaluation_metric",
                                  code="unsupported_metric")
        checked["pass_threshold"] = threshold(required=True)
    elif kind in ("label_model", "score_model"):
        if not isinstance(spec.get("model"), str) or not spec["model"]:
            raise EvaluationError(f"{param}.model: a {kind} grader needs the model that grades",
                                  param=f"{param}.model")
        for index, message in enumerate(check_messages(spec.get("input"), f"{param}.input")):
            _check_fields(template_paths(message["content"], f"{param}.input[{index}].content"), item_fields,
                          f"{param}.input[{index}].content")
        if kind == "label_model":
            labels = spec.get("labels")
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
                raise EvaluationError(f"{param}.labels: a non-empty list of label strings", param=f"{param}.labels")
            passing = spec.get("passing_labels")
            if not isinstance(passing, list) or not passing or not set(passing) <= set(labels):
                raise EvaluationError(f"{param}.passing_labels: a non-empty subset of labels {labels}",
                                      param=f"{param}.passing_labels")
        else:
            low, high = _score_range(spec, param)
            checked["range"] = [low, high]
            value = threshold(required=False)
            if value is not None and not low <= value <= high:
                raise EvaluationError(f"{param}.pass_threshold: {value} is outside the range [{low}, {high}]",
                                      param=f"{param}.pass_threshold")
            if not isinstance(spec.get("sampling_params") or {}, dict):
                raise EvaluationError(f"{param}.sampling_params: must be an object", param=f"{param}.sampling_params")
    else:  # python
        source = spec.get("source")
        if not isinstance(source, str) or not source.strip():
            raise EvaluationError(f"{param}.source: the Python source defining grade(sample, item)",
                                  param=f"{param}.source")
        try:
            tree = ast.parse(source)
        except SyntaxError as error:
            raise EvaluationError(f"{param}.source: line {error.lineno}: {error.msg}", param=f"{param}.source",
                                  code="invalid_source") from None
        if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "grade"
                   for node in tree.body):
            raise EvaluationError(f"{param}.source: defines no top-level function grade(sample, item)",
                                  param=f"{param}.source", code="invalid_source")
        threshold(required=False)
    return checked


def _score_range(spec: dict[str, Any], param: str) -> tuple[float, float]:
    value = spec.get("range")
    if value is None:
        return 0.0, 1.0  # OpenAI's default
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(x, (int, float)) and not
                                                                  isinstance(x, bool) for x in value)
            or not value[0] < value[1]):
        raise EvaluationError(f"{param}.range: two numbers [low, high] with low < high", param=f"{param}.range")
    return float(value[0]), float(value[1])


def _check_fields(paths: list[tuple[str, ...]], item_fields: set[str] | None, param: str) -> None:
    if item_fields is None:
        return
    for path in paths:
        if path[0] == "item" and len(path) > 1 and path[1] not in item_fields:
            raise EvaluationError(f"{param}: {{{{item.{path[1]}}}}} is not a field of the item schema "
                                  f"(it has {', '.join(sorted(item_fields)) or 'none'})", param=param,
                                  code="invalid_template")


# -- the pure graders ----------------------------------------------------------------------------


def string_check(input: str, reference: str, operation: str) -> float:
    """1.0 or 0.0. `like`: the input contains the reference; `ilike`: the same ignoring case."""
    if operation == "eq":
        return float(input == reference)
    if operation == "ne":
        return float(input != reference)
    if operation == "like":
        return float(reference in input)
    if operation == "ilike":
        return float(reference.lower() in input.lower())
    raise EvaluationError(f"unknown string_check operation {operation!r}", param="operation")


def text_similarity(input: str, reference: str, metric: str) -> float:
    """A similarity in [0, 1] between the model's text and the reference."""
    if metric == "fuzzy_match":
        # The normalised indel similarity (rapidfuzz's fuzz.ratio / 100): 2·matches / total length.
        return difflib.SequenceMatcher(None, input, reference, autojunk=False).ratio() if input or reference else 1.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(input, [reference]).score / 100.0
    if metric == "gleu":
        return gleu(input.split(), reference.split())
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        kind = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
        return rouge_scorer.RougeScorer([kind], use_stemmer=False).score(reference, input)[kind].fmeasure
    raise EvaluationError(f"unsupported evaluation_metric {metric!r}", param="evaluation_metric")


def gleu(hypothesis: list[str], reference: list[str], max_n: int = 4) -> float:
    """Google-BLEU (Wu et al. 2016) for one sentence: matching n-grams (1..4) over the larger of
    the hypothesis's and the reference's n-gram counts, i.e. min(precision, recall)."""

    def grams(tokens: list[str]) -> Counter:
        return Counter(tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))

    hyp, ref = grams(hypothesis), grams(reference)
    total = max(sum(hyp.values()), sum(ref.values()))
    return sum((hyp & ref).values()) / total if total else 0.0


# -- grading one item ----------------------------------------------------------------------------


async def grade(spec: dict[str, Any], item: dict[str, Any], sample: dict[str, Any], ctx: Any) -> GraderResult:
    """Apply one (checked) grader. Never raises for what the data or a judge does: a grader that
    cannot grade returns a result with `error` set (the item counts as errored)."""
    kind, name = spec["type"], spec["name"]
    namespaces = {"item": item, "sample": sample}
    try:
        if kind == "string_check":
            score = string_check(render(spec["input"], namespaces), render(spec["reference"], namespaces),
                                 spec["operation"])
            return GraderResult(name, kind, score, score == 1.0)
        if kind == "text_similarity":
            score = text_similarity(render(spec["input"], namespaces), render(spec["reference"], namespaces),
                                    spec["evaluation_metric"])
            return GraderResult(name, kind, score, score >= spec["pass_threshold"])
        if kind == "python":
            return await _python(spec, item, sample, ctx)
        return await _model_grader(spec, namespaces, ctx)
    except EvaluationError as error:
        return GraderResult(name, kind, 0.0, False, error=error.message)


async def _python(spec: dict[str, Any], item: dict[str, Any], sample: dict[str, Any], ctx: Any) -> GraderResult:
    name = spec["name"]
    if ctx is None or ctx.execute is None:
        return GraderResult(name, "python", 0.0, False, error="python graders need a sandbox; none is available here")
    # The data travel as JSON string literals, never as code, so no item can inject Python.
    # The sandbox reports only whether the code ended cleanly and what it printed, so the
    # grader's own exception is printed too, to say why an item errored.
    code = (f"{spec['source']}\n\nimport json as _json\n"
            f"_sample = _json.loads({json.dumps(json.dumps(sample))})\n"
            f"_item = _json.loads({json.dumps(json.dumps(item))})\n"
            f"try:\n    _grade = float(grade(_sample, _item))\n"
            f"except Exception as _error:\n    print({_ERROR_MARK!r}, type(_error).__name__ + ': ' + str(_error))\n"
            f"else:\n    print({_GRADE_MARK!r}, _json.dumps(_grade))\n")
    ok, stdout = await ctx.execute(code, PYTHON_TIMEOUT_S)
    lines = [line for line in (stdout or "").splitlines() if line.startswith(_GRADE_MARK)]
    if not ok or not lines:
        errors = [line[len(_ERROR_MARK):].strip() for line in (stdout or "").splitlines()
                  if line.startswith(_ERROR_MARK)]
        reason = errors[-1] if errors else (stdout or "").strip()[-500:] or "it printed nothing (killed at a limit?)"
        return GraderResult(name, "python", 0.0, False, error=f"grade(sample, item) did not return a number: {reason}")
    try:
        score = float(json.loads(lines[-1][len(_GRADE_MARK):]))
    except (ValueError, TypeError):
        return GraderResult(name, "python", 0.0, False, error=f"grade() returned {lines[-1]!r}, not a number")
    threshold = spec.get("pass_threshold")
    return GraderResult(name, "python", score,
                        score >= (DEFAULT_PYTHON_THRESHOLD if threshold is None else threshold))


async def _model_grader(spec: dict[str, Any], namespaces: dict[str, Any], ctx: Any) -> GraderResult:
    kind, name = spec["type"], spec["name"]
    if ctx is None or ctx.judge is None:
        return GraderResult(name, kind, 0.0, False, error=f"{kind} graders need a judge model; none is available here")
    messages = render_messages(check_messages(spec["input"], "input"), namespaces)
    if kind == "label_model":
        instruction = f"Answer with exactly one of these labels: {', '.join(spec['labels'])}."
    else:
        low, high = spec.get("range") or (0.0, 1.0)
        instruction = f"Answer with a single number from {low:g} to {high:g}."
    messages = _with_instruction(messages, instruction)
    params = spec.get("sampling_params") or {}
    request = GenerateRequest(messages=tuple(messages), max_tokens=int(params.get("max_completions_tokens")
                                                                       or JUDGE_MAX_TOKENS),
                              temperature=float(params.get("temperature") or 0.0), seed=params.get("seed"))
    try:
        judge = await ctx.judge(spec["model"])
        answer = (await judge.generate([request]))[0]
    except EvaluationError as error:
        return GraderResult(name, kind, 0.0, False, error=f"judge {spec['model']}: {error.message}")
    except Exception as error:  # noqa: BLE001 - a judge failing is this item's error, not the run's
        return GraderResult(name, kind, 0.0, False, error=f"judge {spec['model']} failed: {error}")
    sample = {"input": messages, "output": [{"role": "assistant", "content": answer}], "model": spec["model"]}
    if kind == "label_model":
        label = parse_label(answer, spec["labels"])
        if label is None:
            return GraderResult(name, kind, 0.0, False, sample=sample, parsed=False)
        passed = label in spec["passing_labels"]
        return GraderResult(name, kind, float(passed), passed, sample=sample, extra={"label": label})
    score = parse_score(answer, low, high)
    if score is None:
        return GraderResult(name, kind, 0.0, False, sample=sample, parsed=False)
    threshold = spec.get("pass_threshold")
    return GraderResult(name, kind, score, score >= ((low + high) / 2 if threshold is None else threshold),
                        sample=sample)


def _with_instruction(messages: list[dict[str, str]], instruction: str) -> list[dict[str, str]]:
    # Small judges follow the last thing they read best: the instruction ends the last user turn.
    messages = [dict(message) for message in messages]
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = f"{message['content']}\n\n{instruction}"
            return messages
    return messages + [{"role": "user", "content": instruction}]


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label a judge answered: the whole answer (ignoring case and punctuation around it), else
    the label mentioned first as a whole word; None when it names none."""
    stripped = answer.strip().strip(".!\"'`*").strip().lower()
    for label in labels:
        if stripped == label.lower():
            return label
    found = []
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", answer.lower())
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else None


def parse_score(answer: str, low: float, high: float) -> float | None:
    """The first number in the judge's answer, when it lies in [low, high]."""
    match = _NUMBER.search(answer)
    if not match:
        return None
    value = float(match.group())
    return value if low <= value <= high else None
