"""Training data in the formats people have, converted once to one internal type.

Each JSONL line is one record, recognised by its keys:
- OpenAI chat: `{"messages": [{"role", "content", "weight"?}]}` (weight 0/1 on assistant turns),
- ShareGPT: `{"conversations": [{"from": "human"|"gpt"|..., "value"}], "system"?}`,
- Alpaca: `{"instruction", "input"?, "output", "system"?, "history"?: [[user, assistant], ...]}`,
- raw text for continued pre-training: `{"text"}`; a `.txt` file is one document.
Errors name the file and line, so a person can fix the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "tool": "tool", "observation": "tool", "function_call": "assistant",
                   "function": "tool"}
MAX_REPORTED_ERRORS = 10


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    # Whether the loss counts this turn: by default assistant turns only.
    trained: bool = False


@dataclass(frozen=True)
class Example:
    """A conversation (turns) or a raw document (text); `source` says where it came from."""

    turns: tuple[Turn, ...] = ()
    text: str | None = None
    source: str = ""

    @property
    def is_chat(self) -> bool:
        return self.text is None


@dataclass
class DataError(ValueError):
    """Every bad record found (up to MAX_REPORTED_ERRORS), each as `file line N: reason`."""

    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(self.problems)


class _RecordError(ValueError):
    pass


def load_examples(paths: Iterable[str | Path]) -> list[Example]:
    examples: list[Example] = []
    problems: list[str] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        try:
            examples += parse_file(path.read_bytes(), path.name)
        except DataError as error:
            problems += error.problems
    if problems:
        raise DataError(problems[:MAX_REPORTED_ERRORS])
    return examples


def parse_file(data: bytes, name: str) -> list[Example]:
    """Examples of one file; raises DataError listing the bad lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError([f"{name}: not UTF-8 text (byte {error.start})"]) from None
    if name.endswith(".txt"):
        if not text.strip():
            raise DataError([f"{name}: the file is empty"])
        return [Example(text=text, source=name)]
    examples, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(parse_record(_json_object(line), f"{name} line {number}"))
        except _RecordError as error:
            problems.append(f"{name} line {number}: {error}")
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
    if problems:
        raise DataError(problems)
    if not examples:
        raise DataError([f"{name}: no records (expected one JSON object per line)"])
    return examples


def _json_object(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise _RecordError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise _RecordError(f"expected a JSON object, got {type(record).__name__}")
    return record


def parse_record(record: dict[str, Any], source: str = "") -> Example:
    if "messages" in record:
        turns = _openai_turns(record["messages"])
    elif "conversations" in record:
        turns = _sharegpt_turns(record["conversations"], record.get("system"))
    elif "instruction" in record or "output" in record:
        turns = _alpaca_turns(record)
    elif "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise _RecordError("'text' must be a non-empty string")
        return Example(text=record["text"], source=source)
    else:
        raise _RecordError("unknown record: expected 'messages' (OpenAI), 'conversations' (ShareGPT), "
                           f"'instruction'/'output' (Alpaca) or 'text'; got keys {sorted(record)}")
    if not any(turn.trained for turn in turns):
        raise _RecordError("nothing to learn: no assistant turn (or every one has weight 0)")
    return Example(turns=tuple(turns), source=source)


def _openai_turns(messages: Any) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise _RecordError("'messages' must be a non-empty list")
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _RecordError(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise _RecordError(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
        content = _content_text(message.get("content"), message.get("tool_calls"), where)
        weight = message.get("weight", 1 if role == "assistant" else 0)
        if weight not in (0, 1):
            raise _RecordError(f"{where}.weight must be 0 or 1; got {weight!r}")
        if weight and role != "assistant":
            raise _RecordError(f"{where}.weight 1 is only allowed on assistant messages")
        turns.append(Turn(role, content, trained=bool(weight)))
    return turns


def _content_text(content: Any, tool_calls: Any, where: str) -> str:
    if isinstance(content, list):  # OpenAI content parts: only text can be trained on
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _RecordError(f"{where}.content parts must be {{'type': 'text', 'text': ...}}")
            texts.append(part["text"])
        content = "".join(texts)
    if tool_calls:
        content = (content or "") + _tool_calls_text(tool_calls, where)
    if not isinstance(content, str):
        raise _RecordError(f"{where}.content must be a string")
    return content


def _tool_calls_text(tool_calls: Any, where: str) -> str:
    """Assistant tool calls trained as the JSON list of {name, arguments} they stand for."""
    try:
        calls = [{"name": str(call["function"]["name"]), "arguments": json.loads(call["function"]["arguments"])}
                 for call in tool_calls]
    except (TypeError, KeyError, json.JSONDecodeError):
        raise _RecordError(f"{where}.tool_calls must be [{{'function': {{'name', 'arguments' (JSON text)}}}}]") from None
    return json.dumps(calls, ensure_ascii=False)


def _sharegpt_turns(conversations: Any, system: Any) -> list[Turn]:
    if not isinstance(conversations, list) or not conversations:
        raise _RecordError("'conversations' must be a non-empty list")
    turns = [Turn("system", system)] if isinstance(system, str) and system else []
    for index, entry in enumerate(conversations):
        where = f"conversations[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            raise _RecordError(f"{where} must be an object with 'from' and a string 'value'")
        role = _SHAREGPT_ROLES.get(entry.get("from"))
        if role is None:
            raise _RecordError(f"{where}.from must be one of {', '.join(_SHAREGPT_ROLES)}; got {entry.get('from')!r}")
        turns.append(Turn(role, entry["value"], trained=role == "assistant"))
    return turns


def _alpaca_turns(record: dict[str, Any]) -> list[Turn]:
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise _RecordError(f"Alpaca records need a non-empty string '{key}'")
    turns = [Turn("system", record["system"])] if isinstance(record.get("system"), str) and record["system"] else []
    for pair in record.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise _RecordError("'history' must be a list of [user, assistant] string pairs")
        turns += [Turn("user", pair[0]), Turn("assistant", pair[1], trained=True)]
    prompt = record["instruction"]
    if isinstance(record.get("input"), str) and record["input"].strip():
        prompt += "\n\n" + record["input"]
    return turns + [Turn("user", prompt), Turn("assistant", record["output"], trained=True)]
