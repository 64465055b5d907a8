"""OpenAI's Evals API through the official SDK against the real server: evals, runs as real
evaluation jobs in worker processes (kept tiny), output items, cancel, and errors in OpenAI's shape."""

from __future__ import annotations

import json
import time

import openai
import pytest

from evaluation.graders import parse_label
from tests.conftest import MODEL

pytestmark = pytest.mark.timeout(600)

ITEM_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
               "required": ["question", "answer"]}
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
MENTIONS = {"type": "string_check", "name": "mentions", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "ilike"}
ROWS = [  # (question, answer, given output)
    ("2+2", "4", "4"),
    ("capital of France", "Paris", "paris"),
    ("3*3", "9", "The answer is 9"),
    ("1+1", "2", "2"),
]


def _eval(client: openai.OpenAI, *criteria, name: str = "arithmetic"):
    return client.evals.create(
        name=name, data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=list(criteria or [EXACT]))


def _given_rows():
    return [{"item": {"question": q, "answer": a}, "sample": {"output_text": out}} for q, a, out in ROWS]


def _wait(client: openai.OpenAI, eval_id: str, run_id: str, until=("completed", "failed", "canceled"),
          timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in until:
            return run
        assert time.monotonic() < deadline, f"run still {run.status} after {timeout_s} s: {run.model_dump()}"
        time.sleep(0.5)


def _error(raised: pytest.ExceptionInfo) -> dict:
    body = raised.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_evals_create_retrieve_update_list_delete(client):
    created = _eval(client, EXACT, name="crud")
    assert created.id.startswith("eval_") and created.object == "eval"
    assert created.data_source_config.type == "custom"
    assert created.data_source_config.schema_["properties"]["item"] == ITEM_SCHEMA
    assert [c.name for c in created.testing_criteria] == ["exact"]
    assert client.evals.retrieve(created.id).name == "crud"
    updated = client.evals.update(created.id, name="renamed", metadata={"team": "qa"})
    assert (updated.name, updated.metadata) == ("renamed", {"team": "qa"})
    second = _eval(client, EXACT, name="second")
    newest = client.evals.list(order="desc", limit=2).data
    assert [e.id for e in newest] == [second.id, created.id]
    page = client.evals.list(order="asc", after=created.id, limit=100)
    assert second.id in [e.id for e in page.data] and created.id not in [e.id for e in page.data]
    deleted = client.evals.delete(created.id)
    assert (deleted.deleted, deleted.eval_id) == (True, created.id)
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(created.id)


def test_unknown_eval_is_a_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.evals.retrieve("eval_does_not_exist")
    error = _error(raised)
    assert error["type"] == "invalid_request_error" and "eval_does_not_exist" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.list("eval_does_not_exist")
    evaluation = _eval(client)
    with pytest.raises(openai.NotFoundError) as raised:
        client.evals.runs.retrieve("evalrun_nope", eval_id=evaluation.id)
    assert _error(raised)["param"] == "run_id"


@pytest.mark.parametrize("criterion,param", [
    ({**EXACT, "type": "regex_check"}, "testing_criteria[0].type"),
    ({**EXACT, "reference": "{{item.answr}}"}, "testing_criteria[0].reference"),
    ({**EXACT, "input": "{{ output_text }}"}, "testing_criteria[0].input"),
    ({"type": "text_similarity", "name": "m", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "evaluation_metric": "meteor", "pass_threshold": 0.5}, "testing_criteria[0].evaluation_metric"),
    ({"type": "label_model", "name": "judge", "model": "no-such-model", "labels": ["ok", "bad"],
      "passing_labels": ["ok"], "input": [{"role": "user", "content": "{{sample.output_text}}"}]},
     "testing_criteria[0].model"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item) return 1"}, "testing_criteria[0].source"),
])
def test_a_bad_grader_is_a_400_naming_the_field(client, criterion, param):
    with pytest.raises(openai.BadRequestError) as raised:
        _eval(client, criterion)
    assert _error(raised)["param"] == param


def test_jsonl_run_with_given_outputs_counts_passes_and_lists_output_items(client):
    evaluation = _eval(client, EXACT, MENTIONS)
    run = client.evals.runs.create(evaluation.id, name="given", data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": _given_rows()}})
    assert run.object == "eval.run" and run.status in ("queued", "in_progress", "completed")
    run = _wait(client, evaluation.id, run.id)
    assert run.status == "completed", run.error
    # exact: "4" and "2" equal their answers; mentions (ilike): all but none miss -> 4 of 4
    assert (run.result_counts.total, run.result_counts.passed, run.result_counts.failed,
            run.result_counts.errored) == (4, 2, 2, 0)
    per_criterion = {r.testing_criteria: (r.passed, r.failed) for r in run.per_testing_criteria_results}
    assert per_criterion == {"exact": (2, 2), "mentions": (4, 0)}
    assert run.per_model_usage == []  # no model was asked

    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
    assert [item.datasource_item_id for item in items] == [0, 1, 2, 3]
    assert [item.status for item in items] == ["pass", "fail", "fail", "pass"]
    assert items[1].datasource_item == {"question": "capital of France", "answer": "Paris"}
    assert items[1].sample.output[0].content == "paris"
    assert {(r.name, r.passed) for r in items[1].results} == {("exact", False), ("mentions", True)}
    failing = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="fail").data
    assert [item.datasource_item_id for item in failing] == [1, 2]
    one = client.evals.runs.output_items.retrieve(items[3].id, eval_id=evaluation.id, run_id=run.id)
    assert one.id == items[3].id and one.results[0].score == 1.0
    page = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=2, after=items[0].id).data
    assert [item.id for item in page] == [items[1].id, items[2].id]

    listed = client.evals.runs.list(evaluation.id, status="completed").data
    assert [r.id for r in listed] == [run.id]
    assert client.evals.runs.delete(run.id, eval_id=evaluation.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(run.id, eval_id=evaluation.id)


def test_jsonl_run_from_an_uploaded_file(client):
    evaluation = _eval(client, EXACT)
    lines = "\n".join(json.dumps(row) for row in _given_rows()[:2])
    uploaded = client.files.create(file=("rows.jsonl", lines.encode()), purpose="evals")
    run = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl",
                                                              "source": {"type": "file_id", "id": uploaded.id}})
    run = _wait(client, evaluation.id, run.id)
    assert (run.status, run.result_counts.total, run.result_counts.passed) == ("completed", 2, 1)
    assert run.data_source.source.type == "file_id"  # the run shows its data source as given
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl",
                                                            "source": {"type": "file_id", "id": "file-nope"}})
    assert _error(raised)["param"] == "data_source.source.id"


