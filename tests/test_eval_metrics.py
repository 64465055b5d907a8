"""Metrics against values computed by hand, and their standard errors."""

from __future__ import annotations

import math

import pytest

from evaluation import metrics
from evaluation.requests import EvalModel, EvaluationError, GenerateRequest, ModelInfo


def test_normalisation_is_squads():
    assert metrics.normalize_answer("The  Cat's hat!") == "cats hat"
    assert metrics.normalize_answer("  An apple, a day ") == "apple day"


def test_exact_match_normalises_and_takes_any_reference():
    assert metrics.exact_match("The Paris.", "paris") == 1.0
    assert metrics.exact_match("Paris", ["London", "paris"]) == 1.0
    assert metrics.exact_match("Lyon", "Paris") == 0.0
    assert metrics.exact_match("1,000", "1000") == 1.0


def test_f1_is_token_overlap():
    # prediction tokens {cat, sat, on, mat} vs reference {cat, sat}: p = 2/4, r = 2/2
    assert metrics.f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    assert metrics.f1("cat", ["dog", "cat"]) == 1.0
    assert metrics.f1("dog", "cat") == 0.0
    assert metrics.f1("", "") == 1.0 and metrics.f1("the", "cat") == 0.0


def test_accuracy_with_one_or_several_golds():
    assert metrics.accuracy(2, 2) == 1.0 and metrics.accuracy(1, 2) == 0.0
    assert metrics.accuracy(1, [0, 1]) == 1.0


def test_pass_at_k_unbiased_estimator():
    assert metrics.pass_at_k(5, 2, 1) == pytest.approx(1 - 3 / 5)  # 1 - C(3,1)/C(5,1)
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert metrics.pass_at_k(5, 4, 2) == 1.0  # fewer than k failures: any k draws include a pass
    assert metrics.pass_at_k(5, 0, 3) == 0.0
    with pytest.raises(EvaluationError):
        metrics.pass_at_k(2, 1, 3)


def test_bleu_by_hand():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert metrics.bleu([("the cat sat on the mat", ["the cat sat on a mat"])]) == pytest.approx(expected, abs=0.01)
    assert metrics.bleu([["the cat sat on the mat", ["the cat sat on the mat"]]]) == pytest.approx(100)


def test_chrf_identical_and_disjoint():
    assert metrics.chrf([("hello world", ["hello world"])]) == pytest.approx(100)
    assert metrics.chrf([("xyz", ["abc"])]) == pytest.approx(0)


def test_rouge_by_hand():
    scores = metrics.rouge("the cat sat", "the cat sat on")
    assert scores["rouge1"] == pytest.approx(2 * 1 * 0.75 / 1.75)  # p = 3/3, r = 3/4
    assert scores["rouge2"] == pytest.approx(0.8)  # bigrams: p = 2/2, r = 2/3
    assert scores["rougeL"] == pytest.approx(scores["rouge1"])


def test_perplexities_by_hand():
    assert metrics.perplexity([-1.0, -3.0]) == pytest.approx(math.exp(2))
    items = [(-2.0, 1), (-4.0, 3)]
    assert metrics.weighted_perplexity(items) == pytest.approx(math.exp(6 / 4))
    assert metrics.bits_per_byte(items) == pytest.approx(6 / 4 / math.log(2))
    assert metrics.count_words("a b  c") == 3 and metrics.count_bytes("é") == 2


def test_mean_stderr_is_sample_std_over_root_n():
    assert metrics.mean_stderr([1, 0, 1, 0]) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert metrics.mean_stderr([1.0]) is None


def test_aggregate_mean_skips_unscored_items():
    value = metrics.aggregate_metric("acc", [1, 0, 1, 0, None])
    assert value.value == 0.5 and value.stderr == pytest.approx(math.sqrt(1 / 3) / 2) and value.higher_is_better
    assert metrics.aggregate_metric("acc", [None, None]) is None


def test_corpus_metric_gets_a_deterministic_bootstrap_stderr():
    items = [[-float(i), i + 1] for i in range(1, 30)]
    first = metrics.aggregate_metric("word_perplexity", items)
    again = metrics.aggregate_metric("word_perplexity", items)
    assert first == again
    assert first.value == pytest.approx(metrics.weighted_perplexity(items))
    assert first.stderr is not None and first.stderr > 0 and first.higher_is_better is False
    assert metrics.bootstrap_stderr(metrics.mean, [2.0] * 10) == 0.0


def test_unknown_metric_is_refused():
    with pytest.raises(EvaluationError):
        metrics.aggregate_metric("accuracy_of_vibes", [1.0])
    assert metrics.metric_spec("pass@10").higher_is_better


@pytest.mark.parametrize(("reply", "scale", "grade"), [
    ("Rating: [[7]]", "1-10", 7.0), ("I give it 8 out of 10", "1-10", 8.0), ("Score: 9/10", "1-10", 9.0),
    ("6", "1-10", 6.0), ("The answer is fine", "1-10", None), ("Rating: 12", "1-10", None),
    ("3 or maybe 5", "1-10", None), ("Verdict: PASS", "pass_fail", 1.0), ("fail", "pass_fail", 0.0),
    ("unsure", "pass_fail", None),
])
def test_judge_grades_are_parsed(reply, scale, grade):
    assert metrics.parse_judge_grade(reply, scale) == grade


class _ScriptedJudge(EvalModel):
    """Replies with a fixed text and records what it was asked (unit test of the judge protocol)."""

    def __init__(self, reply: str):
        self.info = ModelInfo(id="judge", fingerprint="judge")
        self.reply, self.asked = reply, []

    async def loglikelihood(self, requests, batch_size=8):
        raise NotImplementedError

    async def loglikelihood_rolling(self, requests, batch_size=8):
        raise NotImplementedError

    async def generate(self, requests: list[GenerateRequest], batch_size: int = 8) -> list[str]:
        self.asked.extend(requests)
        return [self.reply for _ in requests]


async def test_llm_judge_asks_with_reference_and_output():
    judge = _ScriptedJudge("The answer matches. [[9]]")
    grade, reply = await metrics.llm_judge(judge, question="Capital of France?", output="Paris",
                                           reference="Paris, France")
    assert grade == 9.0 and "[[9]]" in reply
    [request] = judge.asked
    content = request.messages[-1]["content"]
    assert "Capital of France?" in content and "Paris, France" in content and "Answer to grade:\nParis" in content
    assert request.temperature == 0.0
    with pytest.raises(EvaluationError):
        await metrics.llm_judge(judge, question="q", output="o", reference="r", scale="1-5")
