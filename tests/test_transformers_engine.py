"""The transformers engine on its own: continuous batching must not change what a row says."""

import asyncio

import pytest

from pipelines.decoding import TextAccumulator
from pipelines.embedded import embedded_model_folder
from pipelines.engine import GenerationRequest, SamplingParams
from pipelines.transformers_engine import TransformersEngine
from tests.conftest import DATA_DIR


@pytest.fixture(scope="module")
def fp32_engine():
    # float32, so that batch shapes cannot flip a greedy choice through rounding.
    engine = TransformersEngine("fp32", embedded_model_folder(DATA_DIR), dtype="float32")
    yield engine
    asyncio.run(engine.close())


def ask(text: str, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(
        params=SamplingParams(max_tokens=max_tokens, temperature=0),
        messages=({"role": "user", "content": text},),
    )


async def collect(engine, request, started: asyncio.Event | None = None, after: int = 0):
    text, count = "", 0
    async for delta in engine.stream(request):
        text += delta.text
        count += 1
        if started is not None and count == after:
            started.set()
    return text


def test_rows_joining_and_leaving_mid_batch_give_the_same_greedy_text(fp32_engine):
    questions = ["What is the capital of France?", "Name a colour.", "What is 2 + 2?", "Say hello."]

    async def scenario():
        alone = [await collect(fp32_engine, ask(q)) for q in questions]
        first_running = asyncio.Event()
        long_one = asyncio.create_task(collect(fp32_engine, ask(questions[0], 24), first_running, after=5))
        await first_running.wait()  # the others join a batch that is already decoding
        others = [asyncio.create_task(collect(fp32_engine, ask(q, n))) for q, n in zip(questions[1:], (6, 24, 12))]
        together = [await long_one] + [await t for t in others]
        short_alone = [await collect(fp32_engine, ask(q, n)) for q, n in zip(questions[1:], (6, 24, 12))]
        return alone, together, short_alone

    alone, together, short_alone = asyncio.run(scenario())
    assert together[0] == alone[0]
    assert together[1:] == short_alone
    assert short_alone[1] == alone[2]


def test_cancelled_rows_leave_the_batch(fp32_engine):
    async def scenario():
        stream = fp32_engine.stream(ask("Tell me a long story.", 500))
        for _ in range(3):
            await stream.__anext__()
        assert fp32_engine.active_sequences == 1
        await stream.aclose()
        for _ in range(40):
            if fp32_engine.active_sequences == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    assert asyncio.run(scenario())


def test_stop_strings_hold_back_what_may_start_one(engine):
    tokenizer = engine.tokenizer
    accumulator = TextAccumulator(tokenizer, ("END!",))
    sent = ""
    for token in tokenizer("Hello there EN").input_ids:
        text, stopped = accumulator.push(token)
        sent += text
        assert not stopped
    assert sent == "Hello there "  # "EN" may become "END!", so it waits
    for token in tokenizer("D! more").input_ids:
        text, stopped = accumulator.push(token)
        sent += text
        if stopped:
            break
    assert stopped and sent == "Hello there "
