"""The `agentd` command against a real server."""

from typer.testing import CliRunner

from agentd.cli import app
from tests.conftest import MODEL

runner = CliRunner()


def test_models_command(server):
    result = runner.invoke(app, ["models", "--base-url", server.url])
    assert result.exit_code == 0 and MODEL in result.output


def test_chat_command_streams_answers(server):
    result = runner.invoke(
        app, ["chat", "--base-url", server.url, "--max-tokens", "12", "--temperature", "0"],
        input="What is the capital of France?\nAnd of Italy?\n\n",
    )
    assert result.exit_code == 0
    assert result.output.count("model> ") == 2 and "Paris" in result.output


def test_serve_refuses_a_bad_model_path():
    result = runner.invoke(app, ["serve", "--model", "x=/no/such/folder"])
    assert result.exit_code != 0 and "config.json" in result.output


def test_serve_refuses_an_unknown_engine_by_name(tmp_path):
    result = runner.invoke(app, ["serve", "--engine", "tensorrt", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--engine" in result.output and "'openvino'" in result.output
    assert "Traceback" not in result.output


def test_tools_list_and_call(tmp_path):
    from pathlib import Path

    user_tools = str(Path(__file__).parent / "fixtures" / "user_tools.py")
    listed = runner.invoke(app, ["tools", "list", "--tools", user_tools, "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert "shout" in listed.output and "calculator" in listed.output and "python" in listed.output
    called = runner.invoke(app, ["tools", "call", "shout", "--arg", "text=hey", "--arg", "times=3",
                                 "--tools", user_tools, "--no-builtins", "--data-dir", str(tmp_path)])
    assert called.exit_code == 0 and called.output.strip() == "HEY HEY HEY"
    as_json = runner.invoke(app, ["tools", "call", "calculator", "--json", '{"expression": "2^8"}',
                                  "--data-dir", str(tmp_path)])
    assert as_json.exit_code == 0 and as_json.output.strip() == "256"


def test_tools_call_reports_errors_with_a_failing_exit_code(tmp_path):
    bad = runner.invoke(app, ["tools", "call", "calculator", "--arg", "expr=1", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "expression: Field required" in bad.output
    malformed = runner.invoke(app, ["tools", "call", "calculator", "--arg", "novalue", "--data-dir", str(tmp_path)])
    assert malformed.exit_code == 2 and "key=value" in malformed.output


def test_tools_call_reads_local_images_and_saves_results(tmp_path):
    from pathlib import Path

    from PIL import Image as PILImage

    picture = tmp_path / "in.png"
    PILImage.new("RGB", (30, 20)).save(picture)
    user_tools = str(Path(__file__).parent / "fixtures" / "user_tools.py")
    result = runner.invoke(app, ["tools", "call", "stretch_image", "--arg", f"image={picture}", "--arg", "width=3",
                                 "--arg", "height=2", "--tools", user_tools, "--no-builtins",
                                 "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = Path(result.output.split("image saved: ")[1].strip())
    assert PILImage.open(saved).size == (3, 2)


def test_serve_refuses_a_broken_tools_file(tmp_path):
    result = runner.invoke(app, ["serve", "--tools", str(tmp_path / "missing.py"), "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "tools file not found" in result.output


def test_finetune_command_trains_with_progress_and_jobs_commands_show_it(tmp_path, tiny, tickets):
    data = tickets
    where = ["--data-dir", str(tmp_path / "state")]
    result = runner.invoke(app, ["finetune", "--model", str(tiny), "--data", str(data), "--method", "full",
                                 "--max-steps", "4", "--learning-rate", "0.003", "--seq-len", "64", *where])
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "loss " in result.output and "over 4 steps" in result.output
    assert f"new model: ft:{tiny.name}:agentd::" in result.output
    job_id = result.output.split("job ", 1)[1].split()[0]

    listed = runner.invoke(app, ["jobs", "list", *where])
    assert job_id in listed.output and "succeeded" in listed.output
    shown = runner.invoke(app, ["jobs", "show", job_id, *where])
    assert '"status": "succeeded"' in shown.output and '"checkpoints"' in shown.output
    logs = runner.invoke(app, ["jobs", "logs", job_id, *where])
    assert "worker" in logs.output and "training 4 steps" in logs.output
    assert runner.invoke(app, ["jobs", "show", "ftjob-none", *where]).exit_code != 0

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "no output"}\n')
    refused = runner.invoke(app, ["finetune", "--model", str(tiny), "--data", str(broken), *where])
    assert refused.exit_code == 1 and "broken.jsonl line 1" in refused.output
