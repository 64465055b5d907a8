"""The OpenVINO engine against the transformers engine on the embedded model: batching, prefix reuse,
the KV-cache budget and the pipeline's own grammar must not change what a greedy row says."""

import asyncio
import dataclasses
import json
import re

import httpx
import pytest

from pipelines.embedded import embedded_model_folder
from pipelines.engine import Constraint, ConstraintError, EngineError, GenerationRequest, SamplingParams
from pipelines.openvino_engine import OpenVINOEngine
from pipelines.decoding import grammar_of
from pipelines.openvino_grammar import (Unsupported, nested_repeats, older_ebnf, openvino_grammar, relaxed_bounds,
                                        shared_rules)
from pipelines.registry import ModelRegistry, ModelSpec
from pipelines.transformers_engine import TransformersEngine
from tests.conftest import DATA_DIR, MODEL, RunningServer

QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is 2 + 2?", "Say hello."]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


@pytest.fixture(scope="module")
def folder():
    return embedded_model_folder(DATA_DIR)


@pytest.fixture(scope="module")
def openvino(folder):
    engine = OpenVINOEngine("ov", folder, cache_dir=DATA_DIR / "openvino", precision="f32")  # f32: exact greedy
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def reference(folder):
    engine = TransformersEngine("fp32", folder, dtype="float32")
    yield engine
    asyncio.run(engine.close())


def ask(text: str, max_tokens: int = 24, constraint: Constraint | None = None, **sampling) -> GenerationRequest:
    return GenerationRequest(params=SamplingParams(max_tokens=max_tokens, **{"temperature": 0, **sampling}),
                             messages=({"role": "user", "content": text},), constraint=constraint)


async def collect(engine, request, started: asyncio.Event | None = None, after: int = 0) -> tuple[str, str, int]:
    await engine.validate(request)
    text, count, last = "", 0, None
    async for delta in engine.stream(request):
        text, count, last = text + delta.text, count + 1, delta
        if started is not None and count == after:
            started.set()
    return text, last.finish_reason, last.completion_tokens


async def reference_tokens(engine, request: GenerationRequest) -> list[tuple[bytes, float]]:
    """The reference's greedy tokens, each with the margin by which it beat the runner-up (in logprob)."""
    request = dataclasses.replace(request, params=dataclasses.replace(request.params, logprobs=2))
    return [(entry.bytes, entry.top[0].logprob - entry.top[1].logprob)
            async for delta in engine.stream(request) for entry in delta.logprobs]


def agrees_up_to_a_near_tie(ours: str, reference: list[tuple[bytes, float]]) -> bool:
    """The same text, or the same text up to a token the reference chose by less than 0.01 (two float32
    implementations may round such a tie either way: "Say hello." → ' there' -1.1295 vs '!' -1.1298)."""
    said, prefix = ours.encode(), b""
    for token, margin in reference:
        if said == prefix:  # ours ended here: the reference must end here too
            return token == b"<|im_end|>"
        if not said.startswith(prefix + token):
            return margin < 0.01
        prefix += token
    return said == prefix


def test_rows_joining_and_leaving_mid_batch_say_what_they_say_alone(openvino, reference):
    lengths = (24, 6, 24, 12)

    async def scenario():
        alone = [await collect(openvino, ask(q, n)) for q, n in zip(QUESTIONS, lengths)]
        running = asyncio.Event()
        first = asyncio.create_task(collect(openvino, ask(QUESTIONS[0], lengths[0]), running, after=4))
        await running.wait()  # the others join a batch that is already decoding
        others = [asyncio.create_task(collect(openvino, ask(q, n))) for q, n in zip(QUESTIONS[1:], lengths[1:])]
        together = [await first] + [await task for task in others]
        return alone, together, [await reference_tokens(reference, ask(q, n)) for q, n in zip(QUESTIONS, lengths)]

    alone, together, references = asyncio.run(scenario())
    assert together == alone
    for (text, _, _), tokens in zip(alone, references, strict=True):
        assert agrees_up_to_a_near_tie(text, tokens), (text, tokens)


