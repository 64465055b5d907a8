"""Jinja2 templates over a document, with lm-evaluation-harness's conventions.

A task field (`doc_to_text`, `doc_to_target`, `doc_to_choice`) is either the name of a document
column, or a template. Templates come from user files, so they render in a sandbox: no attribute
access to Python internals, only what the document holds and a few filters.
"""

from __future__ import annotations

import ast
import functools
import re
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evaluation.requests import EvaluationError


def _regex_replace(text: str, pattern: str, replacement: str, count: int = 0) -> str:
    return re.sub(pattern, replacement, text, count=count)


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.filters["regex_replace"] = _regex_replace

# A template that is a single `{{ expression }}` yields the expression's own value (a list of
# choices, an index) instead of its string form.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{((?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


@functools.lru_cache(maxsize=512)
def _compiled(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


@functools.lru_cache(maxsize=512)
def _compiled_expression(expression: str):
    return _ENV.compile_expression(expression, undefined_to_none=False)


def _check(template: str, param: str) -> None:
    try:
        _compiled(template)
    except jinja2.TemplateSyntaxError as error:
        raise EvaluationError(f"bad template in {param}: {error}", param=param) from error


def render(template: str, doc: dict[str, Any], param: str = "template") -> str:
    """The template rendered as text."""
    _check(template, param)
    try:
        return _compiled(template).render(**doc)
    except jinja2.UndefinedError as error:
        raise EvaluationError(f"{param} uses a field the row lacks: {error.message}; row has {sorted(doc)}",
                              param=param) from error
    except jinja2.TemplateError as error:
        raise EvaluationError(f"cannot render {param}: {error}", param=param) from error


def value(template: Any, doc: dict[str, Any], param: str) -> Any:
    """A field's value: a column name gives the column, a single-expression template gives the
    expression's value, any other template its rendered text; non-strings pass through."""
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    match = _SINGLE_EXPRESSION.match(template)
    if match:
        _check(template, param)
        try:
            result = _compiled_expression(match.group(1).strip())(**doc)
        except jinja2.UndefinedError as error:
            raise EvaluationError(f"{param} uses a field the row lacks: {error.message}; row has {sorted(doc)}",
                                  param=param) from error
        except Exception as error:  # noqa: BLE001 - any error inside a user's expression is the user's
            raise EvaluationError(f"cannot evaluate {param} {template!r}: {error}", param=param) from error
        if isinstance(result, jinja2.Undefined):
            raise EvaluationError(f"{param} {template!r} is undefined for a row with fields {sorted(doc)}",
                                  param=param)
        return result
    return render(template, doc, param)


def as_list(result: Any, param: str) -> list[str]:
    """A choice list from a value or from the text of a Python list literal (the harness's way)."""
    if isinstance(result, str):
        try:
            result = ast.literal_eval(result)
        except (ValueError, SyntaxError) as error:
            raise EvaluationError(f"{param} must give a list of choices, got {result[:80]!r}", param=param) from error
    if not isinstance(result, list | tuple) or not result:
        raise EvaluationError(f"{param} must give a non-empty list of choices, got {result!r}", param=param)
    return [str(choice) for choice in result]
