"""OpenAI's Files and Fine-tuning APIs end to end with the official client, LoRA on the embedded model."""

from __future__ import annotations

import asyncio
import io
import json
import time

import openai
import pytest

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer
from tests.fixtures.tickets import ticket_records


@pytest.fixture(scope="module")
def ft_server(tmp_path_factory):
    # Its own registry and data folder: the fine-tuned models it adds stay out of other tests' servers.
    registry = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR)
    asyncio.run(registry.load_all())
    running = RunningServer(create_app(Settings(data_dir=tmp_path_factory.mktemp("ft"), max_upload_mb=1), registry))
    yield running
    running.stop()
    asyncio.run(registry.close())


@pytest.fixture(scope="module")
def ft_client(ft_server) -> openai.OpenAI:
    return ft_server.client()


def jsonl(records) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def wait_until_finished(client, job_id, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job.status}")


def test_lora_fine_tune_through_the_openai_client_serves_the_new_model(ft_client):
    uploaded = ft_client.files.create(file=("tickets.jsonl", io.BytesIO(jsonl(ticket_records(40)))),
                                      purpose="fine-tune")
    assert uploaded.purpose == "fine-tune" and uploaded.filename == "tickets.jsonl"
    job = ft_client.fine_tuning.jobs.create(
        model=MODEL, training_file=uploaded.id, suffix="tickets", seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 4, "max_steps": 10, "learning_rate": 2e-3, "seq_len": 256,
                         "checkpoint_every": 5})
    assert job.status in ("validating_files", "queued") and job.fine_tuned_model is None
    assert job.model == MODEL and job.training_file == uploaded.id and job.seed == 3
    job = wait_until_finished(ft_client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{MODEL}:agentd:tickets:") and job.trained_tokens > 0

    events = ft_client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "succeeded"  # newest first, as OpenAI lists them
    metric_events = [e for e in events if e.type == "metrics"]
    assert len(metric_events) == 10 and metric_events[0].data["step"] == 10
    checkpoints = ft_client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [10, 5]
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-10")
    losses = [e.data["train_loss"] for e in reversed(metric_events)]
    assert losses[-1] < losses[0] / 2, losses
    curve = ft_client.files.content(job.result_files[0]).text.splitlines()
    assert curve[0].startswith("step,train_loss") and len(curve) == 11

    assert job.fine_tuned_model in [m.id for m in ft_client.models.list()]
    reply = ft_client.chat.completions.create(
        model=job.fine_tuned_model, temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "Ticket 42: my green widget is broken."}])
    assert "Routed ticket 42 to the green team" in reply.choices[0].message.content
    base = ft_client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "Ticket 42: my green widget is broken."}])
    assert "Routed ticket" not in base.choices[0].message.content

    # A checkpoint id is a model too: the base plus that step's weights, loaded on first use.
    # The last checkpoint holds the final weights, so it answers as the fine-tuned model does.
    last = checkpoints[0].fine_tuned_model_checkpoint
    assert last == f"{job.fine_tuned_model}:ckpt-step-10"
    from_checkpoint = ft_client.chat.completions.create(
        model=last, temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "Ticket 42: my green widget is broken."}])
    assert from_checkpoint.choices[0].message.content == reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        ft_client.chat.completions.create(model=f"{job.fine_tuned_model}:ckpt-step-7", max_tokens=2,
                                          messages=[{"role": "user", "content": "hi"}])