def test_constrained_and_free_rows_in_one_batch_match_transformers(openvino, reference):
    requests = [ask("Give a JSON with the name and age of a person.", 60, Constraint("json_schema", PERSON)),
                ask(QUESTIONS[1], 16), ask("Reply with a JSON object about a cat.", 40, Constraint("json_object"))]

    async def scenario():
        expected = [await collect(reference, r) for r in requests]
        return expected, await asyncio.gather(*(collect(openvino, r) for r in requests))

    expected, together = asyncio.run(scenario())
    assert together == expected
    assert together[0][0].startswith('{"name": ')


def test_stop_strings_and_seeds(openvino):
    async def scenario():
        stopped = await collect(openvino, GenerationRequest(SamplingParams(max_tokens=40, temperature=0, stop=("\n",)),
                                                            prompt="The capital of France is"))
        seeded = [await collect(openvino, ask("Once upon a time", 16, temperature=0.9, seed=7)) for _ in range(2)]
        return stopped, seeded

    stopped, seeded = asyncio.run(scenario())
    assert stopped[1] == "stop" and "\n" not in stopped[0]
    assert seeded[0] == seeded[1]


def test_a_shared_prefix_reused_from_the_cache_gives_the_same_text(openvino, reference):
    history = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(60))
    turns = [ask(f"{history}\nHow many lines are there?", 12), ask(f"{history}\nWhat animal jumps?", 12)]

    async def scenario():
        expected = [await collect(reference, t) for t in turns]
        return expected, [await collect(openvino, t) for t in turns]  # the second prefills only its tail

    cached_before, total_before = openvino.prefix_cache
    expected, got = asyncio.run(scenario())
    assert got == expected
    cached, total = openvino.prefix_cache
    # The second turn shares the ≈ 900-token history: nearly all of its prompt was found in the cache.
    assert cached - cached_before >= 0.4 * (total - total_before)


def entries(first: int, count: int = 50) -> str:
    return " ".join(f"Entry {i}: parcel {700 + i} was signed for at the front desk." for i in range(first, first + count))


async def join_decoding_streams(engine, *requests, cancel_after: float | None = None, decoding: int = 48):
    """`requests` (≈ 800 prompt tokens each) join three streams that are decoding (up to `decoding` tokens);
    (what each said, the chunks their prompts were prefilled in, the chunks prefilled after they were
    cancelled, the pipeline's steps until each said its first token)."""
    running = asyncio.Event()
    stories = [ask(f"Tell me a long story about {topic}.", decoding) for topic in ("a ship", "a fox", "a city")]
    streams = [asyncio.create_task(collect(engine, story, running, after=2)) for story in stories]
    await running.wait()
    chunks_before, steps_before = engine.prefill_chunks, engine.pipeline_steps
    firsts = [asyncio.Event() for _ in requests]
    joiners = [asyncio.create_task(collect(engine, r, first, after=1)) for r, first in zip(requests, firsts)]
    if cancel_after is None:
        steps_to_first = []
        for first in firsts:
            await first.wait()
            steps_to_first.append(engine.pipeline_steps - steps_before)
        said = await asyncio.gather(*joiners)
        chunks, after_cancel = engine.prefill_chunks - chunks_before, 0
    else:
        said, steps_to_first = None, None
        await asyncio.sleep(cancel_after)
        for joiner in joiners:
            joiner.cancel()
        await asyncio.sleep(0.5)  # the cancel reaches the worker
        chunks = engine.prefill_chunks - chunks_before
        await asyncio.sleep(1.0)
        after_cancel = engine.prefill_chunks - chunks_before - chunks
    await asyncio.gather(*streams)
    return said, chunks, after_cancel, steps_to_first


def test_a_long_prompt_joining_decoding_streams_is_prefilled_in_chunks_and_says_the_same(openvino):
    joiner = ask(f"{entries(0)}\nWhich parcel was entry 7?", 12)
    (joined,), chunks, _, (steps,) = asyncio.run(join_decoding_streams(openvino, joiner))
    # ≈ 800 prompt tokens, 32 a step while the others decode (the last few chunks with the request).
    assert chunks >= 8, chunks
    # One chunk a step, back to back: a plain step between chunks would double the joiner's wait.
    assert steps <= chunks + 4, (steps, chunks)
    assert asyncio.run(collect(openvino, joiner)) == joined  # alone, whole (and from the prefix cache)


