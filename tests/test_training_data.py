"""Data formats, the loss mask from the chat template, and packing that keeps sequences apart."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import DATA_DIR
from training.data import DataError, Turn, load_examples, parse_file
from training.encoding import encode, encode_chat
from training.packing import collate, epoch_batches, pack
from training.encoding import Sequence


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def test_openai_messages_keep_roles_and_per_turn_weights():
    [example] = parse_file(jsonl({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "weight": 0}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": [{"type": "text", "text": "See you."}]}]}), "chat.jsonl")
    assert example.turns == (Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello!"),
                             Turn("user", "Bye"), Turn("assistant", "See you.", trained=True))
    assert example.source == "chat.jsonl line 1"


def test_sharegpt_alpaca_and_text_become_the_same_type(tmp_path):
    [sharegpt] = parse_file(jsonl({"system": "S", "conversations": [
        {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}), "s.jsonl")
    assert sharegpt.turns == (Turn("system", "S"), Turn("user", "Q"), Turn("assistant", "A", trained=True))
    [alpaca] = parse_file(jsonl({"instruction": "Add", "input": "2 and 3", "output": "5",
                                 "history": [["hi", "hello"]]}), "a.jsonl")
    assert alpaca.turns == (Turn("user", "hi"), Turn("assistant", "hello", trained=True),
                            Turn("user", "Add\n\n2 and 3"), Turn("assistant", "5", trained=True))
    [raw] = parse_file(jsonl({"text": "Once upon a time."}), "t.jsonl")
    assert raw.text == "Once upon a time." and not raw.is_chat
    (tmp_path / "book.txt").write_text("Chapter one.\n\nIt was dark.")
    [document] = load_examples([tmp_path / "book.txt"])
    assert document.text.startswith("Chapter one.")


def test_malformed_records_are_reported_with_their_line(tmp_path):
    bad = jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]},
                '{"messages": [', {"prompt": "x", "completion": "y"},
                {"messages": [{"role": "user", "content": "only a question"}]},
                {"messages": [{"role": "robot", "content": "x"}]}, "", "[1, 2]",
                {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]})
    (tmp_path / "tickets.jsonl").write_bytes(bad)
    with pytest.raises(DataError) as raised:
        load_examples([tmp_path / "tickets.jsonl"])
    problems = raised.value.problems
    assert [p.split(":")[0] for p in problems] == [f"tickets.jsonl line {n}" for n in (2, 3, 4, 5, 7, 8)]
    assert "not valid JSON" in problems[0] and "unknown record" in problems[1]
    assert "no assistant turn" in problems[2] and "'robot'" in problems[3] and "JSON object" in problems[4]
    assert "only allowed on assistant" in problems[5]
    with pytest.raises(DataError, match="no such file"):
        load_examples([tmp_path / "missing.jsonl"])
    with pytest.raises(DataError, match="no records"):
        parse_file(b"\n\n", "empty.jsonl")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pipelines.embedded import embedded_model_folder

    return AutoTokenizer.from_pretrained(embedded_model_folder(DATA_DIR))


def test_loss_covers_exactly_the_trained_assistant_turns(tokenizer):
    [example] = parse_file(jsonl({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "weight": 0},
        {"role": "user", "content": "Route ticket 7"}, {"role": "assistant", "content": "Routed to red."}]}), "c")
    sequence = encode_chat(example, tokenizer)
    trained_text = tokenizer.decode([t for t, on in zip(sequence.input_ids, sequence.trained) if on])
    assert trained_text == "Routed to red.<|im_end|>\n"
    # The whole sequence is exactly what the template renders (what the model sees when serving).
    rendered = tokenizer.apply_chat_template([{"role": t.role, "content": t.content} for t in example.turns],
                                             tokenize=False)
    assert tokenizer.decode(sequence.input_ids) == rendered


def test_text_is_windowed_and_long_chats_are_cut(tokenizer):
    [document] = parse_file(jsonl({"text": "word " * 100}), "t")
    [chat] = parse_file(jsonl({"messages": [{"role": "user", "content": "q " * 50},
                                            {"role": "assistant", "content": "a"}]}), "c")
    data = encode([document, chat], tokenizer, seq_len=32)
    windows = [s for s in data.sequences if all(s.trained)]
    assert len(windows) == 4 and all(len(s) <= 32 for s in windows)
    assert windows[-1].input_ids[-1] == tokenizer.eos_token_id
    assert data.dropped == 1  # the cut chat lost its only answer


def test_packing_restarts_positions_and_never_predicts_across_sequences():
    sequences = [Sequence([1, 2, 3], [False, True, True]), Sequence([4, 5], [True, True]),
                 Sequence([6, 7, 8, 9], [False, False, True, True])]
    rows = pack(sequences, seq_len=6)  # first-fit decreasing: [6 7 8 9 | 4 5] and [1 2 3]
    assert [len(row) for row in rows] == [6, 3]
    batch = collate(rows, pad_id=0)
    assert batch.input_ids.shape == (2, 6) and batch.tokens == 9
    assert batch.input_ids[0].tolist() == [6, 7, 8, 9, 4, 5] and batch.position_ids[0].tolist() == [0, 1, 2, 3, 0, 1]
    # Targets 7..5: 8 and 9 are trained, 4 starts a new sequence (never predicted from 9), then 5.
    assert batch.target_weights[0].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    # Padding restarts positions too, and is never a target.
    assert batch.position_ids[1].tolist() == [0, 1, 2, 0, 1, 2] and batch.target_weights[1].tolist()[2:] == [0.0] * 3
    assert epoch_batches(rows, 1, seed=3, epoch=0) == epoch_batches(rows, 1, seed=3, epoch=0)


def test_packed_rows_give_the_same_loss_as_separate_rows(tmp_path):
    """The block-diagonal mask really separates packed sequences (no attention across them)."""
    from tests.fixtures.tiny_model import make_tiny_model
    from pipelines.embedded import embedded_model_folder
    from training.model import WeightedCausalLMLoss
    from transformers import AutoModelForCausalLM

    folder = make_tiny_model(tmp_path / "tiny", embedded_model_folder(DATA_DIR))
    model = WeightedCausalLMLoss(AutoModelForCausalLM.from_pretrained(folder)).eval()
    sequences = [Sequence([11, 12, 13, 14], [True] * 4), Sequence([21, 22, 23], [True] * 3)]
    with torch.no_grad():
        packed = collate(pack(sequences, 8), pad_id=0)
        separate = collate([r for s in sequences for r in pack([s], 8)], pad_id=0)
        together = model(packed.input_ids, packed.position_ids, packed.target_weights)
        apart = model(separate.input_ids, separate.position_ids, separate.target_weights)
    assert packed.input_ids.shape[0] == 1 and separate.input_ids.shape[0] == 2
    assert packed.trained_tokens == separate.trained_tokens == 5
    assert torch.allclose(together, apart, atol=1e-5)


def test_assistant_tool_calls_are_trained_as_json_and_bad_ones_named():
    call = {"type": "function", "function": {"name": "lookup", "arguments": '{"ticket": 7}'}}
    [example] = parse_file(jsonl({"messages": [{"role": "user", "content": "Find ticket 7"},
                                               {"role": "assistant", "content": None, "tool_calls": [call]}]}), "t")
    assert example.turns[-1] == Turn("assistant", '[{"name": "lookup", "arguments": {"ticket": 7}}]', trained=True)
    broken = {"type": "function", "function": {"name": "lookup", "arguments": "{not json"}}
    with pytest.raises(DataError, match=r"t line 1: messages\[1\].tool_calls must be"):
        parse_file(jsonl({"messages": [{"role": "user", "content": "q"},
                                       {"role": "assistant", "content": None, "tool_calls": [broken]}]}), "t")
