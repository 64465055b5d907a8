"""No tool reads or writes outside its workspace, whatever a caller sends over HTTP: file ids and
names that climb out of the file store, training and task files named by a path outside the
server's working directory (directly, with `..`, or through a symbolic link), and the sandbox."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import MODEL
from tests.fixtures.tickets import ticket_records


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """The server's working directory for the test (the server runs in this process), with a link in
    it to a perfectly good JSONL file outside it."""
    inside, outside = tmp_path / "work", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    secret = outside / "secret.jsonl"
    secret.write_text("".join(json.dumps(record) + "\n" for record in ticket_records(4)))
    (inside / "link.jsonl").symlink_to(secret)
    monkeypatch.chdir(inside)
    return secret


@pytest.mark.parametrize("path", ["/v1/files/..%2F..%2Fetc%2Fpasswd/content", "/v1/files/file-..%2Ffiles.sqlite",
                                  "/v1/files/..%2Ffiles.sqlite/content", "/v1/files/%2Fetc%2Fpasswd"])
def test_file_ids_cannot_climb_out_of_the_store(http, path):
    for method in ("GET", "DELETE"):
        reply = http.request(method, path)
        assert reply.status_code in (404, 405), (method, path, reply.status_code)
        assert "root:" not in reply.text


def test_a_file_name_cannot_place_the_upload(http, tmp_path):
    target = Path("/tmp") / f"agentd-escape-{uuid.uuid4().hex}.jsonl"
    name = f"../../../../../..{target}"
    reply = http.post("/v1/files", files={"file": (name, b'{"messages": [{"role": "user", "content": "hi"}, '
                                                         b'{"role": "assistant", "content": "yo"}]}\n')},
                      data={"purpose": "fine-tune"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["filename"] == target.name and not target.exists()
    http.delete(f"/v1/files/{reply.json()['id']}")


@pytest.mark.parametrize("value", ["/etc/passwd", "../outside/secret.jsonl", "link.jsonl", "SECRET"])
def test_training_files_only_from_the_workspace(http, workspace, value):
    value = str(workspace) if value == "SECRET" else value  # a valid file: refused for where it is
    jobs_before = len(http.get("/v1/fine_tuning/jobs?limit=100").json()["data"])
    reply = http.post("/v1/tools/finetune", json={"model": MODEL, "training_file": value, "wait": False})
    result = reply.json()
    assert reply.status_code == 200 and result["is_error"], result
    assert "refused" in result["error"]["message"]
    assert len(http.get("/v1/fine_tuning/jobs?limit=100").json()["data"]) == jobs_before


@pytest.mark.parametrize("value", ["/etc/hostname", "../outside/secret.jsonl", "link.jsonl"])
def test_task_files_only_from_the_workspace(http, workspace, value):
    reply = http.post("/v1/tools/evaluate", json={"model": MODEL, "tasks": [value], "wait": False})
    result = reply.json()
    assert reply.status_code == 200 and result["is_error"], result
    assert "task files are read only from" in result["error"]["message"]


@pytest.mark.parametrize("code", ["print(open('/etc/passwd').read())", "open('/tmp/agentd-escape', 'w').write('x')",
                                  "import os\nos.symlink('/etc/passwd', 'p')\nprint(open('p').read())"])
def test_the_python_tool_stays_in_its_folder(http, code):
    result = http.post("/v1/tools/python", json={"code": code}).json()
    assert result["is_error"] and "root:" not in json.dumps(result)
    assert not Path("/tmp/agentd-escape").exists()