def test_two_long_prompts_joining_at_once_are_prefilled_one_after_the_other_and_say_the_same(openvino):
    joiners = [ask(f"{entries(300)}\nWhich parcel was entry 301?", 8),
               ask(f"{entries(400)}\nWhich parcel was entry 402?", 8)]
    joined, chunks, _, steps = asyncio.run(join_decoding_streams(openvino, *joiners, decoding=120))
    assert chunks >= 30, chunks
    # First come, first prefilled, one chunk a step: the first is answering while the second's chunks go in.
    assert steps[1] - steps[0] >= 0.4 * chunks, (steps, chunks)
    assert [asyncio.run(collect(openvino, j)) for j in joiners] == joined


def test_a_prompt_whose_prefix_is_cached_is_not_chunked_through_what_the_cache_holds(openvino):
    # An agent's next step: the same long system-and-tools prefix, a new ending. Chunks from the start of
    # the prompt would restore the cached blocks a step at a time, for nothing.
    history = entries(100)
    first = asyncio.run(collect(openvino, ask(f"{history}\nWhich parcel was entry 107?", 8)))
    assert first[2] > 0
    later = ask(f"{history}\nWhich parcel was entry 120?", 8)
    (joined,), chunks, _, _ = asyncio.run(join_decoding_streams(openvino, later))
    assert chunks == 0
    assert joined == asyncio.run(collect(openvino, later))


def test_a_stream_closed_while_its_prompt_is_prefilled_in_chunks_stops_them(openvino):
    joiner = ask(f"{entries(200)}\nWhich parcel was entry 207?", 12)
    _, chunks, after_cancel, _ = asyncio.run(join_decoding_streams(openvino, joiner, cancel_after=0.3))
    assert chunks >= 1 and after_cancel == 0, (chunks, after_cancel)
    assert openvino.active_sequences == 0


def test_more_than_the_kv_budget_waits_its_turn_and_what_never_fits_is_refused(folder):
    small = OpenVINOEngine("ov-small", folder, cache_dir=DATA_DIR / "openvino", kv_cache_mb=6, precision="f32")
    try:
        assert small.kv_cache_tokens == 256
        requests = [ask(q, 40) for q in QUESTIONS] * 2  # ≈ 80 tokens each, 8 at once: 2.5× the cache

        async def scenario():
            alone = [await collect(small, r) for r in requests[:4]]
            return alone * 2, await asyncio.gather(*(collect(small, r) for r in requests))

        expected, got = asyncio.run(scenario())
        assert got == expected
        with pytest.raises(EngineError) as refused:
            asyncio.run(small.validate(ask("Tell me a story.", 400)))
        assert refused.value.status == 400 and "KV cache" in refused.value.message
    finally:
        asyncio.run(small.close())


def test_a_closed_stream_leaves_the_pipeline_and_frees_its_blocks(folder):
    small = OpenVINOEngine("ov-cancel", folder, cache_dir=DATA_DIR / "openvino", kv_cache_mb=6)

    async def scenario():
        stream = small.stream(ask("Tell me a long story.", 200))
        for _ in range(3):
            await stream.__anext__()
        assert small.active_sequences == 1
        await stream.aclose()
        for _ in range(20):
            if small.active_sequences == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cancelled sequence is still in the pipeline")
        # Its blocks are free again: a request that needs nearly the whole budget runs (it would wait forever).
        return await asyncio.wait_for(collect(small, ask("Count from one to fifty.", 200)), 120)

    try:
        text, reason, tokens = asyncio.run(scenario())
        assert tokens > 0 and reason in ("stop", "length")
    finally:
        asyncio.run(small.close())


def test_a_crashed_worker_process_is_replaced_and_the_stream_goes_on(folder):
    engine = OpenVINOEngine("ov-crash", folder, cache_dir=DATA_DIR / "openvino", kv_cache_mb=64, precision="f32")

    async def scenario():
        alone = await collect(engine, ask(QUESTIONS[0], 24))
        decoding = asyncio.Event()
        running = asyncio.create_task(collect(engine, ask(QUESTIONS[0], 24), decoding, after=2))
        await decoding.wait()
        engine._process.kill()  # as a crash inside OpenVINO would end it
        return alone, await asyncio.wait_for(running, 120), await collect(engine, ask(QUESTIONS[1], 8))

    try:
        alone, resumed, after = asyncio.run(scenario())
        assert resumed == alone  # it went on from the tokens it had, in the new worker
        assert after[2] > 0
    finally:
        asyncio.run(engine.close())


