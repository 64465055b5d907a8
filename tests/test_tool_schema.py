"""@tool: JSON schemas from type hints and docstrings, and clear errors at decoration time."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field

from tools import Image, ToolContext, ToolDefinitionError, Toolkit, tool


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Box(BaseModel):
    width: int
    height: int = 1
    label: Optional[str] = None


@tool
def everything(count: int, ratio: float, name: str, flag: bool, tags: list[str], weights: dict[str, float],
               mode: Literal["fast", "exact"] = "fast", colour: Colour = Colour.RED, box: Optional[Box] = None,
               limit: Annotated[int, Field(ge=1, le=10, description="between one and ten")] = 3,
               note: Annotated[str, "from Annotated"] = "") -> dict:
    """Exercise every kind of argument.

    A longer paragraph that belongs in the description too.

    Args:
        count: how many.
        ratio: a fraction.
        name: a name.
        flag: a switch.
        tags: some labels.
        weights: a weight per label.
        mode: how to work.
        colour: which colour.
        box: an optional box.
        limit: overridden by the Field description.
        note: overridden by Annotated.
    """
    return {}


def test_types_defaults_enums_and_nested_models():
    schema = everything.parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert schema["required"] == ["count", "ratio", "name", "flag", "tags", "weights"]
    assert schema["additionalProperties"] is False
    assert props["count"]["type"] == "integer" and props["ratio"]["type"] == "number"
    assert props["flag"]["type"] == "boolean" and props["tags"] == {"type": "array", "items": {"type": "string"},
                                                                      "description": "some labels."}
    assert props["weights"]["additionalProperties"] == {"type": "number"}
    assert props["mode"]["enum"] == ["fast", "exact"] and props["mode"]["default"] == "fast"
    assert schema["$defs"]["Colour"]["enum"] == ["red", "green"]
    assert schema["$defs"]["Box"]["required"] == ["width"]
    assert props["limit"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 3,
                              "description": "between one and ten"}
    assert props["note"]["description"] == "from Annotated"
    assert everything.description.startswith("Exercise every kind of argument.")
    assert "longer paragraph" in everything.description


def test_the_schema_accepts_what_validation_accepts():
    good = {"count": 1, "ratio": 0.5, "name": "n", "flag": True, "tags": ["a"], "weights": {"a": 1.0},
            "box": {"width": 2}, "colour": "green"}
    jsonschema.validate(good, everything.parameters)
    validated = everything.validate(good)
    assert validated.box == Box(width=2) and validated.colour is Colour.GREEN


def test_media_types_are_marked_for_clients():
    @tool
    def caption(image: Image) -> str:
        """Describe a picture.

        Args:
            image: the picture.
        """
        return ""

    prop = caption.parameters["properties"]["image"]
    assert prop["type"] == "string" and prop["x-agentd-type"] == "image"
    assert prop["description"].startswith("the picture") and "file id" in prop["description"]


def test_a_tool_stays_a_plain_function_and_can_ask_for_its_context():
    @tool(name="add-numbers", timeout=3, requires_approval=True, long_running=True)
    async def add(a: int, b: int, context: ToolContext) -> int:
        """Add two numbers.

        Args:
            a: first.
            b: second.
        """
        return a + b

    assert add.name == "add-numbers" and add.timeout == 3 and add.requires_approval and add.long_running
    assert "context" not in add.parameters["properties"]
    assert add.definition()["function"]["name"] == "add-numbers"
    assert add.output_schema == {"type": "integer"}


def test_toolkit_methods_become_bound_tools():
    class Store(Toolkit):
        def __init__(self):
            self.items: list[str] = []

        @tool
        def put(self, item: str) -> int:
            """Store an item; returns how many are stored.

            Args:
                item: the item.
            """
            self.items.append(item)
            return len(self.items)

    store = Store()
    (put,) = store.tools()
    assert put.name == "put" and "self" not in put.parameters["properties"]
    assert put.validate({"item": "x"}).item == "x"
    assert Store.put.name == "put"  # looking it up on the class does not bind


@pytest.mark.parametrize("source, message", [
    ("def f(x) -> int:\n    '''Doc.\n\n    Args:\n        x: thing.\n    '''", "argument 'x' has no type hint"),
    ("def f(x: int) -> int:\n    '''Doc without arguments.'''", "argument 'x' is not documented"),
    ("def f(x: int) -> int:\n    pass", "add a docstring"),
    ("def f(*xs: int) -> int:\n    '''Doc.'''", "*xs cannot be described"),
    ("def f(x: int):\n    '''Doc.\n\n    Args:\n        x: thing.\n    '''", "add a return type hint"),
])
def test_definition_errors_name_the_problem(source, message):
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(ToolDefinitionError, match=message.replace("*", r"\*")):
        tool(namespace["f"])


def test_bad_tool_names_are_refused():
    with pytest.raises(ToolDefinitionError, match="tool name"):
        tool(name="has space")(everything.fn)


def frame_picture(width: int | None = None, height: int | None = None, label: str = "") -> str:
    """Frame a picture.

    Args:
        width: the new width.
        height: the new height.
        label: a caption.
    """
    return f"{width}x{height}"


async def test_a_group_of_optional_arguments_a_call_gives_one_of_is_declared_and_checked():
    from tools.base import ToolArgumentError
    from tools.schema import NEEDS_ONE_OF

    frame = tool(needs_one_of=[("width", "height")])(frame_picture)
    assert frame.parameters[NEEDS_ONE_OF] == [["width", "height"]]
    assert frame.validate({"height": 5}).height == 5
    with pytest.raises(ToolArgumentError, match="give width or height"):
        frame.validate({"label": "no size"})
    refused = await frame.invoke({"width": None})
    assert refused.error.kind == "invalid_arguments" and "give width or height" in refused.observation()
    # The group names optional arguments that default to None, two or more of them.
    for groups, problem in (([("width", "label")], "'label'"), ([("width",)], "two or more"),
                            ([("width", "depth")], "'depth'"), (["wh"], "two or more")):
        with pytest.raises(ToolDefinitionError, match=problem):
            tool(needs_one_of=groups)(frame_picture)
