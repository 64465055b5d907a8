"""What one fine-tuning run is told: the model, the data, the method and its hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["lora", "qlora", "full"]
Schedule = Literal["cosine", "linear", "constant"]
# ZeRO stages by name; "_offload" moves optimizer state (and, for stage 3, parameters) to the CPU.
DeepSpeedPreset = Literal["zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"]


class TrainingConfig(BaseModel):
    """Every field has a default that works for a small model on a CPU; a run is reproducible from it."""

    model_config = ConfigDict(extra="forbid")

    base_model: Path = Field(description="A transformers model folder (config.json, weights, tokenizer).")
    train_files: list[Path] = Field(min_length=1, description="JSONL (messages, ShareGPT, Alpaca, text) or .txt.")
    validation_files: list[Path] = Field(default_factory=list)
    output_dir: Path

    method: Method = "lora"
    lora_r: int = Field(8, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # None: every attention and MLP projection PEFT knows for the architecture ("all-linear").
    lora_target_modules: list[str] | None = None
    # Train this LoRA adapter on (its r, alpha and target modules), rather than a new one: a second
    # stage on more data, or a fine-tune of a fine-tune.
    init_adapter: Path | None = None

    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs when set.")
    batch_size: int = Field(4, ge=1, description="Sequences per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Schedule = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seq_len: int = Field(512, ge=8, description="Tokens per packed row; longer chat examples are cut.")
    packing: bool = True
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    eval_every: int | None = Field(None, ge=1, description="Steps between validation passes (default: at the end).")
    seed: int = 42
    # "auto": bf16 where the hardware runs it natively (CUDA with bf16); fp32 on CPU.
    bf16: bool | Literal["auto"] = "auto"

    deepspeed: DeepSpeedPreset | dict[str, Any] | None = None
    checkpoint_every: int | None = Field(None, ge=1, description="Steps between checkpoints (default: ~10 per run).")
    keep_checkpoints: int = Field(2, ge=1)
    merge: bool = Field(False, description="Also write the adapter merged into the base as a full model folder.")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.method == "full" and self.merge:
            raise ValueError("merge applies to lora/qlora adapters; a full fine-tune already is a whole model")
        if self.init_adapter is not None and self.method == "full":
            raise ValueError("init_adapter continues a LoRA adapter: use method lora or qlora")
        return self

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def final_dir(self) -> Path:
        """The adapter (lora/qlora) or the whole model (full) when the run ends."""
        return self.output_dir / "final"

    @property
    def merged_dir(self) -> Path:
        return self.output_dir / "merged"
