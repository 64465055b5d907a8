"""`@tool`: a plain function (sync or async) becomes a `Tool`; `Toolkit` groups tool methods."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from tools.base import Tool, ToolArgumentError
from tools.context import ToolContext
from tools.schema import NEEDS_ONE_OF, ToolDefinitionError, json_schema_of, output_schema_of, read_signature

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class FunctionTool(Tool):
    """A tool backed by a Python function; calling it directly still calls the function."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 timeout: float | None = None, requires_approval: bool = False, long_running: bool = False,
                 changing: bool = False, needs_one_of: Sequence[Sequence[str]] = ()):
        self.name = name or fn.__name__
        if not _NAME.match(self.name):
            raise ToolDefinitionError(f"tool name {self.name!r}: use letters, digits, '_' or '-' (at most 64)")
        signature = read_signature(fn, self.name)
        self.fn = fn
        self.description = description or signature.description
        self.arguments_model: type[BaseModel] = signature.arguments
        self.parameters = json_schema_of(signature.arguments)
        self.needs_one_of = _groups(needs_one_of, signature.arguments, self.name)
        if self.needs_one_of:
            self.parameters[NEEDS_ONE_OF] = [list(group) for group in self.needs_one_of]
        self.output_schema = output_schema_of(signature.returns)
        self.returns = signature.returns
        self.timeout = timeout
        self.requires_approval = requires_approval
        self.long_running = long_running
        self.changing = changing
        self.defined_in = getattr(fn, "__module__", None)
        self._context_parameter = signature.context_parameter
        self._needs_binding = signature.bound_first
        self._is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name}>"

    def __get__(self, instance: Any, owner: type | None = None) -> FunctionTool:
        """A tool method looked up on an instance becomes a tool bound to that instance."""
        if instance is None or not self._needs_binding:
            return self
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound.fn = self.fn.__get__(instance, owner)
        bound._needs_binding = False
        return bound

    def validate(self, arguments: Mapping[str, Any]) -> BaseModel:
        if self._needs_binding:
            raise ToolDefinitionError(f"tool {self.name!r} is a method; add an instance of its Toolkit instead")
        try:
            validated = self.arguments_model.model_validate(dict(arguments))
        except ValidationError as error:
            raise ToolArgumentError(_readable(error), errors=error.errors(include_url=False, include_context=False,
                                                                           include_input=False)) from None
        for group in self.needs_one_of:
            if all(getattr(validated, name) is None for name in group):
                given = " or ".join(group) if len(group) == 2 else ", ".join(group[:-1]) + " or " + group[-1]
                raise ToolArgumentError(f"invalid arguments — give {given} (at least one)",
                                        errors=[{"loc": list(group), "msg": "give at least one"}])
        return validated

    async def _run(self, validated: BaseModel, context: ToolContext) -> Any:
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if self._context_parameter:
            kwargs[self._context_parameter] = context
        if self._is_async:
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)


def _groups(groups: Sequence[Sequence[str]], arguments: type[BaseModel], tool_name: str) -> tuple[tuple[str, ...], ...]:
    """`needs_one_of` checked against the arguments: each group names two or more optional ones."""
    for group in groups:
        if isinstance(group, str) or len(group) < 2:
            raise ToolDefinitionError(f"tool {tool_name!r}: needs_one_of takes groups of two or more argument "
                                      f"names, like [('width', 'height')]; got {group!r}")
        for name in group:
            field = arguments.model_fields.get(name)
            if field is None or field.is_required() or field.default is not None:
                raise ToolDefinitionError(f"tool {tool_name!r}: needs_one_of names {name!r}, which is not an "
                                          "optional argument defaulting to None")
    return tuple(tuple(group) for group in groups)


def _readable(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unexpected argument"
        lines.append(f"{where}: {message}")
    return "invalid arguments — " + "; ".join(lines)


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(*, name: str | None = None, description: str | None = None, timeout: float | None = None,
         requires_approval: bool = False, long_running: bool = False, changing: bool = False,
         needs_one_of: Sequence[Sequence[str]] = ()) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(fn: Callable[..., Any] | None = None, /, **options: Any):
    """Turn a typed, documented function into a tool.

    Example:
        >>> @tool
        ... def add(a: int, b: int = 1) -> int:
        ...     '''Add two integers.
        ...
        ...     Args:
        ...         a: the first number.
        ...         b: the second number.
        ...     '''
        ...     return a + b
        >>> add.parameters["required"]
        ['a']

    Options: `name`, `description` (override the function's), `timeout` (seconds),
    `requires_approval`, `long_running`, `needs_one_of` (groups of optional arguments a call gives
    at least one of: `[("width", "height")]`; an agent cannot call the tool while it has none of a
    group to write). A missing type hint, an undocumented argument or a
    missing docstring raise `ToolDefinitionError` here, not at call time.
    """
    if fn is not None:
        return FunctionTool(fn, **options)
    return lambda function: FunctionTool(function, **options)


class Toolkit:
    """A class whose `@tool` methods share state (a model, a connection, a knowledge base).

    Example:
        class Vision(Toolkit):
            def __init__(self, model): self.model = model
            @tool
            def caption(self, image: Image) -> str: ...

        registry.add(Vision(model))
    """

    def tools(self) -> list[Tool]:
        found = []
        for attribute in dir(type(self)):
            if isinstance(inspect.getattr_static(type(self), attribute, None), Tool):
                found.append(getattr(self, attribute))
        return found
