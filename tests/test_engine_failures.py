"""A failing request must fail alone: the others in the engine's batch go on as if it never was.

The failures are real ones: a request whose sampling cannot work, and forward passes that raise
(as an out-of-memory would), made with a torch hook on this test's own copy of the model.
"""

import asyncio
import threading
from contextlib import contextmanager

import pytest
import torch

from pipelines.embedded import embedded_model_folder
from pipelines.engine import ConstraintError, Constraint, EngineError, GenerationRequest, SamplingParams
from pipelines.transformers_engine import TransformersEngine
from tests.conftest import DATA_DIR

QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is 2 + 2?"]
POISON = "Tell me about the xylophone."


@pytest.fixture(scope="module")
def engine():
    # Its own model, so the hooks below never touch the shared engine; float32, so that batch
    # shapes cannot flip a greedy choice.
    engine = TransformersEngine("failures", embedded_model_folder(DATA_DIR), dtype="float32")
    yield engine
    asyncio.run(engine.close())


def ask(text: str, max_tokens: int = 16, **sampling) -> GenerationRequest:
    return GenerationRequest(
        params=SamplingParams(max_tokens=max_tokens, **{"temperature": 0, **sampling}),
        messages=({"role": "user", "content": text},),
    )


async def collect(engine, request, started: asyncio.Event | None = None) -> str:
    text = ""
    async for delta in engine.stream(request):
        text += delta.text
        if started is not None:
            started.set()
    return text


async def alone(engine) -> list[str]:
    return [await collect(engine, ask(q)) for q in QUESTIONS]


async def running_then_joining(engine, joining: list[GenerationRequest]) -> list:
    """QUESTIONS[0] decoding while the others and `joining` join its batch at once."""
    started = asyncio.Event()
    first = asyncio.create_task(collect(engine, ask(QUESTIONS[0]), started))
    await started.wait()
    rest = [collect(engine, r) for r in [ask(q) for q in QUESTIONS[1:]] + joining]
    return await asyncio.gather(first, *rest, return_exceptions=True)


@contextmanager
def forward_fails(engine, when):
    def hook(_module, _args, kwargs):
        if when(kwargs["input_ids"]):
            raise RuntimeError("injected forward failure")

    handle = engine.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def test_a_request_whose_sampling_fails_fails_alone(engine):
    async def scenario():
        # top_p below 0 leaves no token to sample from: torch.multinomial raises for that row.
        return await alone(engine), await running_then_joining(engine, [ask(POISON, top_p=-1.0, temperature=1.0)])

    expected, (*answers, failed) = asyncio.run(scenario())
    assert isinstance(failed, EngineError) and failed.status == 500
    assert answers == expected


def test_a_failed_prefill_fails_only_the_request_that_fails_on_its_own(engine):
    marker = engine.tokenizer(" xylophone", add_special_tokens=False).input_ids[-1]

    async def scenario():
        expected = await alone(engine)
        with forward_fails(engine, lambda ids: ids.shape[1] > 1 and bool((ids == marker).any())):
            return expected, await running_then_joining(engine, [ask(POISON)])

    expected, (*answers, failed) = asyncio.run(scenario())
    assert isinstance(failed, EngineError) and failed.status == 500
    assert answers == expected


def test_a_failed_decode_step_is_retried_for_every_sequence(engine):
    failures = []

    def once_while_batched(ids: torch.Tensor) -> bool:
        if ids.shape == (len(QUESTIONS), 1) and not failures:
            failures.append(ids)
            return True
        return False

    async def scenario():
        expected = await alone(engine)
        with forward_fails(engine, once_while_batched):
            return expected, await running_then_joining(engine, [])

    expected, answers = asyncio.run(scenario())
    assert failures and answers == expected


def test_so_small_a_temperature_that_it_overflows_means_greedy(engine):
    async def scenario():
        return await collect(engine, ask(QUESTIONS[0], temperature=1e-40)), await collect(engine, ask(QUESTIONS[0]))

    tiny, greedy = asyncio.run(scenario())
    assert tiny == greedy


@pytest.mark.parametrize("schema", [{"type": "string", "pattern": "(?<=a)b"}, {"$ref": "#/$defs/missing"}])
def test_validate_refuses_a_constraint_the_grammar_cannot_compile(engine, schema):
    request = GenerationRequest(params=SamplingParams(max_tokens=4), messages=({"role": "user", "content": "Hi"},),
                                constraint=Constraint("json_schema", schema))
    with pytest.raises(ConstraintError) as caught:
        asyncio.run(engine.validate(request))
    assert caught.value.status == 400 and "cannot be enforced" in caught.value.message


def test_closing_the_engine_fails_what_runs_and_what_waits_with_a_503(tiny):
    """An engine unloaded under load: a stream still running, one waiting for room in the batch
    and one started afterwards all end at once with a 503 to retry, none waits forever."""
    engine = TransformersEngine("closing", tiny, max_batch_size=1)
    at_gate, gate = threading.Event(), threading.Event()

    def hold_decoding(_module, _args, kwargs):
        if kwargs["input_ids"].shape[1] == 1:  # a decode step: wait until the engine is closing
            at_gate.set()
            gate.wait(30)

    engine.model.register_forward_pre_hook(hold_decoding, with_kwargs=True)

    async def scenario():
        running = asyncio.create_task(collect(engine, ask(QUESTIONS[0], max_tokens=100)))
        await asyncio.to_thread(at_gate.wait, 30)
        waiting = asyncio.create_task(collect(engine, ask(QUESTIONS[1])))  # the batch is full: it waits
        await asyncio.sleep(0.1)
        closing = asyncio.create_task(engine.close())
        await asyncio.sleep(0.1)
        gate.set()
        await closing
        ended = await asyncio.wait_for(asyncio.gather(running, waiting, return_exceptions=True), 10)
        late = await asyncio.wait_for(asyncio.gather(collect(engine, ask(QUESTIONS[2])), return_exceptions=True), 5)
        return ended + late

    try:
        results = asyncio.run(scenario())
    finally:
        gate.set()
    assert [type(r) for r in results] == [EngineError] * 3, results
    assert all(r.status == 503 and "unloaded; retry" in r.message for r in results)