@pytest.mark.parametrize("data_source,param", [
    ({"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": "q"}}]}},
     "data_source.source.content[0].item"),
    ({"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": "q", "answer": 4}}]}},
     "data_source.source.content[0].item.answer"),
    ({"type": "completions", "model": "no-such-model", "source": {"type": "file_content", "content": [
        {"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}},
     "data_source.model"),
    ({"type": "completions", "model": "http://169.254.169.254/v1#m", "source": {"type": "file_content", "content": [
        {"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}},
     "data_source.model"),
    ({"type": "completions", "model": MODEL, "source": {"type": "file_content", "content": [
        {"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
      "sampling_params": {"top_p": 0.3}}, "data_source.sampling_params.top_p"),
    ({"type": "responses", "source": {"type": "responses"}}, "data_source.type"),
])
def test_a_bad_data_source_is_a_400_naming_the_field(client, data_source, param):
    evaluation = _eval(client)
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.create(evaluation.id, data_source=data_source)
    assert _error(raised)["param"] == param


def test_completions_run_on_the_embedded_model(client):
    evaluation = _eval(client, MENTIONS)
    rows = [{"item": {"question": q, "answer": a}} for q, a, _ in ROWS[:3]]
    run = client.evals.runs.create(evaluation.id, name="smollm", data_source={
        "type": "completions", "model": MODEL, "source": {"type": "file_content", "content": rows},
        "input_messages": {"type": "template", "template": [
            {"role": "system", "content": "Answer in a few words."},
            {"role": "user", "content": "What is {{item.question}}?"}]},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 12, "seed": 7}})
    assert run.model == MODEL
    run = _wait(client, evaluation.id, run.id)
    assert run.status == "completed", run.error
    counts = run.result_counts
    assert counts.total == 3 and counts.passed + counts.failed + counts.errored == 3 and counts.errored == 0
    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
    assert len(items) == 3
    for item, (question, answer, _) in zip(items, ROWS):
        output = item.sample.output[0].content
        assert output.strip(), "the model answered nothing"
        assert item.sample.input[-1].content == f"What is {question}?"
        assert item.sample.model == MODEL and item.sample.max_completion_tokens == 12
        assert 0 < item.sample.usage.completion_tokens <= 12 + 2 and item.sample.usage.prompt_tokens > 5
        # the grade is the string check applied to what the model said
        assert item.status == ("pass" if answer.lower() in output.lower() else "fail")
    assert counts.passed == sum(item.status == "pass" for item in items)
    usage = run.per_model_usage[0]
    assert (usage.run_model_name, usage.invocation_count) == (MODEL, 3)
    assert usage.completion_tokens == sum(item.sample.usage.completion_tokens for item in items)


def test_cancel_a_run(client):
    evaluation = _eval(client, MENTIONS)
    rows = [{"item": {"question": f"{n} + {n}", "answer": str(2 * n)}} for n in range(40)]
    run = client.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": MODEL, "source": {"type": "file_content", "content": rows},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}} ="}]},
        "sampling_params": {"max_completion_tokens": 64}})
    run = _wait(client, evaluation.id, run.id, until=("in_progress", "completed", "failed"), timeout_s=120)
    assert run.status == "in_progress"  # a worker is on it: cancelling stops that worker
    canceled = client.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert canceled.id == run.id
    run = _wait(client, evaluation.id, run.id, timeout_s=120)
    assert run.status == "canceled" and run.result_counts.total == 40
    assert client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data == []
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert _error(raised)["code"] == "run_already_ended"


def test_label_model_grader_judged_by_a_served_model(client):
    judge = {"type": "label_model", "name": "judge", "model": MODEL, "labels": ["correct", "incorrect"],
             "passing_labels": ["correct"], "input": [
                 {"role": "system", "content": "You grade answers."},
                 {"role": "user", "content": "Question: {{item.question}}\nExpected: {{item.answer}}\n"
                                             "Answer given: {{sample.output_text}}\nIs the answer given correct?"}]}
    evaluation = _eval(client, judge)
    run = client.evals.runs.create(evaluation.id, data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": _given_rows()[:2]}})
    run = _wait(client, evaluation.id, run.id)
    assert run.status == "completed", run.error
    assert run.result_counts.total == 2 and run.result_counts.errored == 0
    for item in client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data:
        result = item.results[0]
        said = result.sample["output"][0]["content"]
        assert result.sample["model"] == MODEL and "correct, incorrect" in result.sample["input"][-1]["content"]
        assert result.passed == (parse_label(said, ["correct", "incorrect"]) == "correct"), said


def test_a_builtin_task_runs_through_the_same_runs(client, tmp_path):
    evaluation = _eval(client, EXACT, name="benchmarks")
    run = client.evals.runs.create(evaluation.id, data_source={"type": "agentd_task", "task": "arc_easy",
                                                              "model": MODEL, "limit": 4})
    run = _wait(client, evaluation.id, run.id)
    assert run.status == "completed", run.error
    assert run.result_counts.total == 4
    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
    assert len(items) == 4 and all(item.results[0].name == "acc" for item in items)
    assert run.result_counts.passed == sum(item.results[0].score == 1.0 for item in items)
    assert "question" in items[0].datasource_item
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.create(evaluation.id, data_source={"type": "agentd_task", "task": "no_such_task",
                                                            "model": MODEL})
    assert _error(raised)["param"] == "data_source.task"
    # Not a path to any file the server can read, whose rows the output items would show.
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"question": "the password?", "answer": "hunter2"}\n')
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.create(evaluation.id, data_source={"type": "agentd_task", "task": str(secret),
                                                            "model": MODEL})
    assert _error(raised)["param"] == "data_source.task"
    with pytest.raises(openai.BadRequestError) as raised:
        client.evals.runs.create(evaluation.id, data_source={"type": "agentd_task", "task": "arc_easy",
                                                            "model": MODEL, "limit": 0})
    assert _error(raised)["param"] == "data_source.limit"
