"""Tool arguments an agent may write: optional numbers and ids are those its run has read."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

import jsonschema
import pytest

from agentd.agents.grounding import (RunIds, RunNumbers, RunWords, not_starting_with, unfillable,
                                     with_grounded_choices, with_grounded_ids, with_grounded_numbers,
                                     with_said_values)
from agentd.llm.chat_model import step_schema
from tools import ToolRegistry, id_of, path_or_id, said_as, tool
from tools.schema import ID_KINDS

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


@pytest.mark.parametrize(("text", "numbers"), [
    ("Evaluate it 3-shot with seed 2654: quickly.", [2654, 3]),
    ("Make it 1024x768, or 640px wide.", [640, 768, 1024]),
    ("Train for three epochs, then a single pass.", [1, 3]),
    ("Meet on 2024-01-05 at 12:30.", []),
])
def test_numbers_are_read_as_people_write_them(text, numbers):
    properties = with_grounded_numbers(PARAMETERS, read(text))["properties"]
    assert properties.get("max_steps", {"anyOf": [{"enum": []}]})["anyOf"][0]["enum"] == numbers


RESIZE = {"type": "object", "required": ["image"], "properties": {
    "image": {"type": "string"},
    "width": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
    "height": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
    "ratio": {"type": "number", "minimum": 0, "default": 1.0}}}


def choices(properties: dict, name: str) -> list:
    return properties[name]["anyOf"][0]["enum"] if "anyOf" in properties[name] else properties[name]["enum"]


def test_a_share_the_request_names_of_a_number_read_can_be_written():
    """The trained chain "look at how tall it is, then resize it to half that height" writes 384 after
    reading 768; without the word, only what was read."""
    stats = '{"width": 1024, "height": 768, "mode": "RGB"}'
    halved = with_grounded_numbers(RESIZE, read("Resize it to half its height.", stats))["properties"]
    assert choices(halved, "height") == [768, 384] and choices(halved, "width") == [1024, 512]
    odd = with_grounded_numbers(RESIZE, read("Scale it to a third of its width.", '{"width": 64}'))["properties"]
    assert choices(odd, "width") == [64, 21, 22]  # an integer: either side of 21.3
    said = with_grounded_numbers(RESIZE, read("Scale it by a third of 2."))["properties"]
    assert choices(said, "ratio") == [2, pytest.approx(2 / 3)]  # a number: the share itself
    plain = with_grounded_numbers(RESIZE, read("Resize it.", stats))["properties"]
    assert choices(plain, "height") == [768]


def test_a_result_s_number_goes_to_an_argument_of_its_field_s_name_first_and_only():
    """An image's statistics: its height first among a height's choices; its channels' numbers offered
    to no argument (a height of 250 was the red channel's maximum); prose in a result and the picture's
    line after it are read as any text is."""
    stats = ('{"width": 320, "height": 240, "channels": {"R": {"mean": 108.6, "max": 250, "histogram": [0, 31229]}},'
             ' "note": "scaled from 2 files"}\n[image file-ab12: image/png 320x240, 7850 bytes]')
    properties = with_grounded_numbers(RESIZE, read("Look at how tall it is, then resize it to half that height.",
                                                    stats))["properties"]
    height = choices(properties, "height")
    assert height[:2] == [240, 120] and 250 not in height and 31229 not in height
    assert choices(properties, "width")[:2] == [320, 160]
    assert set(choices(properties, "ratio")) == {7850, 3925, 240, 120, 320, 160, 2, 1}
    assert choices(with_grounded_numbers(PARAMETERS, read(stats))["properties"], "max_steps") == [7850, 240, 320, 2]
    counted = with_grounded_numbers(RESIZE, read("391"))["properties"]  # a bare number: any argument's
    assert choices(counted, "height") == [391]


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


@pytest.mark.parametrize("text", ["no id here", "ft:smollm2-135m-instruct:support:4a3a1b2c"])
def test_with_no_id_read_the_argument_is_left_as_it_was(text):
    assert with_grounded_ids(FINETUNE, ids_read(text)) == FINETUNE


UNDEPLOY = {"type": "object", "required": ["deployment"], "properties": {"deployment": {
    "type": "string", "description": "the deployment id (dep-...) or the model id it serves."}}}


@pytest.mark.parametrize("read_dep", [False, True])
def test_an_argument_naming_its_id_kind_takes_no_id_of_another_kind_the_run_read(read_dep):
    """The embedded model once sent "turn file-… upside down" to `undeploy`, with the picture's id (and,
    refused that, with `file_…`)."""
    text = f"Turn {UPLOAD} upside down" + (" after dep-0123456789abcdef" if read_dep else "")
    schema = with_grounded_ids(UNDEPLOY, ids_read(text))
    for allowed in ("smollm2-135m-instruct", "ft:smollm2:agentd::4a3a1b2c", "file", "depot"):
        jsonschema.validate({"deployment": allowed}, schema)
    refused = [UPLOAD, "file-0000aaaa1111", UPLOAD.replace("-", "_")] + (["dep-00001111aaaa"] if read_dep else [])
    for value in refused:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"deployment": value}, schema)
    if read_dep:
        jsonschema.validate({"deployment": "dep-0123456789abcdef"}, schema)


@pytest.mark.parametrize("prefixes", [("file-",), ("dep-", "file-", "ftjob-", "evaljob-", "f")])
def test_not_starting_with_is_exactly_the_strings_no_prefix_begins(prefixes):
    pattern = re.compile(not_starting_with(*prefixes))
    for text in ("file-1", "fil", "file", "dep-1", "de", "ftjob-x", "ftjob", "evaljob-", "evaljo", "x", "model", "f"):
        assert bool(pattern.fullmatch(text)) == (not any(text.startswith(p) for p in prefixes)), text


def test_the_other_value_pattern_is_one_the_grammar_compilers_take():
    import xgrammar

    from pipelines.decoding import grammar_of
    from pipelines.engine import Constraint
    from pipelines.openvino_grammar import openvino_grammar

    grounded = with_grounded_ids(FINETUNE, ids_read(UPLOAD))
    xgrammar.Grammar.from_regex(not_starting_with("file-"))
    xgrammar.Grammar.from_regex(not_starting_with("dep-", "evaljob-", "file-", "ftjob-"))
    constraint = Constraint("json_schema", grounded)
    assert grammar_of(constraint) is not None
    assert "regex" in openvino_grammar(constraint)  # written out as rules, not refused as Unsupported


JOB_STATUS = {"type": "object", "required": ["job_id"], "properties": {
    "job_id": {"type": "string", "description": "the job id.", ID_KINDS: ["ftjob", "evaljob"]}}}


def test_an_id_only_argument_takes_only_ids_read_of_its_kinds_and_none_before_one_is_read():
    assert unfillable(with_grounded_ids(JOB_STATUS, ids_read("Are any fine-tunes still running?", UPLOAD))) == ["job_id"]
    read = ids_read("ftjob-00112233aabbccdd started", UPLOAD, "and evaljob-44556677eeff0011")
    grounded = with_grounded_ids(JOB_STATUS, read)
    assert unfillable(grounded) == []
    assert grounded["properties"]["job_id"]["enum"] == ["evaljob-44556677eeff0011", "ftjob-00112233aabbccdd"]
    tool = {"type": "function", "function": {"name": "job_status", "description": "Status.", "parameters": grounded}}
    schema = step_schema([tool], 1)
    jsonschema.validate({"thought": "t", "tool_calls": [{"name": "job_status", "arguments": {
        "job_id": "ftjob-00112233aabbccdd"}}]}, schema)
    for made_up in ("none", "ftjob-00112233", UPLOAD, "smollm2-135m-instruct"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"thought": "t", "tool_calls": [{"name": "job_status", "arguments": {
                "job_id": made_up}}]}, schema)


def test_job_status_declares_its_argument_as_a_job_id():
    from tools.builtin.jobs import JobTools
    from tools.schema import json_schema_of, read_signature

    job_id = json_schema_of(read_signature(JobTools.job_status, "job_status").arguments)["properties"]["job_id"]
    assert job_id[ID_KINDS] == ["ftjob", "evaljob"] and job_id["type"] == "string"


@tool
def start_job(name: str) -> str:
    """Start a job.

    Args:
        name: what to call it.
    """
    return f"started ftjob-00112233aabbccdd ({name})"


@tool
def job_state(job_id: Annotated[str, id_of("ftjob")]) -> str:
    """The state of a job.

    Args:
        job_id: the job's id.
    """
    return "running"


async def test_react_cannot_call_a_tool_needing_an_id_until_the_run_has_read_one(tmp_path):
    from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
    from tests.test_agents import open_runtime, run

    registry = ToolRegistry([start_job, job_state])
    runtime = await open_runtime(registry, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("start_job", {"name": "a"})),
                                  calls(("job_state", {"job_id": "ftjob-00112233aabbccdd"})), answer("running")])
    _, outcome = await run(runtime, "agentd-react", "Start job a and tell me how it is doing.", llm)
    assert outcome.answer == "running"
    # Before the job's id was read, job_state was not callable; after, every tool was.
    assert llm.callable == [["final_answer", "start_job"], None, None]
    # An id in the request itself is read too.
    named = ScriptedChatModel(acts=[answer("ok")])
    await run(runtime, "agentd-react", "How is ftjob-99887766aabbccdd doing?", named)
    assert named.callable == [None]
    await runtime.close()
    registry.close()


async def test_a_rewoo_plan_cannot_begin_with_a_tool_needing_an_id_no_earlier_step_gives(tmp_path):
    from tests.fixtures.scripted_model import ScriptedChatModel, answer
    from tests.test_agents import open_runtime, run

    registry = ToolRegistry([start_job, job_state])
    runtime = await open_runtime(registry, tmp_path)
    plan = {"steps": [{"thought": "start", "tool": "start_job", "arguments": {"name": "a"}},
                      {"thought": "check", "tool": "job_state", "arguments": {"job_id": "#E1"}}]}
    llm = ScriptedChatModel(structured=[plan], acts=[answer("running")])
    _, outcome = await run(runtime, "agentd-rewoo", "Start job a and tell me how it is doing.", llm)
    assert outcome.answer == "running"
    schema = llm.schemas[0]
    # job_state may be the second step (given #E1), never the first: it would refer to itself.
    assert schema["properties"]["steps"]["prefixItems"] == [{"$ref": "#/$defs/step_start_job"}]
    jsonschema.validate(plan, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"steps": plan["steps"][1:]}, schema)
    # With the id in the request, job_state may come first.
    named = ScriptedChatModel(structured=[{"steps": []}], chats=["ok"])
    await run(runtime, "agentd-rewoo", "How is ftjob-99887766aabbccdd doing?", named)
    assert "prefixItems" not in named.schemas[0]["properties"]["steps"]
    await runtime.close()
    registry.close()


def test_a_plan_may_pass_an_unread_id_only_as_an_earlier_step_s_result():
    from agentd.agents.rewoo import plan_schema

    def plan(job_id: str) -> dict:
        return {"steps": [{"thought": "t", "tool": "job_status", "arguments": {"job_id": job_id}}]}

    tool = {"type": "function", "function": {"name": "job_status", "description": "Status.",
                                             "parameters": with_grounded_ids(JOB_STATUS, ids_read("nothing"))}}
    unread = plan_schema([tool], 3)
    jsonschema.validate(plan("#E1.job_id"), unread)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(plan("none"), unread)
    tool["function"]["parameters"] = with_grounded_ids(JOB_STATUS, ids_read("ftjob-00112233aabbccdd"))
    read = plan_schema([tool], 3)
    for allowed in ("ftjob-00112233aabbccdd", "#E1"):
        jsonschema.validate(plan(allowed), read)


def said(*texts: str) -> RunWords:
    words = RunWords()
    for text in texts:
        words.learn_from_text(text)
    return words


def _parameters(name: str) -> dict:
    from tools.builtin.jobs import JobTools

    return _tool_parameters(JobTools, name)


@pytest.mark.parametrize(("request_text", "methods"), [
    ("Adapt the base model to it, capped at 50 training steps.", ["lora"]),
    ("Start a full fine-tune of smollm2.", ["lora", "full"]),
    ("Fine-tune smollm2, updating all the weights.", ["lora", "full"]),
    ("Use 4-bit QLoRA on smollm2.", ["lora", "qlora"]),
    ("Fine-tune it with LoRA.", ["lora"]),
])
def test_an_optional_named_choice_is_its_default_or_a_value_the_person_said(request_text, methods):
    """Unasked, the embedded model wrote `method: "full"` (every weight) for the first request."""
    grounded = with_grounded_choices(_parameters("finetune"), said(request_text))
    assert grounded["properties"]["method"]["enum"] == methods
    assert grounded["properties"]["model"] == _parameters("finetune")["properties"]["model"]  # required: as it was


def test_a_choice_with_no_default_is_not_written_until_a_value_is_said():
    def status_of(text: str) -> dict:
        return with_grounded_choices(_parameters("list_jobs"), said(text))

    assert "status" not in status_of("List my jobs.")["properties"]
    status = status_of("Which fine-tunes have crashed?")["properties"]["status"]
    assert [b.get("enum") for b in status["anyOf"]] == [["failed"], None]  # a value, or null
    step = step_schema([{"type": "function", "function": {
        "name": "list_jobs", "description": "List.", "parameters": status_of("Are any still running?")}}], 1)

    def call(status: str) -> dict:
        return {"thought": "t", "tool_calls": [{"name": "list_jobs", "arguments": {"status": status}}]}

    jsonschema.validate(call("running"), step)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(call("failed"), step)


def test_words_are_matched_whole_and_across_dashes_and_underscores():
    words = said("Run the QLoRA job; show the validating-files ones and everything well done.")
    assert words.said("qlora") and words.said("validating_files") and words.said("done")
    assert not words.said("lora") and not words.said("valid") and not words.said("one")


@pytest.mark.parametrize(("request_text", "written"), [
    ("Fine-tune smollm2 on my tickets.", False),
    ("Fine-tune smollm2 on my tickets in the background.", True),
    ("Start it and don't wait for it.", True),
])
def test_a_yes_or_no_is_left_at_its_default_unless_the_words_the_tool_declares_were_said(request_text, written):
    """Unasked, the model wrote `wait: false` to an evaluation; `grayscale: true` for "save it as a JPEG"."""
    assert ("wait" in with_grounded_choices(_parameters("finetune"), said(request_text))["properties"]) == written


@pytest.mark.parametrize(("request_text", "written"), [
    ("Start a full fine-tune of smollm2 and don't wait for it to finish.", {"method": ["full"], "wait": [False]}),
    ("Fine-tune smollm2 with 4-bit QLoRA, without waiting.", {"method": ["qlora"], "wait": [False]}),
    ("Fine-tune smollm2 on the full data set and wait for it.", {}),  # "full" alone, "wait" alone: unsure
    ("Fine-tune smollm2 on my tickets.", {}),
    ("A full fine-tune, or LoRA if that is quicker: you choose.", {}),  # the default named too
])
def test_a_choice_the_request_surely_said_is_written(request_text, written):
    """Left free, the model wrote no `method` for "start a full fine-tune": what the person surely said
    becomes a required argument of that value alone."""
    words = said(request_text)
    grounded = with_said_values(with_grounded_choices(_parameters("finetune"), words), words)
    assert {name: grounded["properties"][name]["enum"] for name in written} == written
    assert set(grounded["required"]) == {"model", "training_file"} | set(written)
    step = step_schema([{"type": "function", "function": {"name": "finetune", "description": "F.",
                                                           "parameters": grounded}}], 1)
    call = {"model": "smollm2", "training_file": "file-00112233aabbccdd00112233"}
    if written:  # the argument cannot be left out, nor given its default
        for arguments in (call, call | {"method": "lora", "wait": True}):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({"thought": "t", "tool_calls": [{"name": "finetune", "arguments": arguments}]}, step)
    jsonschema.validate({"thought": "t", "tool_calls": [{"name": "finetune", "arguments": call | {
        name: values[0] for name, values in written.items()}}]}, step)


def test_only_the_person_s_words_make_a_value_written_not_a_result_s():
    from agentd.agents.grounding import RunReading
    from tools.builtin.deployment import DeploymentTools

    reading = RunReading()
    reading.learn("List the deployments.", lambda file_id: None, by_person=True)
    reading.read_result('[{"deployment_id": "dep-1", "status": "stopped"}]')
    listing = {"type": "function", "function": {"name": "list_deployments", "description": "L.",
                                                "parameters": _tool_parameters(DeploymentTools, "list_deployments")}}
    assert "include_stopped" not in (reading.definition(listing)["function"]["parameters"].get("required") or [])
    reading.learn("Now including the stopped ones.", lambda file_id: None, by_person=True)
    assert reading.definition(listing)["function"]["parameters"]["required"] == ["include_stopped"]


@pytest.mark.parametrize(("request_text", "listed"), [
    ("Run the hellaswag and winogrande benchmarks on smollm2.", ["hellaswag", "winogrande"]),
    ("Put SmolLM2 through ARC easy, BoolQ and the support questions.", ["arc_easy", "boolq", "support_qa"]),
    ("Score smollm2 on piqa.", None),
    ("Run hellaswag and piqa on smollm2, then compare it with its fine-tune on boolq.", None),  # boolq: another call's
    ("Evaluate smollm2 on sciq, then see how it does on boolq.", None),  # said apart
])
def test_names_the_person_listed_together_are_all_written(request_text, listed):
    """Offered hellaswag and winogrande, the model evaluated "the hellaswag and winogrande benchmarks" on
    hellaswag alone: a list the person said is the list written, in their order."""
    from agentd.agents.grounding import RunReading
    from tools.builtin.evaluation import EvaluationTools

    reading = RunReading()
    reading.learn(request_text, lambda file_id: None, by_person=True)
    evaluate = reading.definition({"type": "function", "function": {
        "name": "evaluate", "description": "E.", "parameters": _tool_parameters(EvaluationTools, "evaluate")}})
    step = step_schema([evaluate], 1)

    def writes(tasks: list[str]) -> bool:
        arguments = {"model": "smollm2", "tasks": tasks}
        return jsonschema.Draft202012Validator(step).is_valid(
            {"thought": "t", "tool_calls": [{"name": "evaluate", "arguments": arguments}]})

    if listed is None:
        assert "prefixItems" not in json.dumps(evaluate)
    else:
        assert writes(listed) and not writes(listed[:1]) and not writes(listed[::-1]) and not writes(listed * 2)


@pytest.mark.parametrize(("tool", "request_text", "written"), [
    ("finetune", "Could you run a single epoch of training on smollm2 with file-00112233aabbccdd00112233?",
     {"epochs": 1}),
    ("finetune", "Fine-tune smollm2 on file-00112233aabbccdd00112233, capped at 50 training steps.", {"max_steps": 50}),
    ("finetune", "Fine-tune smollm2 on file-00112233aabbccdd00112233 for 2 or 3 epochs.", {}),  # not one number
    ("finetune", "Fine-tune smollm2 on file-00112233aabbccdd00112233 with 3 examples.", {}),  # not its unit
    ("evaluate", "Score smollm2 on piqa, only the first 20 questions, 5-shot.", {"limit": 20, "num_fewshot": 5}),
    ("evaluate", "Score smollm2 on piqa with 20 to 40 questions.", {}),
    ("deploy", "Deploy smollm2 and unload it after 10 minutes without use.", {"keep_alive": "10m"}),  # as written
    ("deploy", "Serve smollm2; free it when unused for 2 hours.", {"keep_alive": "2h"}),
    ("deploy", "Deploy smollm2, drop it after 10 idle minutes.", {}),  # not right before its unit
])
def test_a_count_said_in_its_unit_is_written(tool, request_text, written):
    """Left free, the model wrote no `epochs` for "run a single epoch of training", no `keep_alive` for
    "unload it after 10 minutes without use"."""
    from agentd.agents.grounding import RunReading
    from tools.builtin.deployment import DeploymentTools
    from tools.builtin.evaluation import EvaluationTools
    from tools.builtin.jobs import JobTools

    reading = RunReading()
    reading.learn(request_text, lambda file_id: "file", by_person=True)
    toolkit = {"finetune": JobTools, "evaluate": EvaluationTools, "deploy": DeploymentTools}[tool]
    parameters = reading.definition({"type": "function", "function": {
        "name": tool, "description": "T.", "parameters": _tool_parameters(toolkit, tool)}})["function"]["parameters"]
    required = set(parameters["required"]) - {"model", "training_file", "tasks"}
    assert {name: parameters["properties"][name]["enum"] for name in required} == {
        name: [value] for name, value in written.items()}


def _picture_call(tool: str, request_text: str, *results: str) -> dict:
    """The parameters of a picture tool as a run that read `request_text` (the person's) and `results` has them."""
    from agentd.agents.grounding import RunReading
    from tools.builtin.image_generation import ImageGenerationTools
    from tools.builtin.vision import crop_image, detect_faces, resize_image

    reading = RunReading()
    reading.learn(request_text, lambda file_id: "image", by_person=True)
    for result in results:
        reading.read_result(result)
    definition = {"crop_image": crop_image, "resize_image": resize_image, "detect_faces": detect_faces,
                  "text_to_image": ImageGenerationTools(None).text_to_image}[tool].definition()
    return reading.definition(definition)["function"]["parameters"]


def _written(parameters: dict, *names: str) -> dict:
    """Per argument, the values the step grammar leaves it (None: any it allows, or it may be left out)."""
    required = set(parameters.get("required") or ())
    return {name: parameters["properties"][name].get("enum") if name in required else None for name in names}


PHOTO = "file-58595f70f4919f3da11ecb60"


@pytest.mark.parametrize(("tool", "request_text", "written"), [
    ("text_to_image", "Generate a 256 by 256 image of a red bicycle.", {"width": [256], "height": [256]}),
    ("text_to_image", "Paint a lighthouse, 640x480.", {"width": [640], "height": [480]}),
    ("text_to_image", "Paint a lighthouse, 100 by 100.", {"width": None, "height": None}),  # not a multiple of 8
    ("resize_image", f"Make {PHOTO} 300 pixels wide.", {"width": [300], "height": None}),
    ("resize_image", f"Shrink {PHOTO} to 64 by 48, then another copy to 32x24.", {"width": None, "height": None}),
    ("crop_image", f"Cut out the top-left corner of {PHOTO}, 50 pixels wide and 40 high.",
     {"x": [0], "y": [0], "width": [50], "height": [40]}),
    # Its left edge is not said: a number read (said_or_read), the model's choice.
    ("crop_image", f"Crop the top right corner of {PHOTO}, 30 wide and 20 tall.",
     {"x": [20, 30], "y": [0], "width": [30], "height": [20]}),
    # Two corners: two crops, whose edges are the model's to write.
    ("crop_image", f"Crop the top-left corner of {PHOTO}, then the bottom-right corner.",
     {"x": None, "y": None, "width": None, "height": None}),
])
def test_a_size_or_corner_said_is_written(tool, request_text, written):
    """The model wrote no width or height for "a 256 by 256 image", and cropped "the top-left corner,
    50 pixels wide and 40 high" at x 50, 100 high."""
    assert _written(_picture_call(tool, request_text), *written) == written


def test_a_share_of_a_field_read_is_written_for_the_argument_of_its_name():
    """"Resize it to half that height" was resized to the height read, 240, not 120."""
    asked = f"Look at how tall {PHOTO} is, then resize it to half that height."
    measured = '{"width": 320, "height": 240, "mode": "RGB"}'
    assert _written(_picture_call("resize_image", asked, measured), "width", "height") == {"width": None,
                                                                                             "height": [120]}
    odd = '{"width": 320, "height": 375}'
    assert _written(_picture_call("resize_image", asked, odd), "height") == {"height": [187, 188]}
    doubled = _picture_call("resize_image", f"Check {PHOTO}'s size and make it twice its width.", measured)
    assert _written(doubled, "width", "height") == {"width": [640], "height": None}


def test_a_number_never_guessed_is_one_read_and_the_tool_waits_for_one():
    """Planned before the face was found, the crop was at a made-up box (120, 120, 60 by 60)."""
    from agentd.agents.rewoo import plan_schema

    asked = f"Find the face in {PHOTO} and crop it out."
    waiting = _picture_call("crop_image", asked)
    assert unfillable(waiting) == ["x", "y", "width", "height"]
    crop = {"type": "function", "function": {"name": "crop_image", "description": "C.", "parameters": waiting}}
    faces = {"type": "function", "function": {"name": "detect_faces", "description": "F.",
                                              "parameters": _picture_call("detect_faces", asked)}}
    plan = plan_schema([crop, faces], 3)

    def planned(x) -> dict:
        return {"steps": [{"thought": "t", "tool": "detect_faces", "arguments": {"image": PHOTO}},
                          {"thought": "t", "tool": "crop_image", "arguments": {
                              "image": PHOTO, "x": x, "y": "#E1.y", "width": "#E1.width", "height": "#E1.height"}}]}

    jsonschema.validate(planned("#E1.x"), plan)  # a later step may pass a result's number, not make one up
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(planned(120), plan)
    found = _picture_call("crop_image", asked, '{"faces": 1, "boxes": [{"x": 176, "y": 65, "width": 96, "height": '
                                               '96}], "image": {"width": 512, "height": 512}}')
    assert unfillable(found) == []
    offered = {name: found["properties"][name]["enum"] for name in ("x", "y", "width", "height")}
    assert offered["x"][0] == 176 and offered["y"][0] == 65 and 96 in offered["width"] and 96 in offered["height"]
    assert 120 not in offered["x"]


def test_a_tool_needing_one_of_a_group_waits_until_the_run_has_read_a_value_for_one():
    """A plan resized a picture before measuring it, with no size at all: resize_image needs a width or
    a height, and neither can be written before the run has read a number."""
    from agentd.agents.rewoo import plan_schema
    from tools.builtin.vision import image_stats

    asked = f"Look at how tall {PHOTO} is, then resize it to half that height."
    waiting = _picture_call("resize_image", asked)
    assert unfillable(waiting) == ["width or height"]
    assert unfillable(_picture_call("resize_image", asked, '{"width": 320, "height": 240}')) == []
    resize = {"type": "function", "function": {"name": "resize_image", "description": "R.", "parameters": waiting}}
    plan = plan_schema([resize, image_stats.definition()], 3)
    named = json.dumps(plan)
    assert '"const": "image_stats"' in named and '"const": "resize_image"' not in named
    # A tool_choice naming it still may (the tool then says what is missing).
    assert '"const": "resize_image"' in json.dumps(plan_schema([resize], 3, first="resize_image"))


def test_a_yes_or_no_without_declared_words_is_left_alone():
    parameters = {"type": "object", "properties": {"loud": {"type": "boolean", "default": False}}}
    assert with_grounded_choices(parameters, said("Say hello.")) == parameters


@tool
def tune(data: str, method: Annotated[Literal["lora", "full"], said_as(full=["all the weights"])] = "lora",
         wait: Annotated[bool, said_as(false=["background"])] = True) -> str:
    """Tune on some data.

    Args:
        data: the data.
        method: lora or full.
        wait: wait for the end.
    """
    return "tuned"


async def test_a_react_run_offers_the_model_only_the_choices_its_conversation_said(tmp_path):
    from tests.fixtures.scripted_model import ScriptedChatModel, answer
    from tests.test_agents import open_runtime, run

    registry = ToolRegistry([tune])
    runtime = await open_runtime(registry, tmp_path)
    offered: list[dict] = []

    def look(messages, tools):
        offered.append(next(t for t in tools if t["function"]["name"] == "tune")["function"]["parameters"])
        return answer("ok")

    await run(runtime, "agentd-react", "Tune on notes.jsonl.", ScriptedChatModel(acts=[look]))
    await run(runtime, "agentd-react", "Tune on notes.jsonl in the background, updating all the weights.",
              ScriptedChatModel(acts=[look]))
    unasked, asked = offered
    assert unasked["properties"]["method"]["enum"] == ["lora"] and "wait" not in unasked["properties"]
    assert asked["properties"]["method"]["enum"] == ["lora", "full"] and asked["properties"]["wait"]["type"] == "boolean"
    await runtime.close()
    registry.close()


def _tool_parameters(toolkit: type, name: str) -> dict:
    from tools.schema import json_schema_of, read_signature

    return json_schema_of(read_signature(getattr(toolkit, name), name).arguments)


def _grounded(parameters: dict, *texts: str) -> dict:
    from agentd.agents.grounding import RunReading

    reading = RunReading()
    for text in texts:
        reading.learn(text, lambda file_id: "file")
    definition = {"type": "function", "function": {"name": "t", "description": "T.", "parameters": parameters}}
    return reading.definition(definition)["function"]["parameters"]


@pytest.mark.parametrize(("text", "paths"), [
    ("Fine-tune smollm2 on examples/support_tickets.jsonl with LoRA.", ["examples/support_tickets.jsonl"]),
    ("use ./data/x.csv, then ~/notes.txt", ["~/notes.txt", "./data/x.csv"]),
    ("Fine-tune it on train.jsonl.", ["train.jsonl"]),
    ("Evaluate on sciq. Then on boolq.", []),
    ("e.g. a learning rate of 0.0002 on HuggingFaceTB/SmolLM2-135M-Instruct", []),
    ("the model ft:smollm2-135m-instruct:agentd::5c50a22b, upload file-05e7a388748001fe8f12ab34", []),
])
def test_paths_are_read_as_people_write_them(text, paths):
    assert ids_read(text).paths() == paths


def test_a_training_file_is_an_upload_read_or_a_path_said_and_the_tool_waits_for_one():
    """The embedded model fine-tuned on `training` ("a single epoch of training … with file-…") and
    `sciq` (the benchmark a comparison named), files that do not exist."""
    from tools.builtin.jobs import JobTools

    finetune = _tool_parameters(JobTools, "finetune")
    assert unfillable(_grounded(finetune, "Fine-tune smollm2 on my support tickets.")) == ["training_file"]
    grounded = _grounded(finetune, f"Could you run a single epoch of training on smollm2 with {UPLOAD}?")
    assert grounded["properties"]["training_file"]["enum"] == [UPLOAD] and unfillable(grounded) == []
    grounded = _grounded(finetune, f"Train smollm2 on examples/support_tickets.jsonl or {UPLOAD}.")
    assert grounded["properties"]["training_file"]["enum"] == [UPLOAD, "examples/support_tickets.jsonl"]


def test_a_document_argument_waits_for_a_file_the_run_has_read():
    """Asked "are any fine-tunes still running?", a plan added the document "none" to the knowledge
    base: a File argument takes a stored file's id (or a data: URL), never a path from an agent."""
    from tools.builtin.knowledge import KnowledgeTools

    ingest = _tool_parameters(KnowledgeTools, "knowledge_ingest")
    assert unfillable(_grounded(ingest, "Are any fine-tunes still running?")) == ["document"]
    grounded = _grounded(ingest, f"Add {UPLOAD} to the knowledge base.")
    assert grounded["properties"]["document"]["enum"] == [UPLOAD] and unfillable(grounded) == []


def test_a_task_is_one_the_conversation_named_or_any_built_in_one_when_it_named_none():
    from evaluation.tasks import builtin_tasks
    from tools.builtin.evaluation import EvaluationTools

    def tasks(*texts: str) -> list[str]:
        return _grounded(_tool_parameters(EvaluationTools, "evaluate"), *texts)["properties"]["tasks"]["items"]["enum"]

    assert tasks("How good is ft:smollm2-135m-instruct:agentd::5c50a22b on arc easy?") == ["arc_easy"]
    # Each at most once: offered piqa alone, the embedded model wrote it twenty times ("the first 20 questions").
    evaluate = _grounded(_tool_parameters(EvaluationTools, "evaluate"), "Score smollm2 on piqa, the first 20 questions.")
    assert evaluate["properties"]["tasks"]["maxItems"] == 1
    assert tasks("Run the support questions and BoolQ against my-llama.") == ["boolq", "support_qa"]
    assert tasks("Give smollm2 the MMLU exam.") == ["mmlu_subset"]
    assert tasks("Evaluate smollm2 on my questions in evals/faq.jsonl.") == [*builtin_tasks(), "evals/faq.jsonl"]
    assert "tune-then-check" not in tasks("Run the whole tune-then-check routine on smollm2.")


def test_an_optional_task_list_nobody_named_cannot_be_written():
    """tune_and_evaluate without tasks holds out part of the training file: that is what was asked."""
    from tools.builtin.workflow import WorkflowTools

    workflow = _tool_parameters(WorkflowTools, "tune_and_evaluate")
    unasked = _grounded(workflow, "Run the whole tune-then-check routine on smollm2 with the data in tickets.jsonl.")
    assert "tasks" not in unasked["properties"]
    asked = _grounded(workflow, "Teach the base model tickets.jsonl, compare it with the original on piqa.")
    assert asked["properties"]["tasks"]["anyOf"][0]["items"]["enum"] == ["piqa", "tickets.jsonl"]
    assert asked["properties"]["training_file"]["enum"] == ["tickets.jsonl"]


@tool
def train_on(data: Annotated[str, path_or_id("file")]) -> str:
    """Train on a data file.

    Args:
        data: the data file: an upload id (file-...) or a path.
    """
    return "trained"


async def test_a_react_run_cannot_call_a_file_tool_before_it_has_read_a_file(tmp_path):
    from tests.fixtures.scripted_model import ScriptedChatModel, answer
    from tests.test_agents import open_runtime, run

    registry = ToolRegistry([train_on])
    runtime = await open_runtime(registry, tmp_path)
    offered: list[dict | None] = []

    def look(messages, tools):
        offered.append(next((t["function"]["parameters"] for t in tools if t["function"]["name"] == "train_on"), None))
        return answer("ok")

    unread, read = ScriptedChatModel(acts=[look]), ScriptedChatModel(acts=[look])
    await run(runtime, "agentd-react", "Train on my support tickets.", unread)
    await run(runtime, "agentd-react", "Train on data/tickets.jsonl.", read)
    assert "train_on" not in unread.callable[0] and read.callable[0] is None
    assert offered[1]["properties"]["data"]["enum"] == ["data/tickets.jsonl"]
    await runtime.close()
    registry.close()