def test_the_worker_process_runs_this_engine_s_code_whatever_the_current_folder(folder, tmp_path, monkeypatch):
    decoy = tmp_path / "pipelines"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('a package of the user project, not agentd')\n")
    monkeypatch.chdir(tmp_path)
    engine = OpenVINOEngine("ov-cwd", folder.resolve(), cache_dir=DATA_DIR.resolve() / "openvino", kv_cache_mb=64)
    try:
        assert asyncio.run(collect(engine, ask(QUESTIONS[3], 4)))[2] > 0
    finally:
        asyncio.run(engine.close())


def test_logprobs_are_served_by_the_transformers_engine_behind_it(openvino):
    async def scenario():
        request = ask(QUESTIONS[2], 4, logprobs=2)
        await openvino.validate(request)
        return [delta async for delta in openvino.stream(request)]

    deltas = asyncio.run(scenario())
    logprobs = [entry for delta in deltas for entry in delta.logprobs]
    assert logprobs and all(len(entry.top) == 2 for entry in logprobs)


@pytest.mark.parametrize("schema", [{"type": "string", "pattern": "(?<=a)b"}, {"$ref": "#/$defs/missing"}])
def test_a_schema_that_cannot_be_enforced_is_refused_before_the_pipeline_sees_it(openvino, schema):
    with pytest.raises(ConstraintError) as caught:
        asyncio.run(openvino.validate(ask("Hi", 4, Constraint("json_schema", schema))))
    assert caught.value.status == 400
    assert asyncio.run(collect(openvino, ask(QUESTIONS[3], 4)))[2] > 0


def test_unbounded_repetition_is_written_for_the_older_grammar_parser():
    assert older_ebnf('a ::= b{0, -1} c{1, -1} d{3, -1} e{2, 5}') == "a ::= b* c+ d{3,} e{2, 5}"


def test_long_string_bounds_are_enforced_by_the_pipeline_and_left_to_max_tokens_where_the_constraint_allows_it(openvino):
    assert relaxed_bounds('a ::= [a-z]{0, 240} b{1, 200} c{0, 120} d{3, 640} "e{0, 999}"') == \
        'a ::= [a-z]* b+ c{0, 120} d{3,} "e{0, 999}"'  # a literal's text is not a bound

    def note(limit: int, advisory: bool = False) -> tuple[bool, str]:
        schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": limit}}, "required": ["note"]}
        steps = openvino.pipeline_steps
        text, _, _ = asyncio.run(collect(openvino, ask("Write a long note about the sea as JSON.", 90,
                                                       Constraint("json_schema", schema, lengths_advisory=advisory))))
        assert text.startswith('{"note": "')
        return openvino.pipeline_steps > steps, text

    # A user's maxLength is a contract: the pipeline enforces it (written nested, it compiles fast) ...
    by_pipeline, text = note(150)
    assert by_pipeline and len(json.loads(text)["note"]) == 150
    # ... as the transformers engine behind it does beyond what the pipeline compiles in reasonable time.
    by_pipeline, _ = note(5000)
    assert not by_pipeline
    # An agent's bound only guards against rambling: the pipeline leaves it to max_tokens.
    by_pipeline, text = note(150, advisory=True)
    assert by_pipeline and len(text) > len('{"note": "') + 150


@pytest.mark.parametrize(("low", "high"), [(0, 17), (0, 120), (5, 30), (3, 200)])
def test_a_wide_repetition_is_nested_for_the_older_parser_and_takes_the_same_strings(low, high):
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string as accepts

    nested = nested_repeats(f'root ::= "<" c{{{low}, {high}}} ">"\nc ::= [a-z]\n')
    assert f"{{{low}, {high}}}" not in nested
    grammar = xgrammar.Grammar.from_ebnf(nested)
    assert all(accepts(grammar, "<" + "a" * n + ">") for n in range(low, high + 1))
    assert not any(accepts(grammar, "<" + "a" * n + ">") for n in (low - 1, high + 1) if n >= 0)


