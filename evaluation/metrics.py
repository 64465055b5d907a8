"""Metrics: per-sample scores, their aggregation over a task, and a standard error for each.

Per-sample functions (`exact_match`, `f1`, `rouge`, `pass_at_k`, ...) return floats; corpus
metrics (BLEU, chrF, the perplexities) keep per-sample *items* and are computed over all of them
at once, as lm-evaluation-harness does. `aggregate_metric(name, items)` turns a metric's items
into a `MetricValue`: a mean gets the closed-form standard error (sample std / sqrt(n)), a corpus
metric a bootstrap one (fixed seed, so the same items always give the same error bar).

Items may arrive as JSON round-trips of themselves (lists where tuples were): cached per-sample
records come back from SQLite that way.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.requests import EvalModel, EvaluationError, GenerateRequest


@dataclass
class MetricValue:
    value: float
    stderr: float | None  # closed form where there is one, else bootstrap; None for n < 2
    higher_is_better: bool = True


# --- normalisation and per-sample metrics ---------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _references(reference: str | Sequence[str]) -> list[str]:
    return [reference] if isinstance(reference, str) else [str(r) for r in reference]


def exact_match(prediction: str, reference: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(ref) for ref in _references(reference)))


def f1(prediction: str, reference: str | Sequence[str]) -> float:
    """SQuAD token-overlap F1 against the best-matching reference."""
    return max(_f1_one(prediction, ref) for ref in _references(reference))


def _f1_one(prediction: str, reference: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not gold:  # SQuAD v2: an empty answer is right only against an empty one
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def accuracy(predicted_index: int, gold: int | Sequence[int]) -> float:
    golds = [gold] if isinstance(gold, int) else list(gold)
    return float(predicted_index in golds)


_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(prediction: str, reference: str | Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (rouge-score, with stemming), best reference per type."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    best = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for ref in _references(reference):
        scores = scorer.score(ref, prediction)
        for name in _ROUGE_TYPES:
            best[name] = max(best[name], scores[name].fmeasure)
    return best


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for c of n samples passing."""
    if k > n:
        raise EvaluationError(f"pass@{k} needs at least {k} samples per problem, got {n}", param="k")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- LLM as judge ---------------------------------------------------------------------------------

JUDGE_PROMPTS = {
    "1-10": (
        "You are grading an answer against a reference answer.\n\n"
        "Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer to grade:\n{output}\n\n"
        "Rate how correct and complete the answer is on a scale of 1 to 10, where 10 means it says "
        "the same as the reference. Reply with the rating in double brackets, like [[7]]."
    ),
    "pass_fail": (
        "You are grading an answer against a reference answer.\n\n"
        "Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer to grade:\n{output}\n\n"
        "Does the answer say the same as the reference? Reply with exactly PASS or FAIL."
    ),
}


def parse_judge_grade(text: str, scale: str) -> float | None:
    """The judge's grade, or None when its reply holds no clear grade on the scale."""
    if scale == "pass_fail":
        verdicts = re.findall(r"\b(PASS|FAIL)\b", text.upper())
        return None if not verdicts else float(verdicts[-1] == "PASS")
    number = r"(\d+(?:\.\d+)?)"
    # most explicit form first: [[7]], then "7/10" or "7 out of 10", then "rating: 7", then a lone number
    for pattern in (rf"\[\[\s*{number}\s*\]\]", rf"{number}\s*(?:/|out of)\s*10\b",
                    rf"(?:rating|score|grade)\s*(?:is|of|:|=)?\s*{number}"):
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            grade = float(found.group(1))
            return grade if 1 <= grade <= 10 else None
    numbers = re.findall(r"(?<![\d.])" + number + r"(?![\d.])", text)
    if len(numbers) == 1 and 1 <= float(numbers[0]) <= 10:
        return float(numbers[0])
    return None


async def llm_judge(judge: EvalModel, *, question: str, output: str, reference: str | Sequence[str],
                    scale: str = "1-10") -> tuple[float | None, str]:
    """Ask `judge` to grade `output`; returns (grade or None if unparseable, the judge's reply)."""
    if scale not in JUDGE_PROMPTS:
        raise EvaluationError(f"judge scale must be one of {sorted(JUDGE_PROMPTS)}, got {scale!r}", param="scale")
    prompt = JUDGE_PROMPTS[scale].format(question=question, reference=" | ".join(_references(reference)),
                                         output=output)
    request = GenerateRequest(messages=({"role": "user", "content": prompt},), max_tokens=64, temperature=0.0)
    [reply] = await judge.generate([request], batch_size=1)
    return parse_judge_grade(reply, scale), reply


# --- corpus metrics -------------------------------------------------------------------------------

