"""`agentd eval` on the data folder: a real job, a score table, a comparison, three files."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from agentd.cli import app
from tests.conftest import DATA_DIR, MODEL

pytestmark = pytest.mark.timeout(600)
runner = CliRunner()


def test_eval_compares_two_models_and_writes_json_csv_and_markdown(tmp_path, tiny):
    embedded = DATA_DIR / "models" / MODEL
    out = tmp_path / "report"
    where = ["--data-dir", str(tmp_path / "state")]
    result = runner.invoke(app, ["eval", "--model", str(embedded), "--model", str(tiny), "--task", "arc_easy",
                                 "--limit", "6", "--batch-size", "4", "--output", str(out), *where])
    assert result.exit_code == 0, result.output
    assert "scores ± standard error" in result.output and "arc_easy" in result.output
    assert MODEL in result.output and tiny.name in result.output

    payload = json.loads((out / "results.json").read_text())
    assert payload["config"] == {"limit": 6, "num_fewshot": None, "seed": 1234, "batch_size": 4}
    by_model = {entry["model"]: entry for entry in payload["results"]}
    assert set(by_model) == {MODEL, tiny.name} and all(e["samples"] == 6 for e in by_model.values())
    for entry in by_model.values():  # each score as printed: value ± stderr
        acc = entry["metrics"]["acc"]
        assert f"{acc['value']:.4f} ± {acc['stderr']:.4f}" in result.output
    [comparison] = payload["comparisons"]
    assert comparison["task"] == "arc_easy" and comparison["model_a"] == MODEL
    assert isinstance(comparison["within_noise"], bool) and comparison["deltas"][0]["metric"] == "acc"
    verdict = "within noise" if comparison["within_noise"] else "beyond noise"
    assert comparison["note"] and verdict in " ".join(result.output.split())

    rows = list(csv.reader((out / "results.csv").read_text().splitlines()))
    assert len(rows) >= 3 and any(MODEL in cell for row in rows for cell in row)
    markdown = (out / "results.md").read_text()
    assert "|" in markdown and "arc_easy" in markdown and "## Comparison" in markdown

    assert payload["job_id"] == result.output.split("job ", 1)[1].split()[0]

    # The same run again is answered from the result cache.
    again = runner.invoke(app, ["eval", "--model", str(tiny), "--task", "arc_easy", "--limit", "6",
                                "--output", str(tmp_path / "again"), *where])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "results.json").read_text())["results"][0]["cached"] == 6


def test_eval_lists_tasks_refuses_bad_input_and_detaches(tmp_path, tiny):
    where = ["--data-dir", str(tmp_path)]
    listed = runner.invoke(app, ["eval", "--list-tasks", *where])
    assert listed.exit_code == 0 and "arc_easy" in listed.output and "hellaswag" in listed.output

    unknown_task = runner.invoke(app, ["eval", "--model", str(tiny), "--task", "no_such_task", *where])
    assert unknown_task.exit_code == 2 and "tasks[0]" in unknown_task.output and "no_such_task" in unknown_task.output
    unknown_model = runner.invoke(app, ["eval", "--model", "gpt-9", "--task", "arc_easy", *where])
    assert unknown_model.exit_code == 2 and "gpt-9" in unknown_model.output and "--base-url" in unknown_model.output
    nothing = runner.invoke(app, ["eval", *where])
    assert nothing.exit_code != 0 and "--task" in nothing.output

    detached = runner.invoke(app, ["eval", "--model", str(tiny), "--task", "arc_easy", "--limit", "2",
                                   "--detach", *where])
    assert detached.exit_code == 0 and "queued" in detached.output
    job_id = detached.output.split("job ", 1)[1].split()[0]
    assert job_id.startswith("evaljob-")
    shown = runner.invoke(app, ["jobs", "show", job_id, *where])
    assert '"status": "queued"' in shown.output and '"kind": "evaluation"' in shown.output


def test_eval_an_endpoint_agentd_serves_gives_the_local_scores(tmp_path, server):
    """The same model through agentd's own /v1 (prompt logprobs) scores as its weights do locally."""
    where = ["--data-dir", str(tmp_path), "--limit", "4", "--task", "arc_easy"]
    remote = runner.invoke(app, ["eval", "--base-url", f"{server.url}/v1", "--model", MODEL,
                                 "--output", str(tmp_path / "remote"), *where])
    assert remote.exit_code == 0, remote.output
    local = runner.invoke(app, ["eval", "--model", str(DATA_DIR / "models" / MODEL),
                                "--output", str(tmp_path / "local"), *where])
    assert local.exit_code == 0, local.output
    [remote_result] = json.loads((tmp_path / "remote" / "results.json").read_text())["results"]
    [local_result] = json.loads((tmp_path / "local" / "results.json").read_text())["results"]
    assert remote_result["model_fingerprint"] != local_result["model_fingerprint"]
    for metric in ("acc", "acc_norm"):
        assert remote_result["metrics"][metric]["value"] == pytest.approx(local_result["metrics"][metric]["value"])
