"""The tune → evaluate → compare (→ deploy) workflow, model names and training-file paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agentd.jobs.evaluate import ServedModels
from agentd.jobs.service import JobService
from pipelines.registry import ModelSpec
from tests.fixtures.tickets import ticket_records, write_tickets
from tools import FileStore, ToolRegistry
from tools.base import ToolError
from tools.builtin.data_files import EXAMPLES_DIR, local_data_path, training_file_id
from tools.builtin.jobs import JobTools
from tools.builtin.model_names import resolve_model
from tools.builtin.workflow import WorkflowTools
from tools.builtin.workflow_data import held_out_count

pytestmark = pytest.mark.timeout(600)
SERVED = ["smollm2-135m-instruct", "smollm2-135m-instruct-tool-use", "ft:smollm2-135m-instruct:agentd::1a2b3c4d",
          "qwen2.5-0.5b", "agentd-react", "agentd-rewoo"]


# -- model names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("smollm2-135m-instruct", "smollm2-135m-instruct"),
    ("smollm2", "smollm2-135m-instruct"),  # a prefix; its -tool-use variant and the fine-tune's id extend it
    ("smollm2-135m-instruct-tool", "smollm2-135m-instruct-tool-use"),
    ("SmolLM2 135M", "smollm2-135m-instruct"),
    ("qwen", "qwen2.5-0.5b"),
    ("0.5b", "qwen2.5-0.5b"),  # a unique substring
    ("the base model", "smollm2-135m-instruct"),
    ("base", "smollm2-135m-instruct"),
    ("Embedded", "smollm2-135m-instruct"),
    ("ft:smollm2-135m-instruct:agentd::1a2b3c4d", "ft:smollm2-135m-instruct:agentd::1a2b3c4d"),
    ("ft:smollm2-135m-instruct:agentd::99999999:ckpt-step-4", "ft:smollm2-135m-instruct:agentd::99999999:ckpt-step-4"),
    ("/models/my-model", "/models/my-model"),  # a folder: the deployments service judges it
])
def test_model_names_resolve_to_served_ids(name, expected):
    assert resolve_model(name, SERVED, "smollm2-135m-instruct") == expected


def test_unknown_or_ambiguous_names_list_the_served_ids():
    with pytest.raises(ToolError, match="not served here; served models: smollm2-135m-instruct, .*qwen2.5-0.5b"):
        resolve_model("llama", SERVED, "smollm2-135m-instruct")
    with pytest.raises(ToolError, match="could mean any of agentd-react, agentd-rewoo"):
        resolve_model("agentd", SERVED, "smollm2-135m-instruct")
    with pytest.raises(ToolError, match="could mean any of smollm2-135m-instruct, .*ft:smollm2"):
        resolve_model("instruct", SERVED, "smollm2-135m-instruct")  # the base or its fine-tune: not guessed
    with pytest.raises(ToolError, match="no base model is served"):
        resolve_model("base", ["qwen2.5-0.5b"], "smollm2-135m-instruct")
    with pytest.raises(ToolError, match="not served here"):
        resolve_model("   ", SERVED, None)


def test_the_deploy_tool_knows_the_embedded_model_is_deployable_even_when_not_served(tmp_path):
    from agentd.deployments import DeploymentService
    from pipelines.embedded import EMBEDDED_MODEL_ID
    from pipelines.registry import ModelRegistry
    from tools.builtin.model_names import UnknownModel, resolve_if_known, served_by_deployments

    service = DeploymentService(tmp_path, ModelRegistry([], tmp_path))
    served = served_by_deployments(service)
    assert served == [EMBEDDED_MODEL_ID]
    assert resolve_if_known("smollm2", served) == resolve_if_known("the base model", served) == EMBEDDED_MODEL_ID
    with pytest.raises(UnknownModel):
        resolve_if_known("gpt-9", served)
    assert resolve_if_known("gpt-9", None) == "gpt-9"  # no served list known: the service judges


# -- training-file paths ---------------------------------------------------------------------------


def test_paths_are_read_only_from_the_working_directory_and_examples(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    write_tickets(work / "data" / "tickets.jsonl", count=4)
    outside = write_tickets(tmp_path / "secret.jsonl", count=4)
    monkeypatch.chdir(work)
    assert local_data_path("data/tickets.jsonl") == (work / "data" / "tickets.jsonl").resolve()
    assert local_data_path(str(work / "data" / "tickets.jsonl")) == (work / "data" / "tickets.jsonl").resolve()
    # The repository's examples are found from anywhere, with or without the folder's name.
    assert local_data_path("examples/support_tickets.jsonl") == EXAMPLES_DIR / "support_tickets.jsonl"
    assert local_data_path("support_tickets.jsonl") == EXAMPLES_DIR / "support_tickets.jsonl"
    for refused in (str(outside), "../secret.jsonl", "data/../../secret.jsonl", "/etc/passwd", "~/.bashrc"):
        with pytest.raises(ToolError, match="refused"):
            local_data_path(refused)
    (work / "link.jsonl").symlink_to(outside)  # a link inside pointing outside is outside
    with pytest.raises(ToolError, match="refused"):
        local_data_path("link.jsonl")
    with pytest.raises(ToolError, match="no file 'data/nope.jsonl'"):
        local_data_path("data/nope.jsonl")


def test_a_path_is_uploaded_and_a_file_id_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = FileStore(tmp_path / "files")
    file_id = training_file_id("examples/support_tickets.jsonl", files)
    stored = files.get(file_id)
    assert stored.purpose == "fine-tune" and stored.filename == "support_tickets.jsonl"
    assert files.read(file_id) == (EXAMPLES_DIR / "support_tickets.jsonl").read_bytes()
    assert training_file_id(file_id, files) == file_id
    with pytest.raises(ToolError, match="no file with id 'file-nope'"):
        training_file_id("file-nope", files)
    (tmp_path / "notes.jsonl").write_text("not json\n")
    with pytest.raises(ToolError, match="not usable training data"):
        training_file_id("notes.jsonl", files)
    files.close()


def test_the_example_tickets_follow_the_fixture_and_stay_out_of_support_qa():
    from evaluation.tasks.generated import support_qa

    records = [json.loads(line) for line in (EXAMPLES_DIR / "support_tickets.jsonl").read_text().splitlines()]
    held = {row["ticket"] for row in support_qa()}
    expected = [r for r in ticket_records(200, seed=14) if r["messages"][0]["content"] not in held][:64]
    assert records == expected and len(records) == 64


def test_held_out_share():
    assert [held_out_count(n) for n in (2, 5, 10, 64, 1000, 5000)] == [1, 1, 2, 13, 200, 200]


# -- the workflow on a tiny model, through the real jobs service -------------------------------------


@pytest.fixture()
def workflow(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the "server's" working directory, where training paths are read

    def base_folder(model: str) -> Path:
        if model != "tiny-llama":
            raise ValueError(f"model {model!r} is not served here")
        return tiny

    files = FileStore(tmp_path / "files")
    service = JobService(tmp_path, file_store=files, base_folder=base_folder, poll_s=0.1)
    # As a server has it: the served models' specs, fine-tunes found through the jobs service.
    specs = {"tiny-llama": ModelSpec(id="tiny-llama", kind="local", location=str(tiny))}
    service.model_target = ServedModels(lambda: specs, data_dir=tmp_path, self_url=lambda: "http://127.0.0.1:9/v1",
                                        find_spec=service.model_spec)
    tools = ToolRegistry([WorkflowTools(service, poll_s=0.1), JobTools(service, poll_s=0.1)], file_store=files)
    return tools, service, files


async def test_tune_and_evaluate_holds_out_data_reports_stages_and_picks_the_better(workflow, tmp_path):
    tools, service, files = workflow
    data = files.put(json.dumps(ticket_records(10, seed=3)).encode(), "x.json")  # not JSONL: refused below
    await service.start()
    updates: list[dict] = []
    context = replace(tools.context, on_progress=updates.append)
    write_tickets(tmp_path / "tickets.jsonl", count=10, seed=5)
    result = await tools.invoke("tune_and_evaluate", {"model": "tiny", "training_file": "tickets.jsonl", "limit": 1,
                                                      "max_steps": 3},
                                context=context)
    assert result.ok, result.observation()
    answer = result.value
    assert answer["base_model"] == "tiny-llama" and answer["tuned_model"].startswith("ft:tiny-llama:agentd::")
    assert answer["better"] in (answer["base_model"], answer["tuned_model"])
    assert answer["better"] in answer["summary"] and "tickets_heldout" in answer["summary"]
    table = answer["table"].splitlines()
    assert table[0] == "| task | metric | base | tuned |"
    assert {row.split(" | ")[1] for row in table[2:]} == {"exact_match", "f1"}
    assert all(row.startswith("| tickets_heldout |") for row in table[2:])
    assert answer["deployed"] is None
    # The per-task comparison and the chosen hyperparameters stream as progress.
    [line] = [update for update in updates if update.get("stage") == "compare" and "task" in update]
    assert line["task"] == "tickets_heldout" and line["better"] in ("base", "tuned", None)
    chosen = next(update for update in updates if update.get("stage") == "fine-tune" and "batch_size" in update)
    assert chosen["max_steps"] == 3 and chosen["batch_size"] == 1

    stages = [update["stage"] for update in updates]
    assert stages[0] == "fine-tune" and "held out 2 of 10" in updates[0]["message"]
    assert stages.index("evaluate") > stages.index("fine-tune") and stages[-1] == "compare"
    assert any(update.get("step") for update in updates if update["stage"] == "fine-tune")
    evaluated = [update for update in updates if update["stage"] == "evaluate" and "done" in update]
    assert {update["model"] for update in evaluated} == {"tiny-llama", answer["tuned_model"]}
    assert evaluated[-1]["total"] == 2  # 1 held-out sample (limit 1) × 2 models, in one job

    # The jobs are the ordinary ones: trained on the 8 records not held out.
    job = service.get(answer["fine_tune_job"])
    trained = files.read(job.params["training_file"]).decode().splitlines()
    assert len(trained) == 8 and job.params["training"]["method"] == "lora"
    assert service.get(answer["evaluation_job"]).params["models"][1]["id"] == answer["tuned_model"]

    refused = await tools.invoke("tune_and_evaluate", {"model": "tiny", "training_file": data.id})
    assert not refused.ok and "stage fine-tune" in refused.observation()
    await service.close()


async def test_tune_and_evaluate_refuses_bad_input_before_training(workflow, tmp_path):
    tools, service, _ = workflow
    tickets = write_tickets(tmp_path / "tickets.jsonl", count=4)
    for arguments, message in [
        ({"model": "gpt-9", "training_file": str(tickets)}, "not served here; served models: tiny-llama"),
        ({"model": "tiny", "training_file": "/etc/passwd"}, "refused"),
        ({"model": "tiny", "training_file": str(tickets), "tasks": ["no_such_task"]}, "stage evaluate: tasks[0]"),
        ({"model": "tiny", "training_file": "file-nope"}, "no file with id"),
    ]:
        result = await tools.invoke("tune_and_evaluate", arguments)
        assert not result.ok and message in result.observation(), result.observation()
    assert service.list() == []  # nothing was queued


async def test_deploy_better_without_a_deployments_service_is_refused_before_training(workflow, tmp_path):
    tools, service, _ = workflow
    tickets = write_tickets(tmp_path / "tickets.jsonl", count=5, seed=9)
    result = await tools.invoke("tune_and_evaluate", {"model": "tiny-llama", "training_file": str(tickets),
                                                      "tasks": ["support_qa"], "deploy_better": True})
    assert not result.ok and "stage deploy: deployments are not available" in result.observation()
    assert service.list() == []


async def test_finetune_tool_takes_auto_hyperparameters_and_a_path(workflow, tmp_path):
    tools, service, _ = workflow
    tickets = write_tickets(tmp_path / "tickets.jsonl", count=4)
    started = await tools.invoke("finetune", {"model": "tiny", "training_file": str(tickets), "wait": False,
                                              "batch_size": 1})
    assert started.ok, started.observation()
    job = service.get(started.value["job_id"])
    assert job.params["model"] == "tiny-llama" and job.params["training"]["batch_size"] == 1
    assert job.params["training_file"].startswith("file-")
    bad = await tools.invoke("finetune", {"model": "tiny", "training_file": str(tickets), "epochs": "lots"})
    assert not bad.ok and "epochs" in bad.observation()
    await service.close()


# -- the CLI, against a real server on loopback ----------------------------------------------------


def test_cli_help_names_the_workflow():
    from typer.testing import CliRunner

    from agentd.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["workflow", "--help"])
    assert listed.exit_code == 0 and "tune-and-evaluate" in listed.output
    helped = runner.invoke(app, ["workflow", "tune-and-evaluate", "--help"])
    assert helped.exit_code == 0 and "--training-file" in helped.output and "--deploy-better" in helped.output


def test_cli_runs_the_workflow_through_a_server(tmp_path, tiny):
    import asyncio

    from typer.testing import CliRunner

    from agentd.cli import app
    from agentd.config import Settings
    from agentd.server.app import create_app
    from pipelines.registry import ModelRegistry
    from tests.conftest import RunningServer

    registry = ModelRegistry([ModelSpec(id="tiny-llama", kind="local", location=str(tiny))], tmp_path)
    asyncio.run(registry.load_all())
    server = RunningServer(create_app(Settings(data_dir=tmp_path), registry))
    tickets = write_tickets(tmp_path / "tickets.jsonl", count=6, seed=2)
    try:
        result = CliRunner().invoke(app, ["workflow", "tune-and-evaluate", "--model", "tiny", "--training-file",
                                          str(tickets), "--task", "support_qa", "--limit", "1", "--max-steps", "2",
                                          "--deploy-better", "--url", server.url])
        refused = CliRunner().invoke(app, ["workflow", "tune-and-evaluate", "--model", "gpt-9", "--training-file",
                                           str(tickets), "--url", server.url])
    finally:
        server.stop()
        asyncio.run(registry.close())
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"uploaded {tickets} as file-")
    assert any(line.startswith("[fine-tune] ftjob-") and "succeeded: ft:tiny-llama" in line for line in lines)
    assert any(line.startswith("[evaluate] evaljob-") and "succeeded" in line for line in lines)
    assert "| task | metric | base | tuned |" in lines and any(line.startswith("| support_qa | f1 |") for line in lines)
    assert "deployed: " in result.output  # both score 0 on a random model: the base, already served
    assert refused.exit_code == 1 and "not served here" in refused.output


def test_the_verdict_names_the_better_model_and_its_headline_metric():
    from agentd.jobs.evaluate import task_result
    from evaluation.reports import compare
    from tools.builtin.verdict import judge, results_table

    def entry(model: str, task: str, exact: float, f1: float) -> dict:
        return {"task": task, "task_version": "1", "model": model, "model_fingerprint": model, "num_fewshot": 0,
                "seed": 1, "limit": None, "chat_template": True, "samples": 40, "unparsed": 0, "cached": 0,
                "seconds": 1.0, "metrics": {"exact_match": {"value": exact, "stderr": 0.0 if exact in (0, 1) else 0.05},
                                            "f1": {"value": f1, "stderr": 0.03}}}

    base, tuned = "smollm2-135m-instruct", "ft:smollm2-135m-instruct:agentd::1a2b3c4d"
    entries = [entry(base, "support_qa", 0.0, 0.07), entry(tuned, "support_qa", 0.0, 0.91)]
    comparisons = [compare(task_result(entries[0]), task_result(entries[1]))]
    verdict = judge(comparisons, entries, base, tuned)
    assert verdict.better == tuned
    assert verdict.summary == f"{tuned} is better than {base} on support_qa: f1 0.91 vs 0.07."
    assert "| support_qa | f1 | 0.0700 ± 0.0300 | 0.9100 ± 0.0300 |" in results_table(verdict)

    # Within noise, still named, and said to be within noise; a worse fine-tune keeps the base.
    close = [entry(base, "support_qa", 0.0, 0.50), entry(tuned, "support_qa", 0.0, 0.52)]
    verdict = judge([compare(task_result(close[0]), task_result(close[1]))], close, base, tuned)
    assert verdict.better == tuned and "within noise" in verdict.summary
    worse = [entry(base, "support_qa", 0.0, 0.60), entry(tuned, "support_qa", 0.0, 0.20)]
    verdict = judge([compare(task_result(worse[0]), task_result(worse[1]))], worse, base, tuned)
    assert verdict.better == base and verdict.summary.startswith(f"{base} is better than {tuned}")
