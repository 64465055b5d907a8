"""Users' own tasks from rows in the common shapes, detected from the columns.

| columns | task |
|---|---|
| `messages` (OpenAI chat) | generate the last assistant message from the ones before it |
| `question`, `A`, `B`[, `C`, `D`, ...], `answer` | multiple choice in MMLU's format |
| `question`, `choices` (a list), `answer` | multiple choice in ARC's format |
| `question`, `answer` | generate the answer; exact match and F1 |
| `prompt`, `completion` | generate the completion; exact match and F1 |
| `text` | perplexity of the text (loglikelihood_rolling) |

A `mapping` renames columns first: `{"question": "q", "answer": "a"}` reads `question` from `q`.
The task's version is a hash of its rows and shape, so an edited file never reuses stale results.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from evaluation.requests import EvaluationError
from evaluation.tasks.config import parse_config
from evaluation.tasks.configurable import ConfigurableTask

Row = dict[str, Any]
SHAPES = ["messages", "question + A + B [+ C + D ...] + answer", "question + choices + answer",
          "question + answer", "prompt + completion", "text"]


def task_from_rows(rows: list[Row], *, name: str, source: str,
                   mapping: dict[str, str] | None = None) -> ConfigurableTask:
    rows = _apply_mapping(rows, mapping or {})
    shape, definition, docs = _detect(rows)
    digest = hashlib.sha256(json.dumps([shape, rows], sort_keys=True, default=str).encode()).hexdigest()
    definition = {"task": name, **definition, "rows": docs, "metadata": {"version": f"data-{digest[:12]}"}}
    return ConfigurableTask(parse_config(definition), source=f"{source} ({shape})")


def _apply_mapping(rows: list[Row], mapping: dict[str, str]) -> list[Row]:
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise EvaluationError("mapping must map task fields to column names, e.g. {\"question\": \"q\"}",
                              param="mapping")
    if not mapping:
        return rows
    missing = sorted({column for column in mapping.values() if column not in rows[0]})
    if missing:
        raise EvaluationError(f"mapping names columns the data lacks: {missing}; found columns {sorted(rows[0])}",
                              param="mapping")
    renamed = set(mapping.values())
    return [{**{k: v for k, v in row.items() if k not in renamed},
             **{field: row.get(column) for field, column in mapping.items()}} for row in rows]


def _detect(rows: list[Row]) -> tuple[str, dict[str, Any], list[Row]]:
    columns = set(rows[0])
    if "messages" in columns:
        return "messages", *_messages(rows)
    if {"question", "answer", "A", "B"} <= columns:
        return "question/A/B/C/D/answer", *_lettered_choices(rows)
    if {"question", "choices", "answer"} <= columns:
        return "question/choices/answer", *_listed_choices(rows)
    if {"question", "answer"} <= columns:
        return "question/answer", _qa_definition("Question: {{question}}\nAnswer:", "answer"), \
            _require(rows, ["question", "answer"])
    if {"prompt", "completion"} <= columns:
        definition = _qa_definition("prompt", "completion")
        definition["target_delimiter"] = ""
        return "prompt/completion", definition, _require(rows, ["prompt", "completion"])
    if "text" in columns:
        return "text", {"output_type": "loglikelihood_rolling", "doc_to_target": "text"}, _require(rows, ["text"])
    raise EvaluationError(f"the data fits no task shape: found columns {sorted(columns)}; expected one of "
                          f"{SHAPES}, or give a mapping such as {{\"question\": \"q\", \"answer\": \"a\"}}",
                          param="mapping")


def _require(rows: list[Row], fields: list[str]) -> list[Row]:
    for number, row in enumerate(rows, start=1):
        for field in fields:
            if row.get(field) is None or row.get(field) == "":
                raise EvaluationError(f"row {number} has no {field!r}; it has {sorted(row)}", param=field)
    return [{**row, **{field: _text(row[field]) for field in fields}} for row in rows]


def _text(value: Any) -> Any:
    # several accepted answers may be given as a list; everything else is compared as text
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def _qa_definition(text: str, target: str) -> dict[str, Any]:
    return {"output_type": "generate_until", "doc_to_text": text, "doc_to_target": target,
            "generation_kwargs": {"until": ["\n\n", "\nQuestion:"], "max_gen_toks": 128},
            "metric_list": [{"metric": "exact_match"}, {"metric": "f1"}]}


def _messages(rows: list[Row]) -> tuple[dict[str, Any], list[Row]]:
    docs = []
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if (not isinstance(messages, list) or len(messages) < 2
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
                           for m in messages)
                or messages[-1]["role"] != "assistant"):
            raise EvaluationError(f"row {number}: messages must be a list of {{role, content}} with at least one "
                                  "message before a final assistant message", param="messages")
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant:"
        docs.append({**row, "prompt_messages": prompt, "prompt_text": text, "answer": messages[-1]["content"]})
    definition = {"output_type": "generate_until", "doc_to_text": "prompt_text", "doc_to_target": "answer",
                  "doc_to_messages": "prompt_messages",
                  "generation_kwargs": {"until": ["\nuser:"], "max_gen_toks": 256},
                  "metric_list": [{"metric": "exact_match"}, {"metric": "f1"}]}
    return definition, docs


def _gold_index(answer: Any, labels: list[str], number: int) -> int:
    text = str(answer).strip()
    if text.upper() in labels:
        return labels.index(text.upper())
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    raise EvaluationError(f"row {number}: answer {answer!r} is not one of {labels} or an index below {len(labels)}",
                          param="answer")


def _lettered_choices(rows: list[Row]) -> tuple[dict[str, Any], list[Row]]:
    labels = []
    for letter in string.ascii_uppercase:
        if letter not in rows[0]:
            break
        labels.append(letter)
    rows = _require(rows, ["question", *labels])
    docs = [{**row, "gold": _gold_index(row.get("answer"), labels, number)} for number, row in enumerate(rows, 1)]
    # MMLU's prompt, as lm-evaluation-harness writes it
    text = "{{question.strip()}}\n" + "".join(f"{label}. {{{{{label}}}}}\n" for label in labels) + "Answer:"
    return {"output_type": "multiple_choice", "doc_to_text": text, "doc_to_choice": labels,
            "doc_to_target": "gold", "metric_list": [{"metric": "acc"}]}, docs


def _listed_choices(rows: list[Row]) -> tuple[dict[str, Any], list[Row]]:
    docs = []
    for number, row in enumerate(_require(rows, ["question"]), start=1):
        choices = row.get("choices")
        if isinstance(choices, str):  # a CSV cell holding a JSON list
            try:
                choices = json.loads(choices)
            except json.JSONDecodeError:
                choices = None
        if not isinstance(choices, list) or len(choices) < 2:
            raise EvaluationError(f"row {number}: choices must be a list of at least two answers", param="choices")
        choices = [str(choice) for choice in choices]
        answer = row.get("answer")
        gold = choices.index(str(answer)) if str(answer) in choices else \
            _gold_index(answer, [str(i) for i in range(len(choices))], number)
        docs.append({**row, "choices": choices, "gold": gold})
    # ARC's prompt in the harness; the choices follow "Answer:" as continuations
    return {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "choices", "doc_to_target": "gold"}, docs
