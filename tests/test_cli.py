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
