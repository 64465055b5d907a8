"""Log-probabilities, echo, penalties and logit_bias in our OpenAI API, through the official SDK,
checked against log-probabilities computed by hand with plain transformers."""

from __future__ import annotations

import asyncio
from collections import Counter

import openai
import pytest
import torch

from pipelines.embedded import embedded_model_folder
from pipelines.engine import EngineError, GenerationRequest, SamplingParams, TextEngine
from pipelines.registry import ModelRegistry, parse_model_spec
from tests.conftest import DATA_DIR, MODEL, start_server

CONTEXT = "Question: What is the capital of France?\nAnswer:"
CONTINUATION = " Paris"
COUNTING = "One, two, three, four,"  # greedy goes on counting: no early end of sequence


@pytest.fixture(scope="module")
def reference():
    """The same weights in plain transformers: each token's logprob given the ones before it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model_folder(DATA_DIR), dtype=torch.float32).eval()

    def logprobs(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    return logprobs


@pytest.fixture(scope="module")
def tokenizer(engine):
    return engine.tokenizer


def test_echo_scores_the_prompt_as_lm_evaluation_harness_reads_it(client, tokenizer, reference):
    """local-completions sends token ids with echo, logprobs=1, max_tokens=1 and reads
    `token_logprobs[ctxlen:-1]` and `top_logprobs` (greedy when each is the best)."""
    context = tokenizer(CONTEXT).input_ids
    continuation = tokenizer(CONTINUATION).input_ids
    ids = context + continuation
    reply = client.completions.create(model=MODEL, prompt=[ids], echo=True, logprobs=1, max_tokens=1,
                                      temperature=0)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(ids) + 1  # the prompt, then the one generated token
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    expected = reference(ids)
    for position in range(1, len(ids)):
        assert lp.token_logprobs[position] == pytest.approx(float(expected[position - 1, ids[position]]), abs=1e-4)
        best = int(expected[position - 1].argmax())
        (top_token, top_value), = lp.top_logprobs[position].items()
        assert top_token == tokenizer.decode([best])
        assert top_value == pytest.approx(float(expected[position - 1, best]), abs=1e-4)
    ctxlen = len(context)
    summed = sum(lp.token_logprobs[ctxlen:-1])
    by_hand = sum(float(expected[p - 1, ids[p]]) for p in range(ctxlen, len(ids)))
    assert summed == pytest.approx(by_hand, abs=1e-4)
    greedy = all(tok == max(top.values()) for tok, top in zip(lp.token_logprobs[ctxlen:-1], lp.top_logprobs[ctxlen:-1]))
    assert greedy == all(int(expected[p - 1].argmax()) == ids[p] for p in range(ctxlen, len(ids)))
    # Where a prompt token is the model's best, `==` with the best top value holds exactly.
    best_positions = [p for p in range(1, len(ids)) if int(expected[p - 1].argmax()) == ids[p]]
    assert best_positions
    assert all(lp.token_logprobs[p] == max(lp.top_logprobs[p].values()) for p in best_positions)
    # Token ids come back as their text, and the text starts with the whole prompt.
    assert reply.choices[0].text.startswith(tokenizer.decode(ids))
    assert "".join(lp.tokens[: len(ids)]) == tokenizer.decode(ids)


def test_echo_with_max_tokens_zero_returns_only_the_prompt(client):
    reply = client.completions.create(model=MODEL, prompt=CONTEXT, echo=True, logprobs=2, max_tokens=0)
    choice = reply.choices[0]
    assert choice.text == CONTEXT and choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(choice.logprobs.tokens)
    lp = choice.logprobs
    # Offsets index the returned text: each token's text sits where its offset says.
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):
        assert choice.text[offset: offset + len(token)] == token
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    assert all(v <= 0 for v in lp.token_logprobs[1:])


def test_text_and_token_prompts_agree(client, tokenizer):
    """A list of texts and a list of token-id lists: the same prompts, the same numbers."""
    texts = [CONTEXT, "One, two, three,"]
    by_text = client.completions.create(model=MODEL, prompt=texts, echo=True, logprobs=0, max_tokens=0)
    by_ids = client.completions.create(model=MODEL, prompt=[tokenizer(t).input_ids for t in texts],
                                       echo=True, logprobs=0, max_tokens=0)
    assert [c.index for c in by_ids.choices] == [0, 1]
    for a, b, text in zip(by_text.choices, by_ids.choices, texts, strict=True):
        assert a.text == b.text == text
        assert a.logprobs.tokens == b.logprobs.tokens
        assert a.logprobs.token_logprobs[1:] == pytest.approx(b.logprobs.token_logprobs[1:], abs=1e-5)
        assert a.logprobs.text_offset == b.logprobs.text_offset


def test_generated_logprobs_streamed_and_not(client, reference, tokenizer):
    plain = client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=6, temperature=0, logprobs=3)
    lp = plain.choices[0].logprobs
    assert len(lp.tokens) == plain.usage.completion_tokens == 6
    assert "".join(lp.tokens) == plain.choices[0].text
    assert lp.text_offset[0] == 0
    # Greedy: each token is its step's best, and its logprob is the model's.
    ids = tokenizer(COUNTING).input_ids + tokenizer(plain.choices[0].text).input_ids
    expected = reference(ids)
    start = len(tokenizer(COUNTING).input_ids)
    for step, (value, top) in enumerate(zip(lp.token_logprobs, lp.top_logprobs, strict=True)):
        assert len(top) == 3 and value == max(top.values())
        assert value == pytest.approx(float(expected[start + step - 1].max()), abs=1e-3)
    chunks = list(client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=6, temperature=0, logprobs=3,
                                            echo=True, stream=True))
    streamed_tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    streamed_values = [v for c in chunks if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    prompt_tokens = len(tokenizer(COUNTING).input_ids)
    assert streamed_tokens[prompt_tokens:] == lp.tokens
    assert streamed_values[prompt_tokens:] == pytest.approx(lp.token_logprobs, abs=1e-4)
    assert streamed_values[0] is None
    assert "".join(c.choices[0].text for c in chunks) == COUNTING + plain.choices[0].text


def test_chat_logprobs(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                           logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    text = "".join(item.token for item in content)
    finished = reply.choices[0].finish_reason == "stop"
    assert text == reply.choices[0].message.content + ("<|im_end|>" if finished else "")
    for item in content:
        assert bytes(item.bytes) == item.token.encode() and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].token == item.token and item.top_logprobs[0].logprob == item.logprob
        assert item.top_logprobs[1].logprob <= item.logprob
    assert reply.choices[0].logprobs.refusal is None
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True))
    streamed = [item for c in chunks if c.choices and c.choices[0].logprobs for item in c.choices[0].logprobs.content]
    assert [i.token for i in streamed] == [i.token for i in content]
    assert [i.logprob for i in streamed] == pytest.approx([i.logprob for i in content], abs=1e-4)
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert plain.choices[0].logprobs is None


def _tokens(client, **extra) -> list[str]:
    reply = client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=3, temperature=0, logprobs=0, **extra)
    return reply.choices[0].logprobs.tokens


def test_logit_bias_forces_and_bans_tokens(client, tokenizer):
    greedy = _tokens(client)
    (greedy_id,) = tokenizer(greedy[0]).input_ids  # " five": one token
    (forced,) = tokenizer(" banana").input_ids
    assert greedy[0] != " banana"
    assert _tokens(client, logit_bias={str(forced): 100}) == [" banana"] * 3
    banned = _tokens(client, logit_bias={str(greedy_id): -100})
    assert banned[0] != greedy[0]
    # A small bias leaves greedy decoding as it was.
    assert _tokens(client, logit_bias={str(forced): 0.5}) == greedy


def test_frequency_penalty_breaks_a_repeat_loop(client):
    prompt = "apple apple apple apple apple apple apple apple"
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, logprobs=0)
    repeats = Counter(plain.choices[0].logprobs.tokens).most_common(1)[0][1]
    assert repeats >= 8  # greedy decoding falls into a loop ("-lady-in-the-midnight-lady-in-the-")
    penalised = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, logprobs=0,
                                          frequency_penalty=2.0)
    assert Counter(penalised.choices[0].logprobs.tokens).most_common(1)[0][1] <= repeats // 3
    present = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, logprobs=0,
                                        presence_penalty=2.0)
    assert present.choices[0].text != plain.choices[0].text


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"\u00b2": 1}}, "logit_bias"),  # "²": a digit int() cannot read
    ({"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"prompt": "x", "frequency_penalty": 2.5}, "frequency_penalty"),
    ({"prompt": [[1, 2], []], "echo": True}, "prompt"),
    ({"prompt": [99999999], "echo": True}, "prompt"),
])
def test_bad_completion_fields_are_400s_naming_them(http, body, param):
    reply = http.post("/v1/completions", json={"model": MODEL, **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_top_logprobs_needs_logprobs(http):
    reply = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "top_logprobs"


def test_null_means_not_set(http):
    """OpenAI's schema allows null for these; clients that send every field send it."""
    reply = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "logprobs": None, "presence_penalty": None, "frequency_penalty": None})
    assert reply.status_code == 200 and reply.json()["choices"][0]["logprobs"] is None


