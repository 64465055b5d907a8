"""Fine-tuning benchmark: agentd's trainer vs HF `Trainer` + PEFT, LoRA on the embedded model.

Both sides get the same chat examples, tokenized the same way (the model's chat template,
loss on assistant tokens only), the same LoRA (r=8, alpha=16, dropout 0.05, every linear
layer), optimizer (AdamW), schedule (cosine, 5% warm-up), learning rate, batch size, epochs
and seed. Each side runs in its own process, so peak memory is its own. Printed per side:
real (non-padding) tokens per second of training, peak RSS, and the loss of the final model on
the same held-out examples; then the ratios agentd / HF.

What differs is the point: agentd packs examples into rows (no padding) and projects to the
vocabulary only at trained positions; HF pads each batch to its longest example and computes
logits everywhere.

    .venv/bin/python benchmarks/finetune.py [--examples 96] [--epochs 1] [--batch-size 4] [--packed-batch-size N]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("ticket printer invoice refund account password router laptop screen battery network update "
         "order delivery warranty driver license backup server email calendar meeting report budget "
         "contract customer supplier shipment label storage cable monitor keyboard camera phone").split()


def make_examples(count: int, seed: int) -> list[dict]:
    """Chat examples of uneven length, as real support data is: short questions, answers of 5–120 words."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        topic = rng.choice(WORDS)
        question = f"Case {index}: my {topic} " + " ".join(rng.choices(WORDS, k=rng.randint(3, 40))) + "?"
        steps = rng.randint(1, 12)
        answer = f"For the {topic}: " + " ".join(
            f"step {n}, check the {rng.choice(WORDS)} and the {rng.choice(WORDS)}." for n in range(1, steps + 1))
        examples.append({"messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": answer}]})
    return examples


def packed_rows(work: Path, seq_len: int) -> tuple[int, int]:
    """How many rows agentd's packing makes of the training examples (as its trainer will)."""
    from transformers import AutoTokenizer

    from pipelines.embedded import embedded_model_folder
    from training.data import load_examples
    from training.encoding import encode
    from training.packing import pack

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder(ROOT / ".agentd"))
    sequences = encode(load_examples([work / "train.jsonl"]), tokenizer, seq_len).sequences
    width = min(seq_len, max(len(s) for s in sequences))
    return len(pack(sequences, width)), len(sequences)


def held_out_loss(model, sequences) -> float:
    """Mean next-token loss on the assistant tokens of held-out examples (the same for both sides)."""
    import torch

    from training.packing import collate, one_per_row

    total, weight = 0.0, 0.0
    model.eval()
    with torch.no_grad():
        for sequence in sequences:
            batch = collate(one_per_row([sequence]), pad_id=0)
            logits = model(input_ids=batch.input_ids).logits[:, :-1].float()
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.input_ids[:, 1:],
                                                       reduction="none")
            total += float((losses * batch.target_weights).sum())
            weight += float(batch.target_weights.sum())
    return total / weight


def run_side(side: str, args: argparse.Namespace, work: Path) -> dict:
    import torch
    from transformers import AutoTokenizer

    from pipelines.embedded import embedded_model_folder
    from training.data import load_examples
    from training.encoding import encode

    torch.set_num_threads(torch.get_num_threads())
    base = embedded_model_folder(ROOT / ".agentd")
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_sequences = encode(load_examples([work / "train.jsonl"]), tokenizer, args.seq_len).sequences
    eval_sequences = encode(load_examples([work / "eval.jsonl"]), tokenizer, args.seq_len).sequences
    real_tokens = sum(len(s) for s in train_sequences) * args.epochs
    if side == "agentd":
        seconds, model = _agentd(args, base, work)
    else:
        seconds, model = _hf(args, base, train_sequences, tokenizer, work)
    return {"side": side, "seconds": seconds, "tokens_per_second": real_tokens / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "held_out_loss": held_out_loss(model, eval_sequences), "tokens": real_tokens}


def _agentd(args, base: Path, work: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training import Callbacks, TrainingConfig, train

    config = TrainingConfig(base_model=base, train_files=[work / "train.jsonl"], output_dir=work / "agentd",
                            method="lora", lora_r=8, lora_alpha=16, lora_dropout=0.05, epochs=args.epochs,
                            batch_size=args.packed_batch_size, learning_rate=args.learning_rate, lr_scheduler="cosine",
                            warmup_ratio=0.05, seq_len=args.seq_len, seed=args.seed, checkpoint_every=10**6,
                            max_grad_norm=1.0)
    class Clock(Callbacks):
        """Starts when the loop does, as HF's clock does: data preparation and loading are not timed."""

        started = None

        def on_message(self, text):
            if text.startswith("training "):
                self.started = time.perf_counter()

    clock = Clock()
    result = train(config, clock)
    seconds = time.perf_counter() - clock.started
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), result.final_dir)
    return seconds, model


def _hf(args, base: Path, sequences, tokenizer, work: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    class Examples(torch.utils.data.Dataset):
        def __len__(self):
            return len(sequences)

        def __getitem__(self, index):
            s = sequences[index]
            return {"input_ids": s.input_ids, "labels": [t if on else -100 for t, on in zip(s.input_ids, s.trained)]}

    def pad_batch(items):
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id)
        labels = torch.full((len(items), width), -100)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(item["input_ids"]), torch.tensor(item["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    torch.manual_seed(args.seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    training_args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, max_grad_norm=1.0,
        seed=args.seed, use_cpu=True, report_to=[], save_strategy="no", logging_steps=10,
        dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=training_args, train_dataset=Examples(), data_collator=pad_batch)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=["agentd", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--packed-batch-size", type=int,
                        help="agentd's batch in packed rows (default: as many examples per step as HF's batch)")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args, args.work)))
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        examples = make_examples(args.examples + 40, args.seed)
        (work / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples[:args.examples]))
        (work / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples[args.examples:]))
        rows, sequences = packed_rows(work, args.seq_len)
        # A packed row holds several examples: agentd's batch (in rows) is set so that an optimizer
        # step sees as many examples as HF's, so both take the same number of steps.
        packed_batch = args.packed_batch_size or max(1, round(args.batch_size * rows / sequences))
        results = {}
        for side in ("hf", "agentd"):
            command = [sys.executable, __file__] + sys.argv[1:] + [
                "--side", side, "--work", str(work), "--packed-batch-size", str(packed_batch)]
            finished = subprocess.run(command, capture_output=True, text=True, check=False)
            if finished.returncode:
                sys.exit(f"{side} failed:\n{finished.stderr[-3000:]}")
            results[side] = json.loads(finished.stdout.strip().splitlines()[-1])
    hf, ours = results["hf"], results["agentd"]
    print(f"LoRA on the embedded model: {args.examples} examples, {args.epochs} epoch(s), {hf['tokens']:.0f} real "
          f"tokens; HF batch {args.batch_size} examples, agentd batch {packed_batch} packed rows "
          f"({sequences} examples in {rows} rows)")
    print(f"{'':22}{'HF Trainer+PEFT':>18}{'agentd':>12}{'ratio':>10}")
    rows = [("tokens/s", "tokens_per_second", "{:.0f}"), ("wall time (s)", "seconds", "{:.1f}"),
            ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"), ("held-out loss", "held_out_loss", "{:.4f}")]
    for label, key, fmt in rows:
        print(f"{label:22}{fmt.format(hf[key]):>18}{fmt.format(ours[key]):>12}{ours[key] / hf[key]:>9.2f}x")


if __name__ == "__main__":
    main()