def test_rules_with_the_same_body_are_merged_and_the_grammar_takes_the_same_documents():
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string as accepts

    shape = {"type": "object", "properties": {"path": {"type": "string", "maxLength": 300}, "n": {"type": "integer"}},
             "required": ["path", "n"]}
    schema = {"type": "object", "properties": {"a": shape, "b": shape, "c": shape}, "required": ["a", "b", "c"]}
    written = openvino_grammar(Constraint("json_schema", schema))
    plain = older_ebnf(str(grammar_of(Constraint("json_schema", schema))))
    assert plain.count('"\\"path\\""') == 3 and written.count('"\\"path\\""') == 1  # one shape, not three
    grammar = xgrammar.Grammar.from_ebnf(written)
    document = {"a": {"path": "x" * 300, "n": 1}, "b": {"path": "", "n": -2}, "c": {"path": "y", "n": 3}}
    assert accepts(grammar, json.dumps(document))
    assert not accepts(grammar, json.dumps(document | {"b": {"path": "x" * 301, "n": 1}}))
    assert not accepts(grammar, json.dumps(document | {"c": {"path": "y"}}))
    # A rule's name inside a literal is text, not a reference; the root keeps its name.
    assert shared_rules('root ::= a b "b"\na ::= [x]\nb ::= [x]\n') == 'root ::= a a "b"\na ::= [x]\n'


def test_a_pattern_becomes_rules_the_pipeline_parses_and_its_output_matches(openvino):
    reference = {"type": "object", "properties": {"ref": {"type": "string", "pattern": r"^#E[0-9]+(\.[a-z]+)?$"}},
                 "required": ["ref"]}
    grammar = openvino_grammar(Constraint("json_schema", reference))
    assert "Regex(" not in grammar and "regex_0 ::=" in grammar
    with pytest.raises(Unsupported):  # a wildcard could write a quote into the JSON string
        openvino_grammar(Constraint("json_schema", {"type": "string", "pattern": "^a.b$"}))

    steps = openvino.pipeline_steps
    text, _, _ = asyncio.run(collect(openvino, ask("Refer to the first result.", 24, Constraint("json_schema", reference))))
    assert openvino.pipeline_steps > steps
    assert re.fullmatch(r'\{"ref": "#E[0-9]+(\.[a-z]+)?"\}', text), text


def test_a_server_with_the_openvino_engine_streams_chat_and_tool_calls(tmp_path):
    from agentd.config import Settings
    from agentd.server.app import create_app

    registry = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR, backend="openvino")
    asyncio.run(registry.load_all())
    assert registry.ready, registry.failures
    assert registry.engines[MODEL].info.meta["backend"] == "openvino"
    server = RunningServer(create_app(Settings(data_dir=tmp_path), registry))
    try:
        client = server.client()
        chunks = list(client.chat.completions.create(model=MODEL, stream=True, max_tokens=8, temperature=0,
                                                     messages=[{"role": "user", "content": QUESTIONS[0]}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        reply = client.chat.completions.create(model=MODEL, tools=[weather], tool_choice="required", max_tokens=40,
                                               messages=[{"role": "user", "content": "Weather in Paris?"}])
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and "city" in call.function.arguments
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'agentd_engine_prefix_cache_hit_rate{{model="{MODEL}"}}' in metrics
    finally:
        server.stop()
        asyncio.run(registry.close())


def test_the_exported_ir_follows_the_adapter_weights_not_what_lives_beside_them(tmp_path):
    from pipelines.openvino_export import fingerprint

    model, adapter = tmp_path / "model", tmp_path / "adapter"
    model.mkdir(), adapter.mkdir()
    (model / "model.safetensors").write_bytes(b"w")
    (adapter / "adapter_model.safetensors").write_bytes(b"a")
    (adapter / "router.json").write_text("{}")
    first = fingerprint(model, adapter)
    (adapter / "router.json").write_text('{"refitted": true}')  # the tool router, refitted on its own
    assert fingerprint(model, adapter) == first
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    assert fingerprint(model, adapter) != first
    assert fingerprint(model, None) != fingerprint(model, adapter)
