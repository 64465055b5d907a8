"""Adapters merged into their base and written as a plain safetensors model folder.

The result loads with `AutoModelForCausalLM.from_pretrained(folder)` and with vLLM
(`--model folder`), with no PEFT at serving time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch


def merge_adapter(base_model: Path, adapter: Path, out_dir: Path, dtype: torch.dtype | None = None) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype or "auto")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=out_dir.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else base_model
                                      ).save_pretrained(staging)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
