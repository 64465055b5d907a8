"""Log-likelihood scoring: every number against a hand computation with plain transformers, and
the same numbers whatever the batch size, the padding or the time segments."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from pipelines.embedded import embedded_model_folder
from pipelines.engine import EngineError, EngineInfo, GenerationRequest, SamplingParams, TextEngine
from pipelines.scoring import Scorer, TokenLogprob
from pipelines.transformers_engine import TransformersEngine
from tests.conftest import DATA_DIR


@pytest.fixture(scope="module")
def tiny_engine(tiny):
    engine = TransformersEngine("tiny", tiny, dtype="float32")
    yield engine
    asyncio.run(engine.close())


def hand_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log_softmax of one plain forward of the whole sequence: row i predicts ids[i + 1]."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def hand_loglikelihood(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    if not context:
        context, continuation = continuation[:1], continuation[1:]
    if not continuation:
        return 0.0, True
    logprobs = hand_logprobs(model, context + continuation)
    total, greedy = 0.0, True
    for j, token in enumerate(continuation):
        row = logprobs[len(context) - 1 + j]
        total += float(row[token])
        greedy = greedy and int(row.argmax()) == token
    return total, greedy


def greedy_continuation(model, context: list[int], length: int) -> list[int]:
    ids = list(context)
    for _ in range(length):
        ids.append(int(hand_logprobs(model, ids)[-1].argmax()))
    return ids[len(context) :]


def mixed_pairs(model, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Questions of 1-5 choices sharing their context, lone pairs, an empty context, one-token
    continuations, and greedy continuations (with a wrong last token) so that both flags occur."""
    rng = random.Random(seed)
    vocab = model.config.vocab_size

    def tokens(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(n)]

    pairs: list[tuple[list[int], list[int]]] = []
    for _ in range(6):
        context = tokens(rng.randrange(1, 40))
        for _ in range(rng.randrange(1, 6)):
            pairs.append((context, tokens(rng.randrange(1, 9))))
        greedy = greedy_continuation(model, context, rng.randrange(1, 5))
        pairs.append((context, greedy))
        pairs.append((context, greedy[:-1] + [(greedy[-1] + 1) % vocab]))
    pairs += [([], tokens(5)), ([], tokens(1)), (tokens(7), tokens(1)), (tokens(3), [])]
    rng.shuffle(pairs)
    return pairs


def assert_matches(results, expected):
    assert len(results) == len(expected)
    for (logprob, greedy), (want_logprob, want_greedy) in zip(results, expected, strict=True):
        assert logprob == pytest.approx(want_logprob, abs=1e-4)
        assert greedy == want_greedy


def test_loglikelihoods_equal_a_hand_computation_at_every_batch_size(tiny_engine):
    model = tiny_engine.model
    pairs = mixed_pairs(model)
    expected = [hand_loglikelihood(model, c, x) for c, x in pairs]
    assert any(g for _, g in expected) and not all(g for _, g in expected)
    by_size = {size: asyncio.run(tiny_engine.loglikelihoods(pairs, batch_size=size)) for size in (1, 3, 8, 64)}
    for results in by_size.values():
        assert_matches(results, expected)
    # Batching changes padding only: flags are identical and numbers agree far below 1e-4.
    for size in (3, 8, 64):
        assert [g for _, g in by_size[size]] == [g for _, g in by_size[1]]
        assert max(abs(a - b) for (a, _), (b, _) in zip(by_size[size], by_size[1])) < 1e-4


def test_time_segments_and_pass_sizes_do_not_change_the_numbers(tiny_engine):
    model, tokenizer = tiny_engine.model, tiny_engine.tokenizer
    pairs = mixed_pairs(model, seed=1)
    whole = Scorer(model, tokenizer).loglikelihoods(pairs, batch_size=4)
    # 4 rows x 3 columns per forward: contexts and continuations both go in several
    # segments, and the continuations of one batch of contexts in several passes.
    segmented = Scorer(model, tokenizer, token_budget=12).loglikelihoods(pairs, batch_size=4)
    assert_matches(segmented, whole)


def test_an_over_long_context_keeps_its_rightmost_tokens(tiny_engine):
    model = tiny_engine.model
    limit = tiny_engine.info.context_length
    rng = random.Random(2)
    context = [rng.randrange(3, 1000) for _ in range(limit + 100)]
    continuation = [rng.randrange(3, 1000) for _ in range(5)]
    [(logprob, greedy)] = asyncio.run(tiny_engine.loglikelihoods([(context, continuation)]))
    want = hand_loglikelihood(model, context[-(limit - 4) :], continuation)
    assert (logprob, greedy) == (pytest.approx(want[0], abs=1e-4), want[1])
    # Shorter contexts in the same batch are not disturbed by the long one.
    short = (context[:10], continuation)
    results = asyncio.run(tiny_engine.loglikelihoods([short, (context, continuation)], batch_size=2))
    assert_matches(results, [hand_loglikelihood(model, *short), want])