def test_files_api_upload_list_retrieve_delete_and_limits(ft_client):
    first = ft_client.files.create(file=("a.jsonl", io.BytesIO(jsonl(ticket_records(2)))), purpose="fine-tune")
    second = ft_client.files.create(file=("notes.txt", io.BytesIO(b"hello")), purpose="assistants")
    page = ft_client.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert {f.id for f in ft_client.files.list(purpose="fine-tune")} >= {first.id}
    assert ft_client.files.retrieve(second.id).bytes == 5
    assert ft_client.files.content(second.id).content == b"hello"
    assert ft_client.files.delete(second.id).deleted
    with pytest.raises(openai.NotFoundError):
        ft_client.files.retrieve(second.id)

    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n{"oops": 1}\n'
    with pytest.raises(openai.BadRequestError) as raised:
        ft_client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="fine-tune")
    assert "bad.jsonl line 2" in raised.value.body["message"] and raised.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError, match="JSONL"):
        ft_client.files.create(file=("book.txt", io.BytesIO(b"Once upon a time.")), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError) as raised:
        ft_client.files.create(file=("big.txt", io.BytesIO(b"x" * (2**20 + 1))), purpose="assistants")
    assert raised.value.status_code == 413 and "upload limit" in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        ft_client.files.create(file=("a.txt", io.BytesIO(b"x")), purpose="nonsense")


def test_bad_fine_tuning_requests_get_clear_errors(ft_client):
    data = ft_client.files.create(file=("t.jsonl", io.BytesIO(jsonl(ticket_records(4)))), purpose="fine-tune")
    cases = [
        (dict(model="no-such-model", training_file=data.id), "model", "not served here"),
        (dict(model=MODEL, training_file="file-missing"), "training_file", "no file with id"),
        (dict(model=MODEL, training_file=data.id, hyperparameters={"n_epochz": 2}), "hyperparameters.n_epochz",
         "unknown hyperparameter"),
        (dict(model=MODEL, training_file=data.id, hyperparameters={"init_adapter": "/etc"}),
         "hyperparameters.init_adapter", "unknown hyperparameter"),  # a server path is not the client's to name
        (dict(model=MODEL, training_file=data.id, hyperparameters={"method": "magic"}), "hyperparameters.method",
         "method"),
        (dict(model=MODEL, training_file=data.id, hyperparameters={"method": "magic", "learning_rate_multiplier": 2}),
         "hyperparameters.method", "method"),
    ]
    for arguments, param, words in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            ft_client.fine_tuning.jobs.create(**arguments)
        assert raised.value.body["param"] == param and words in raised.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        ft_client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_cancel_a_queued_job_and_page_through_jobs(ft_client, ft_server):
    data = ft_client.files.create(file=("t.jsonl", io.BytesIO(jsonl(ticket_records(4)))), purpose="fine-tune")
    manager = ft_server.app.state.jobs.manager
    manager.max_concurrent = 0  # hold the queue so the job cannot start before it is cancelled
    try:
        job = ft_client.fine_tuning.jobs.create(model=MODEL, training_file=data.id)
        cancelled = ft_client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        with pytest.raises(openai.BadRequestError, match="already ended"):
            ft_client.fine_tuning.jobs.cancel(job.id)
        second = ft_client.fine_tuning.jobs.create(model=MODEL, training_file=data.id)
        ft_client.fine_tuning.jobs.cancel(second.id)
    finally:
        manager.max_concurrent = 1
    first_page = ft_client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in first_page.data] == [second.id] and first_page.has_more
    after = ft_client.fine_tuning.jobs.list(limit=1, after=second.id)
    assert [j.id for j in after.data] == [job.id]


def test_the_job_tools_use_the_apps_jobs_service_and_leave_with_it(registry, tmp_path):
    from tools import FileStore, ToolRegistry

    shared = ToolRegistry(file_store=FileStore(tmp_path / "files"))  # a caller's registry, outliving the app
    running = RunningServer(create_app(Settings(data_dir=tmp_path, builtin_tools=False), registry, shared))
    service = running.app.state.jobs
    try:
        assert "finetune" in shared and running.client().models.list().data
    finally:
        running.stop()
    assert "finetune" not in shared and "job_status" not in shared
    assert not shared._toolkits  # the toolkit itself is forgotten too, not only its tools
    assert service.store._db.closed  # the one connection the tools used, closed with the service
    shared.close()
