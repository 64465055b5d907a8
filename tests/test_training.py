"""The training loop on a tiny random model: full and LoRA, resume, DeepSpeed, export, clear errors."""

from __future__ import annotations


import pytest
import torch

from training import Callbacks, TrainingConfig, TrainingError, train


class Recorder(Callbacks):
    def __init__(self, stop_after: int | None = None):
        self.steps, self.messages, self.stop_after = [], [], stop_after

    def on_step(self, report):
        self.steps.append(report)

    def on_message(self, text):
        self.messages.append(text)

    def should_stop(self):
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def config(tiny, tickets, out, **overrides) -> TrainingConfig:
    values = dict(base_model=tiny, train_files=[tickets], output_dir=out, max_steps=8, batch_size=2,
                  learning_rate=3e-3, seq_len=64, checkpoint_every=2, warmup_ratio=0.0)
    return TrainingConfig(**(values | overrides))


def test_full_fine_tune_lowers_the_loss_and_saves_a_loadable_model(tiny, tickets, tmp_path):
    from transformers import AutoModelForCausalLM

    recorder = Recorder()
    result = train(config(tiny, tickets, tmp_path, method="full", max_steps=12, validation_fraction=0.2), recorder)
    losses = [step["loss"] for step in recorder.steps]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.3
    assert result.valid_loss is not None and result.trained_tokens == sum(s["tokens"] for s in recorder.steps)
    assert all(step["tokens_per_second"] > 0 for step in recorder.steps)
    reloaded = AutoModelForCausalLM.from_pretrained(result.final_dir)
    assert reloaded.config.hidden_size == 32
    # keep-last-N: only the two newest checkpoints remain.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-12"]


def test_a_stopped_run_resumes_with_the_same_loss_curve(tiny, tickets, tmp_path):
    reference = Recorder()
    train(config(tiny, tickets, tmp_path / "straight", lora_dropout=0.1), reference)
    first = Recorder(stop_after=3)  # stops between checkpoints: the stop itself checkpoints step 3
    stopped = train(config(tiny, tickets, tmp_path / "resumed", lora_dropout=0.1), first)
    assert stopped.stopped and stopped.steps == 3 and stopped.final_dir is None
    second = Recorder()
    result = train(config(tiny, tickets, tmp_path / "resumed", lora_dropout=0.1), second)
    assert "resumed from checkpoint at step 3" in second.messages
    assert [s["step"] for s in second.steps] == [4, 5, 6, 7, 8]
    curve = [s["loss"] for s in first.steps + second.steps]
    assert curve == pytest.approx([s["loss"] for s in reference.steps], rel=1e-5)
    assert result.history[-1]["loss"] == pytest.approx(reference.steps[-1]["loss"], rel=1e-5)


def test_lora_adapter_merges_into_a_plain_model_with_the_same_outputs(tiny, tickets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(config(tiny, tickets, tmp_path, max_steps=4, merge=True), Recorder())
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), result.final_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    ids = torch.tensor([[1, 500, 900, 42, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-4)


def test_a_second_stage_trains_the_first_stages_adapter_on(tiny, tickets, tmp_path):
    import json

    from safetensors.torch import load_file

    stage = train(config(tiny, tickets, tmp_path / "first", lora_r=8), Recorder())
    first = load_file(stage.final_dir / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().max() > 1e-4 for name, tensor in first.items())
    # One step at a vanishing learning rate: what comes out is what went in, not a new adapter (whose
    # B matrices start at zero), and it keeps that adapter's shape whatever the config's own r says.
    result = train(config(tiny, tickets, tmp_path / "second", lora_r=2, max_steps=1, learning_rate=1e-12,
                          init_adapter=stage.final_dir), Recorder())
    second = load_file(result.final_dir / "adapter_model.safetensors")
    assert second.keys() == first.keys()
    assert all(torch.allclose(second[name], first[name], atol=1e-6) for name in first)
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["r"] == 8
    with pytest.raises(TrainingError, match="not a PEFT adapter folder"):
        train(config(tiny, tickets, tmp_path / "x", init_adapter=tmp_path))
    with pytest.raises(ValueError, match="init_adapter continues a LoRA adapter"):
        config(tiny, tickets, tmp_path, method="full", init_adapter=stage.final_dir)


def test_deepspeed_zero2_in_one_process_matches_plain_training(tiny, tickets, tmp_path):
    plain, zero = Recorder(), Recorder()
    settings = dict(max_steps=4, gradient_accumulation_steps=2, checkpoint_every=4)
    train(config(tiny, tickets, tmp_path / "plain", **settings), plain)
    result = train(config(tiny, tickets, tmp_path / "zero2", deepspeed="zero2", **settings), zero)
    assert [s["loss"] for s in zero.steps] == pytest.approx([s["loss"] for s in plain.steps], rel=1e-4)
    assert (tmp_path / "zero2" / "checkpoints" / "checkpoint-4" / "deepspeed").is_dir()
    assert (result.final_dir / "adapter_model.safetensors").is_file()


def test_clear_errors_for_what_cannot_run(tiny, tickets, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU"):
            train(config(tiny, tickets, tmp_path / "q", method="qlora"))
    with pytest.raises(TrainingError, match="not a transformers model folder"):
        train(config(tmp_path, tickets, tmp_path / "x"))
    with pytest.raises(ValueError, match="merge applies to lora"):
        config(tiny, tickets, tmp_path, method="full", merge=True)