def test_what_cannot_be_scored_is_a_clear_400(tiny_engine):
    limit = tiny_engine.info.context_length
    vocab = tiny_engine.model.config.vocab_size
    cases = [
        ([([1], [5] * (limit + 1))], "continuation"),
        ([([1, vocab], [5])], "context"),
        ([([1], [-1])], "continuation"),
    ]
    for pairs, param in cases:
        with pytest.raises(EngineError) as caught:
            asyncio.run(tiny_engine.loglikelihoods(pairs))
        assert caught.value.status == 400 and caught.value.param == param
    with pytest.raises(EngineError) as caught:
        asyncio.run(tiny_engine.prompt_logprobs([1] * (limit + 1)))
    assert caught.value.status == 400 and caught.value.code == "context_length_exceeded"


def test_prompt_logprobs_match_a_hand_computation(tiny_engine):
    ids = tiny_engine.tokenizer("The quick brown fox jumps over the lazy dog.").input_ids
    entries = asyncio.run(tiny_engine.prompt_logprobs(ids, top_k=5))
    assert [e.token for e in entries] == ids
    assert entries[0] == TokenLogprob(token=ids[0], logprob=None)
    logprobs = hand_logprobs(tiny_engine.model, ids)
    for i, entry in enumerate(entries[1:], start=1):
        assert entry.logprob == pytest.approx(float(logprobs[i - 1, ids[i]]), abs=1e-4)
        values = [value for _, value in entry.top]
        assert len(entry.top) == 5 and values == sorted(values, reverse=True)
        assert entry.top[0][0] == int(logprobs[i - 1].argmax())
        assert entry.top[0][1] == pytest.approx(float(logprobs[i - 1].max()), abs=1e-4)
    plain = asyncio.run(tiny_engine.prompt_logprobs(ids))
    assert all(e.top == () for e in plain)
    assert [e.logprob for e in plain[1:]] == pytest.approx([e.logprob for e in entries[1:]], abs=1e-5)


def test_scoring_while_the_engine_generates(tiny_engine):
    pairs = mixed_pairs(tiny_engine.model, seed=3)
    alone = asyncio.run(tiny_engine.loglikelihoods(pairs))

    async def together():
        async def chat() -> str:
            request = GenerationRequest(params=SamplingParams(max_tokens=40, temperature=0), prompt="Hello")
            return "".join([delta.text async for delta in tiny_engine.stream(request)])

        return await asyncio.gather(chat(), tiny_engine.loglikelihoods(pairs), chat())

    first, scored, second = asyncio.run(together())
    assert_matches(scored, alone)
    assert first == second


def test_embedded_model_scores_shared_choices_as_by_hand(engine):
    tokenizer = engine.tokenizer
    question = "Question: Which of these is a source of light?\nAnswer:"
    choices = [" the Sun", " a rock", " a shadow of a tree", " water"]
    context = tokenizer(question).input_ids
    pairs = [(context, tokenizer(choice).input_ids) for choice in choices]
    pairs.append((tokenizer("Question: What colour is the sky?\nAnswer:").input_ids, tokenizer(" blue").input_ids))
    # By hand with plain transformers, whichever engine serves the model (the openvino engine scores
    # with a transformers engine behind it).
    model = AutoModelForCausalLM.from_pretrained(embedded_model_folder(DATA_DIR), dtype=torch.float32).eval()
    expected = [hand_loglikelihood(model, c, x) for c, x in pairs]
    one = asyncio.run(engine.loglikelihoods(pairs, batch_size=1))
    eight = asyncio.run(engine.loglikelihoods(pairs, batch_size=8))
    assert_matches(one, expected)
    assert_matches(eight, expected)
    assert [g for _, g in one] == [g for _, g in eight]


def test_a_closed_engine_refuses_with_503(tiny):
    engine = TransformersEngine("closing", tiny, dtype="float32")
    asyncio.run(engine.close())
    for call in (engine.loglikelihoods([([1], [2])]), engine.prompt_logprobs([1, 2])):
        with pytest.raises(EngineError) as caught:
            asyncio.run(call)
        assert caught.value.status == 503


def test_an_engine_without_weights_says_it_offers_no_prompt_logprobs():
    class Remote(TextEngine):
        info = EngineInfo(id="remote", context_length=100)

        async def validate(self, request):
            return None

        async def stream(self, request):
            yield  # pragma: no cover

    for call in (Remote().loglikelihoods([([1], [2])]), Remote().prompt_logprobs([1, 2])):
        with pytest.raises(EngineError) as caught:
            asyncio.run(call)
        assert caught.value.status == 400 and "no prompt log-probabilities" in caught.value.message
