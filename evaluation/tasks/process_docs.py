"""Named document preprocessors a task definition can ask for with `process_docs: <name>`.

The harness points YAML at Python functions (`!function utils.process_docs`); we keep the few
that built-in tasks need in this registry instead, so a task file can never name arbitrary code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]
PROCESSORS: dict[str, Callable[[Doc], Doc]] = {}


def register(name: str) -> Callable[[Callable[[Doc], Doc]], Callable[[Doc], Doc]]:
    def add(function: Callable[[Doc], Doc]) -> Callable[[Doc], Doc]:
        PROCESSORS[name] = function
        return function

    return add


def _hellaswag_clean(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artifacts of the WikiHow half of HellaSwag
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


@register("hellaswag")
def hellaswag(doc: Doc) -> Doc:
    """The harness's HellaSwag preparation: `query`, cleaned `choices`, integer `gold`."""
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {**doc, "query": _hellaswag_clean(doc["activity_label"] + ": " + context),
            "choices": [_hellaswag_clean(ending) for ending in doc["endings"]], "gold": int(doc["label"])}


@register("winogrande")
def winogrande(doc: Doc) -> Doc:
    """Winogrande is scored the harness's way ("partial evaluation"): each option fills the blank
    to make one context, and the shared rest of the sentence is the continuation."""
    blank = doc["sentence"].index("_")
    return {**doc, "contexts": [doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"])],
            "continuation": doc["sentence"][blank + 1:].strip(), "gold": {"1": 0, "2": 1}[str(doc["answer"])]}


def apply(name: str | None, docs: list[Doc]) -> list[Doc]:
    return docs if name is None else [PROCESSORS[name](doc) for doc in docs]