def bleu(items: Sequence[Sequence[Any]]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) over (prediction, references) items."""
    import sacrebleu

    predictions, references = _transpose_references(items)
    return float(sacrebleu.corpus_bleu(predictions, references).score)


def chrf(items: Sequence[Sequence[Any]]) -> float:
    """Corpus chrF (sacrebleu, 0-100) over (prediction, references) items."""
    import sacrebleu

    predictions, references = _transpose_references(items)
    return float(sacrebleu.corpus_chrf(predictions, references).score)


def _transpose_references(items: Sequence[Sequence[Any]]) -> tuple[list[str], list[list[str]]]:
    # sacrebleu wants one stream per reference position; samples with fewer references repeat
    # their first one (sacrebleu needs equal-length streams).
    predictions = [str(prediction) for prediction, _ in items]
    references = [_references(refs) for _, refs in items]
    width = max(len(refs) for refs in references)
    padded = [refs + [refs[0]] * (width - len(refs)) for refs in references]
    return predictions, [list(stream) for stream in zip(*padded)]


def perplexity(items: Sequence[float]) -> float:
    """exp(-mean log-likelihood), over per-sample log-likelihoods (harness `perplexity`)."""
    return math.exp(-sum(items) / len(items))


def weighted_perplexity(items: Sequence[Sequence[float]]) -> float:
    """exp(-sum logprob / sum units), over (logprob, words or bytes) items."""
    return math.exp(-sum(lp for lp, _ in items) / sum(units for _, units in items))


def bits_per_byte(items: Sequence[Sequence[float]]) -> float:
    return -sum(lp for lp, _ in items) / sum(units for _, units in items) / math.log(2)


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))  # the harness's word count for word_perplexity


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


# --- aggregation with standard errors -------------------------------------------------------------

def mean(items: Sequence[float]) -> float:
    return sum(items) / len(items)


def mean_stderr(items: Sequence[float]) -> float | None:
    n = len(items)
    if n < 2:
        return None
    centre = mean(items)
    return math.sqrt(sum((x - centre) ** 2 for x in items) / (n - 1)) / math.sqrt(n)


BOOTSTRAP_ITERS = 1000
_BOOTSTRAP_WORK = 500_000  # resamples x items: keeps corpus BLEU on thousands of samples to seconds


def bootstrap_stderr(fn: Callable[[Sequence[Any]], float], items: Sequence[Any], iters: int = BOOTSTRAP_ITERS,
                     seed: int = 1234) -> float | None:
    """Standard deviation of `fn` over resamples (with replacement) of `items`."""
    n = len(items)
    if n < 2:
        return None
    iters = max(100, min(iters, _BOOTSTRAP_WORK // n))
    rng = random.Random(seed)
    values = []
    for _ in range(iters):
        resample = [items[rng.randrange(n)] for _ in range(n)]
        try:
            values.append(fn(resample))
        except (ZeroDivisionError, OverflowError):
            continue
    if len(values) < 2:
        return None
    centre = sum(values) / len(values)
    return math.sqrt(sum((v - centre) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class MetricSpec:
    aggregate: Callable[[Sequence[Any]], float]
    higher_is_better: bool = True
    corpus: bool = False  # a corpus metric: bootstrap standard error instead of the mean's


# How each metric's per-sample items become the task's number. Metrics named `pass@k` and the
# judge's are means too; `metric_spec` resolves them.
METRICS: dict[str, MetricSpec] = {
    "acc": MetricSpec(mean),
    "acc_norm": MetricSpec(mean),
    "exact_match": MetricSpec(mean),
    "f1": MetricSpec(mean),
    "rouge1": MetricSpec(mean),
    "rouge2": MetricSpec(mean),
    "rougeL": MetricSpec(mean),
    "llm_judge": MetricSpec(mean),
    "bleu": MetricSpec(bleu, corpus=True),
    "chrf": MetricSpec(chrf, corpus=True),
    "perplexity": MetricSpec(perplexity, higher_is_better=False, corpus=True),
    "word_perplexity": MetricSpec(weighted_perplexity, higher_is_better=False, corpus=True),
    "byte_perplexity": MetricSpec(weighted_perplexity, higher_is_better=False, corpus=True),
    "bits_per_byte": MetricSpec(bits_per_byte, higher_is_better=False, corpus=True),
}


def metric_spec(name: str) -> MetricSpec:
    if name in METRICS:
        return METRICS[name]
    if re.fullmatch(r"pass@\d+", name):
        return METRICS["acc"]
    raise EvaluationError(f"unknown metric {name!r}; known: {sorted(METRICS)} and pass@k", param="metric")


def aggregate_metric(name: str, items: Sequence[Any]) -> MetricValue | None:
    """The task-level value of metric `name` over its per-sample items (None items are skipped:
    outputs that could not be scored). None when no sample has an item."""
    spec = metric_spec(name)
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    if spec.corpus:
        value, stderr = spec.aggregate(kept), bootstrap_stderr(spec.aggregate, kept)
    else:
        floats = [float(item) for item in kept]
        value, stderr = mean(floats), mean_stderr(floats)
    return MetricValue(value=float(value), stderr=stderr, higher_is_better=spec.higher_is_better)
