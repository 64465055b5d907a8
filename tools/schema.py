"""From a function's signature and docstring to a pydantic arguments model and JSON schema."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from tools.context import ToolContext


# The JSON-schema key of a string argument that is only ever an id, listing its kinds (`ftjob`, `evaljob`).
ID_KINDS = "x-agentd-id"


def id_of(*kinds: str) -> FieldInfo:
    """Declares a string argument that only ever names a stored thing by its id (`ftjob-…`), never by a
    path or a name: `job_id: Annotated[str, id_of("ftjob", "evaljob")]`. An agent may then pass only an
    id of those kinds it has read, and cannot call the tool before it has read one."""
    return Field(json_schema_extra={ID_KINDS: list(kinds)})


# The JSON-schema key of an optional choice's other ways of saying its values: {"full": ["all the weights"]}.
SAID_AS = "x-agentd-said-as"


# …and the words that can only mean one of them ("don't wait"): a request saying them gets that value.
SAID_SURELY = "x-agentd-said-surely"


# …and the words that, said too, leave it open ("top right" beside "top left": two crops, two corners).
SAID_UNLESS = "x-agentd-said-unless"


def said_as(*, surely: dict[str, list[str]] | None = None, unless: list[str] | None = None,
            **words: list[str]) -> FieldInfo:
    """Declares how people say an optional choice's values besides their names:
    `method: Annotated[Literal["lora", "full"], said_as(full=["all the weights"])] = "lora"`, or a
    yes-or-no's: `wait: Annotated[bool, said_as(false=["in the background"])] = True`. An agent may
    pass a value other than the default only when the conversation said it (by name or so).

    `surely` lists, per value, words that can only mean it (`{"false": ["don't wait"]}`; "wait" alone
    may be "wait for it"): when the request says them, and does not name the default, the agent
    writes that value rather than leaving the argument out. A number's are keyed by the number
    written as text (a crop's left edge: `{"0": ["top left corner"]}`); `unless` lists words that,
    said as well, leave the argument to the agent ("then the top right corner")."""
    extra: dict[str, Any] = {SAID_AS: words}
    if surely:
        extra[SAID_SURELY] = surely
    if unless:
        extra[SAID_UNLESS] = unless
    return Field(json_schema_extra=extra)


# The JSON-schema key of the words an optional number is counted in, each with how a count in it is
# written: {"epoch": "{}", "epochs": "{}"}, or for a duration's string {"minutes": "{}m"}.
COUNTED = "x-agentd-counted"


def counted_as(*units: str, **written: str) -> FieldInfo:
    """Declares the words an optional number is counted in: `epochs: Annotated[int | None,
    counted_as("epoch", "epochs")] = None`. A person's turn that says a number right before one of
    them ("a single epoch", "only the first 20 questions"), and no other number so, has the agent
    write that value rather than leave the argument out. A string says how a count is written in it,
    per unit: `keep_alive: Annotated[str | None, counted_as(minutes="{}m", hours="{}h")]` ("after 10
    minutes without use" is "10m")."""
    return Field(json_schema_extra={COUNTED: {unit: "{}" for unit in units} | written})


# The JSON-schema key of a number that is one side of a picture's size: "width" or "height".
SIDE = "x-agentd-side"


def side_of_size(side: Literal["width", "height"], *units: str) -> FieldInfo:
    """Declares a number that is one side of a picture's size, said with the other as "W by H" (width
    first: "a 256 by 256 image", "1024x768") or alone in its `units` ("50 pixels wide", "40 tall"):
    `width: Annotated[int, side_of_size("width", "wide")]`. A person's turn that says one such size
    has the agent write it (see counted_as)."""
    return Field(json_schema_extra={SIDE: side, COUNTED: {unit: "{}" for unit in units}})


# The JSON-schema key of a number that is never a guess: true.
SAID_OR_READ = "x-agentd-said-or-read"


def said_or_read() -> FieldInfo:
    """Declares a number that is never a guess: one the conversation said or a result gave, such as a pixel
    position on a picture the model cannot see: `x: Annotated[int, said_or_read()]`. An agent may pass
    only a number its run has read, and cannot call the tool before it has read one (it measures the
    picture or finds the face first)."""
    return Field(json_schema_extra={SAID_OR_READ: True})


# The JSON-schema key, on a tool's parameters, of the groups of optional arguments a call gives one of
# at least (`[["width", "height"]]`): see tools.tool's `needs_one_of`.
NEEDS_ONE_OF = "x-agentd-needs-one-of"


# The JSON-schema key of a string argument that is a local file's path or a stored file's id, listing the
# id kinds it takes (`file`).
PATH_OR_ID = "x-agentd-path-or-id"


def path_or_id(*kinds: str) -> FieldInfo:
    """Declares a string argument that names a file: a path, or the id of a stored one of `kinds`:
    `training_file: Annotated[str, path_or_id("file")]`. An agent may then pass only a path or an id
    its run has read, and cannot call the tool before it has read one."""
    return Field(json_schema_extra={PATH_OR_ID: list(kinds)})


# The JSON-schema key of a string that is one of a known set of names (a benchmark task)…
NAMES = "x-agentd-names"
# …or else a path (a user's own task file): true when it may be one.
OR_PATH = "x-agentd-or-path"


def one_of_names(names: list[str], *, said: dict[str, list[str]] | None = None, or_path: bool = False) -> FieldInfo:
    """Declares a string that is one of `names` (each item of `list[Annotated[str, one_of_names(...)]]`),
    or, `or_path`, a file's path: an agent may pass the names its conversation said, by name or in the
    words `said` gives (all of them when it said none and the argument is required) and, `or_path`,
    the paths its run has read."""
    extra: dict[str, Any] = {NAMES: list(names)}
    if said:
        extra[SAID_AS] = said
    if or_path:
        extra[OR_PATH] = True
    return Field(json_schema_extra=extra)


class ToolDefinitionError(TypeError):
    """A function cannot become a tool as written; the message says what to change."""


class _UntitledSchema(GenerateJsonSchema):
    """Property titles repeat the names; dropping them keeps prompts and grammars small."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(schema_generator=_UntitledSchema)
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        # The docstring replaced the media type's own hint; models need both to know what to pass.
        if "x-agentd-type" in prop and "file id" not in prop.get("description", ""):
            prop["description"] = f"{prop.get('description', '').rstrip('.')} — a stored file id (file-…) or a data: URL"
    return schema


def output_schema_of(annotation: Any) -> dict[str, Any] | None:
    if annotation in (inspect.Signature.empty, None, type(None)):
        return None
    try:
        return TypeAdapter(annotation).json_schema(schema_generator=_UntitledSchema)
    except Exception:  # pydantic cannot describe every return type (e.g. arbitrary classes); the schema is optional.
        return None


class Signature(typing.NamedTuple):
    description: str
    arguments: type[BaseModel]
    context_parameter: str | None
    bound_first: bool
    returns: Any


def read_signature(fn: Callable[..., Any], tool_name: str) -> Signature:
    """Build the arguments model; refuse missing hints and undocumented arguments by name."""
    where = f"tool {tool_name!r} ({getattr(fn, '__qualname__', fn)})"
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    description = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part).strip()
    if not description:
        raise ToolDefinitionError(f"{where}: add a docstring; its first line becomes the tool's description")
    documented = {param.arg_name: param.description for param in doc.params}
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as error:
        raise ToolDefinitionError(f"{where}: a type hint cannot be resolved ({error})") from None

    parameters = list(inspect.signature(fn).parameters.values())
    bound_first = bool(parameters) and parameters[0].name in ("self", "cls") and parameters[0].name not in hints
    if bound_first:
        parameters = parameters[1:]
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    context_parameter = None
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *{parameter.name} cannot be described by a schema; "
                                      "name each argument")
        if parameter.name not in hints:
            raise ToolDefinitionError(f"{where}: argument {parameter.name!r} has no type hint")
        annotation = hints[parameter.name]
        if annotation is ToolContext:
            context_parameter = parameter.name
            continue
        annotation, field = _field_for(annotation, documented.get(parameter.name), parameter.default)
        if not field.description:
            raise ToolDefinitionError(
                f"{where}: argument {parameter.name!r} is not documented; describe it under 'Args:' in the "
                f"docstring or with Annotated[{getattr(annotation, '__name__', annotation)}, \"description\"]")
        fields[parameter.name] = (annotation, field)
    if "return" not in hints:
        raise ToolDefinitionError(f"{where}: add a return type hint (-> str, -> dict, -> Image, -> None…)")
    model_name = "".join(word.capitalize() for word in tool_name.replace("-", "_").split("_")) + "Arguments"
    arguments = create_model(model_name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                             **fields)
    return Signature(description, arguments, context_parameter, bound_first, hints["return"])


def _field_for(annotation: Any, documented: str | None, default: Any) -> tuple[Any, FieldInfo]:
    """`Annotated[T, "text"]` or `Annotated[T, Field(description=...)]` win over the docstring."""
    description = documented
    extra_fields: list[FieldInfo] = []
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        kept = []
        for item in metadata:
            if isinstance(item, str):
                description = item
            elif isinstance(item, FieldInfo):
                extra_fields.append(item)
                description = item.description or description
            else:
                kept.append(item)
        annotation = Annotated[(base, *kept)] if kept else base
    field = Field(default=... if default is inspect.Parameter.empty else default, description=description)
    if extra_fields:
        field = FieldInfo.merge_field_infos(*extra_fields, field)
    return annotation, field
