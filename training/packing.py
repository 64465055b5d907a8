"""Sequences to rows and batches: packed (several sequences per row) or one per row, padded.

A packed row restarts `position_ids` at 0 for every sequence it holds and is run without an
attention mask; transformers then builds a block-diagonal causal mask from the positions, so
sequences in one row never see each other. Packing first-fit-decreasing leaves little padding,
which is where most of a padded trainer's time goes on short chat data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from training.encoding import Sequence


@dataclass
class Row:
    sequences: list[Sequence]

    def __len__(self) -> int:
        return sum(len(sequence) for sequence in self.sequences)


def pack(sequences: list[Sequence], seq_len: int) -> list[Row]:
    """First-fit decreasing: deterministic for the same input order."""
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    rows: list[Row] = []
    free: list[int] = []
    for index in order:
        sequence = sequences[index]
        for slot, room in enumerate(free):
            if len(sequence) <= room:
                rows[slot].sequences.append(sequence)
                free[slot] -= len(sequence)
                break
        else:
            rows.append(Row([sequence]))
            free.append(seq_len - len(sequence))
    return rows


def one_per_row(sequences: list[Sequence]) -> list[Row]:
    return [Row([sequence]) for sequence in sequences]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor
    # The weight of predicting input_ids[:, t + 1] from position t: 1 where trained, 0 elsewhere.
    target_weights: torch.Tensor  # [rows, width - 1]
    tokens: int  # real tokens, not padding

    @property
    def trained_tokens(self) -> float:
        return float(self.target_weights.sum())


def collate(rows: list[Row], pad_id: int, pad_to: int | None = None) -> Batch:
    width = pad_to or max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    trained = torch.zeros((len(rows), width), dtype=torch.bool)
    starts = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, row in enumerate(rows):
        column = 0
        for sequence in row.sequences:
            n = len(sequence)
            ids[r, column: column + n] = torch.tensor(sequence.input_ids)
            positions[r, column: column + n] = torch.arange(n)
            trained[r, column: column + n] = torch.tensor(sequence.trained)
            starts[r, column] = True
            column += n
        # Padding is a sequence of its own (positions restart) so it never joins the last one.
        positions[r, column:] = torch.arange(width - column)
        if column < width:
            starts[r, column] = True
    # A target that starts a sequence is never predicted from the one before it.
    weights = (trained[:, 1:] & ~starts[:, 1:]).float()
    return Batch(ids, positions, weights, tokens=sum(len(row) for row in rows))


def epoch_batches(rows: list[Row], batch_size: int, seed: int, epoch: int) -> list[list[Row]]:
    """Shuffled, then grouped by length within mega-batches so a batch pads little; the order of
    batches is shuffled again. The same seed and epoch give the same batches, which is what lets a
    resumed run match an uninterrupted one."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(rows)))
    rng.shuffle(order)
    mega = batch_size * 16
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start: start + mega], key=lambda i: -len(rows[i]))
        batches += [group[i: i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return [[rows[i] for i in batch] for batch in batches]