def test_an_upstream_passes_logprobs_and_penalties_on(server, tokenizer):
    proxy_registry = ModelRegistry([parse_model_spec(f"far={server.url}/v1#{MODEL}")], DATA_DIR)
    asyncio.run(proxy_registry.load_all())
    proxy = start_server(proxy_registry)
    try:
        direct, relayed = server.client(), proxy.client()
        ids = tokenizer(CONTEXT + CONTINUATION).input_ids
        args = {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
        a = direct.completions.create(model=MODEL, **args).choices[0]
        b = relayed.completions.create(model="far", **args).choices[0]
        assert b.text == a.text and b.logprobs.tokens == a.logprobs.tokens
        assert b.logprobs.token_logprobs == a.logprobs.token_logprobs
        assert b.logprobs.text_offset == a.logprobs.text_offset
        messages = [{"role": "user", "content": "Name a colour."}]
        chat = {"messages": messages, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 1,
                "frequency_penalty": 1.5}
        a = direct.chat.completions.create(model=MODEL, **chat).choices[0]
        b = relayed.chat.completions.create(model="far", **chat).choices[0]
        assert [i.token for i in b.logprobs.content] == [i.token for i in a.logprobs.content]
        assert b.message.content == a.message.content
        bias = {str(tokenizer(" banana").input_ids[0]): 100}
        forced = relayed.completions.create(model="far", prompt=CONTEXT, max_tokens=2, temperature=0, logit_bias=bias)
        assert forced.choices[0].text == " banana banana"
    finally:
        proxy.stop()
        asyncio.run(proxy_registry.close())


class _PlainEngine(TextEngine):
    """An engine that implements none of the extras."""

    def __init__(self):
        from pipelines.engine import EngineInfo

        self.info = EngineInfo(id="plain", context_length=100)

    async def validate(self, request):
        return None

    async def stream(self, request):  # pragma: no cover - never reached
        yield


@pytest.mark.parametrize("field, value", [("logprobs", 0), ("echo", True), ("logit_bias", ((1, 2.0),)),
                                          ("presence_penalty", 1.0), ("frequency_penalty", -1.0)])
def test_an_engine_refuses_what_it_does_not_implement(field, value):
    params = SamplingParams(max_tokens=4, **{field: value})
    with pytest.raises(EngineError) as refused:
        _PlainEngine().check_extras(params)
    assert refused.value.status == 400 and refused.value.param == field
    _PlainEngine().check_extras(SamplingParams(max_tokens=4))  # plain sampling is fine
    assert GenerationRequest(params=params, prompt="x").params.extras() == [field]


def test_sdk_raises_bad_request_for_a_bad_logit_bias(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       logit_bias={"-3": 5}, max_tokens=2)
    assert refused.value.body["param"] == "logit_bias"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the device mismatch needs logits on a GPU")
def test_penalties_and_logit_bias_apply_to_logits_on_a_gpu():
    from pipelines.decoding import adjust_logits

    logits = torch.zeros(8, device="cuda")
    params = SamplingParams(max_tokens=1, presence_penalty=1.0, frequency_penalty=0.5)
    adjust_logits(logits, params, [3, 3], (torch.tensor([1]), torch.tensor([5.0])))
    assert logits.tolist() == [0.0, 5.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0]
