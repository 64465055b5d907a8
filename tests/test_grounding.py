"""Optional numeric tool arguments an agent may write are the numbers its run has read."""

from __future__ import annotations

import jsonschema
import pytest

from agentd.agents.grounding import RunIds, RunNumbers, not_starting_with, with_grounded_ids, with_grounded_numbers
from agentd.llm.chat_model import step_schema

PARAMETERS = {
    "type": "object", "required": ["model", "steps_needed"],
    "properties": {
        "model": {"type": "string"},
        "steps_needed": {"type": "integer"},  # required: left alone
        "max_steps": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
        "epochs": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                             {"const": "auto", "type": "string"}], "default": "auto"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
        "wait": {"type": "boolean", "default": True},
    },
}


def read(*texts: str) -> RunNumbers:
    numbers = RunNumbers()
    for text in texts:
        numbers.learn_from_text(text)
    return numbers


def test_with_nothing_read_an_optional_number_cannot_be_written():
    grounded = with_grounded_numbers(PARAMETERS, read("Fine-tune smollm2 on examples/support_tickets.jsonl"))
    properties = grounded["properties"]
    assert "max_steps" not in properties and "temperature" not in properties
    assert properties["epochs"]["anyOf"] == [{"const": "auto", "type": "string"}]
    assert properties["steps_needed"] == {"type": "integer"} and properties["wait"] == {"type": "boolean", "default": True}


def test_numbers_read_are_the_choices_latest_first_within_each_arguments_bounds():
    grounded = with_grounded_numbers(PARAMETERS, read("Train for 3 epochs, at most 200 steps.", "It took 1.5 s."))
    properties = grounded["properties"]
    assert properties["max_steps"]["anyOf"][0] == {"type": "integer", "enum": [200, 3]}  # 1.5 is no integer
    assert properties["epochs"]["anyOf"][0]["enum"] == [1.5, 3]  # 200 is over the maximum
    assert properties["temperature"]["enum"] == [1.5]


@pytest.mark.parametrize("text", ["job ftjob-4a3a6483 on smollm2-135m", "file-123 and ft:base:agentd::7f3",
                                  "gpt4o", "v2.1-beta"])
def test_ids_and_names_are_not_numbers(text):
    assert "max_steps" not in with_grounded_numbers(PARAMETERS, read(text))["properties"]


def test_a_thousands_separator_and_a_full_stop_are_read_as_people_write_them():
    properties = with_grounded_numbers(PARAMETERS, read("Score 1,000 samples. Then 50."))["properties"]
    assert properties["max_steps"]["anyOf"][0]["enum"] == [50, 1000]


def test_the_step_grammar_refuses_an_invented_number():
    tool = {"type": "function", "function": {"name": "finetune", "description": "Fine-tune.",
                                             "parameters": with_grounded_numbers(PARAMETERS, read("use 40 steps"))}}
    schema = step_schema([tool], 1)
    step = {"thought": "t", "tool_calls": [{"name": "finetune", "arguments": {
        "model": "m", "steps_needed": 7, "max_steps": 40}}]}
    jsonschema.validate(step, schema)
    step["tool_calls"][0]["arguments"]["max_steps"] = 100000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(step, schema)


FINETUNE = {"type": "object", "required": ["model", "training_file"], "properties": {
    "model": {"type": "string"},
    "training_file": {"type": "string", "description": "a file id (file-...) or the path of a JSONL file."},
    "suffix": {"type": "string", "maxLength": 20},
}}
UPLOAD = "file-05e7a388748001fe8f12ab34"


def ids_read(*texts: str) -> RunIds:
    ids = RunIds()
    for text in texts:
        ids.learn_from_text(text)
    return ids


def test_an_id_read_can_only_be_copied_whole_and_a_path_still_can_be_written():
    """The truncated upload id the embedded model once wrote (18 of 24 digits) cannot be written."""
    tool = {"type": "function", "function": {"name": "finetune", "description": "Fine-tune.", "parameters":
            with_grounded_ids(FINETUNE, ids_read(f"Fine-tune smollm2 on {UPLOAD}, job ftjob-00112233aabb"))}}
    schema = step_schema([tool], 1)

    def step(training_file: str) -> dict:
        return {"thought": "t", "tool_calls": [{"name": "finetune", "arguments": {
            "model": "smollm2", "training_file": training_file}}]}

    for allowed in (UPLOAD, "examples/support_tickets.jsonl", "tickets.jsonl", "file", "profile-1.jsonl"):
        jsonschema.validate(step(allowed), schema)
    for refused in ("file-05e7a388748001fe8f", "file-00112233aabb", f"{UPLOAD}0"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(step(refused), schema)


def test_ids_are_offered_latest_first_and_only_of_the_kind_the_argument_names():
    ids = ids_read("file-aaaaaaaa11111111 then ftjob-bbbbbbbb22222222", "and file-cccccccc33333333")
    choices = with_grounded_ids(FINETUNE, ids)["properties"]["training_file"]["anyOf"][0]["enum"]
    assert choices == ["file-cccccccc33333333", "file-aaaaaaaa11111111"]


@pytest.mark.parametrize("text", ["no id here", "ft:smollm2-135m-instruct:support:4a3a1b2c", "ftjob-0011aabbccdd"])
def test_with_no_id_of_its_kind_read_the_argument_is_left_as_it_was(text):
    assert with_grounded_ids(FINETUNE, ids_read(text)) == FINETUNE


def test_the_other_value_pattern_is_one_the_grammar_compilers_take():
    import xgrammar

    from pipelines.decoding import grammar_of
    from pipelines.engine import Constraint
    from pipelines.openvino_grammar import openvino_grammar

    grounded = with_grounded_ids(FINETUNE, ids_read(UPLOAD))
    xgrammar.Grammar.from_regex(not_starting_with("file-"))
    constraint = Constraint("json_schema", grounded)
    assert grammar_of(constraint) is not None
    assert "regex" in openvino_grammar(constraint)  # written out as rules, not refused as Unsupported
