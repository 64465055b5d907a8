"""The model a run trains: the base loaded from a folder, then wrapped for LoRA, QLoRA or left whole."""

from __future__ import annotations

import torch
from torch import nn

from training.config import TrainingConfig


class TrainingError(RuntimeError):
    """A run cannot start or go on; the message says why in words a user can act on."""


def load_tokenizer(config: TrainingConfig):
    from transformers import AutoTokenizer

    if not (config.base_model / "config.json").is_file():
        raise TrainingError(f"{config.base_model} is not a transformers model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def use_bf16(config: TrainingConfig) -> bool:
    if config.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(config.bf16)


def load_model(config: TrainingConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16 if use_bf16(config) else torch.float32}
    if config.method == "qlora":
        kwargs.update(quantization_config=_four_bit_config(), device_map={"": torch.cuda.current_device()})
    model = AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
    model.config.use_cache = False
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.init_adapter is not None:
        from peft import PeftModel

        if not (config.init_adapter / "adapter_config.json").is_file():
            raise TrainingError(f"{config.init_adapter} is not a PEFT adapter folder (no adapter_config.json)")
        return PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules or "all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _four_bit_config():
    if not torch.cuda.is_available():
        raise TrainingError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
                            "Use method 'lora' on a CPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


class WeightedCausalLMLoss(nn.Module):
    """Returns the summed, weighted next-token loss of a batch, computing logits only where it counts.

    The vocabulary projection is the costliest layer of a small model; projecting only the
    trained positions (the assistant tokens of chat data) saves most of it. The caller divides
    by the step's total weight, so micro-batches of one step average exactly like one batch.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        # A tuple, so the parts are not registered twice as submodules (state dicts stay clean).
        self._parts = (causal_lm.get_decoder(), causal_lm.get_output_embeddings())

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_weights: torch.Tensor) -> torch.Tensor:
        decoder, head = self._parts
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        selected = target_weights > 0
        logits = head(hidden[:, :-1][selected]).float()
        targets = input_ids[:, 1:][selected]
        losses = nn.functional.cross_entropy(logits, targets, reduction="none")
        return (losses * target_weights[selected]).sum()
