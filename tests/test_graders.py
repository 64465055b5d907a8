"""OpenAI eval graders: the pure ones against hand-computed values, validation naming the field,
the python grader in the real sandbox, and judge answers parsed into labels and scores."""

from __future__ import annotations

import asyncio
import math

import pytest

from evaluation import graders
from evaluation.openai_evals import OpenAIEvalTask, check_data_source, check_eval_config
from evaluation.requests import EvalModel, EvaluationError, ModelInfo
from evaluation.tasks.base import ScoringContext

ITEM_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
               "required": ["question", "answer"]}


# -- pure graders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation,input,reference,expected", [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0),
    ("ne", "Paris", "Rome", 1.0), ("ne", "Paris", "Paris", 0.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0),
    ("ilike", "It is PARIS.", "paris", 1.0), ("ilike", "It is Rome.", "paris", 0.0),
])
def test_string_check(operation, input, reference, expected):
    assert graders.string_check(input, reference, operation) == expected


def test_fuzzy_match_is_twice_the_matches_over_the_lengths():
    assert graders.text_similarity("abcd", "abce", "fuzzy_match") == pytest.approx(2 * 3 / 8)
    assert graders.text_similarity("same", "same", "fuzzy_match") == 1.0
    assert graders.text_similarity("abc", "xyz", "fuzzy_match") == 0.0


def test_gleu_is_matching_ngrams_over_the_larger_count():
    # hypothesis 1..4-grams: 3+2+1 = 6, all in the reference; reference: 4+3+2+1 = 10
    assert graders.text_similarity("the cat sat", "the cat sat down", "gleu") == pytest.approx(6 / 10)
    from nltk.translate.gleu_score import sentence_gleu

    hyp, ref = "a cat sat on the mat".split(), "the cat sat on a mat".split()
    assert graders.gleu(hyp, ref) == pytest.approx(sentence_gleu([ref], hyp))


def test_rouge_and_bleu_against_hand_computed_values():
    # rouge_1: precision 2/2, recall 2/3 -> F = 2·1·(2/3) / (1 + 2/3) = 0.8
    assert graders.text_similarity("the cat", "the cat sat", "rouge_1") == pytest.approx(0.8)
    # rouge_2: one shared bigram of two on each side -> 0.5
    assert graders.text_similarity("the cat sat", "the cat ran", "rouge_2") == pytest.approx(0.5)
    # rouge_l: LCS 3, precision 3/3, recall 3/4 -> 6/7
    assert graders.text_similarity("a c d", "a b c d", "rouge_l") == pytest.approx(6 / 7)
    assert graders.text_similarity("the cat sat on the mat", "the cat sat on the mat", "bleu") == pytest.approx(1.0)
    assert graders.text_similarity("completely different words", "the cat sat on the mat", "bleu") == 0.0


def test_templates_render_item_and_sample_fields():
    namespaces = {"item": {"answer": "4", "meta": {"tags": ["x", "y"]}}, "sample": {"output_text": "four"}}
    assert graders.render("{{ sample.output_text }} vs {{item.answer}}", namespaces) == "four vs 4"
    assert graders.render("{{item.meta.tags.1}} {{item.meta}}", namespaces) == 'y {"tags": ["x", "y"]}'
    with pytest.raises(EvaluationError, match="no field 'missing'"):
        graders.render("{{item.missing}}", namespaces)


# -- validation at create --------------------------------------------------------------------------


def _criterion(**overrides):
    return {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "eq", **overrides}


@pytest.mark.parametrize("criterion,param", [
    (_criterion(type="regex_check"), "testing_criteria[0].type"),
    (_criterion(operation="contains"), "testing_criteria[0].operation"),
    (_criterion(input="{{output_text}}"), "testing_criteria[0].input"),
    (_criterion(reference="{{item.answr}}"), "testing_criteria[0].reference"),
    (_criterion(reference="{{item.answer}"), "testing_criteria[0].reference"),
    (_criterion(name=""), "testing_criteria[0].name"),
    ({"type": "text_similarity", "name": "m", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "evaluation_metric": "meteor", "pass_threshold": 0.5}, "testing_criteria[0].evaluation_metric"),
    ({"type": "text_similarity", "name": "c", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "evaluation_metric": "cosine", "pass_threshold": 0.5}, "testing_criteria[0].evaluation_metric"),
    ({"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "evaluation_metric": "bleu"}, "testing_criteria[0].pass_threshold"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1 +"},
     "testing_criteria[0].source"),
    ({"type": "python", "name": "p", "source": "def score(sample, item):\n    return 1"},
     "testing_criteria[0].source"),
    ({"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "{{item.answer}}"}],
      "labels": ["good", "bad"], "passing_labels": ["great"]}, "testing_criteria[0].passing_labels"),
    ({"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user", "content": "rate"}],
      "range": [1, 0]}, "testing_criteria[0].range"),
    ({"type": "score_model", "name": "s", "model": "m", "input": [{"role": "judge", "content": "rate"}]},
     "testing_criteria[0].input[0].role"),
])
def test_a_bad_criterion_is_refused_naming_the_field(criterion, param):
    with pytest.raises(EvaluationError) as raised:
        check_eval_config({"type": "custom", "item_schema": ITEM_SCHEMA}, [criterion])
    assert raised.value.param == param, raised.value.message


def test_config_checks_the_schema_the_source_type_and_duplicate_names():
    with pytest.raises(EvaluationError) as raised:
        check_eval_config({"type": "custom", "item_schema": {"type": "no-such-type"}}, [_criterion()])
    assert raised.value.param == "data_source_config.item_schema"
    with pytest.raises(EvaluationError) as raised:
        check_eval_config({"type": "logs"}, [_criterion()])
    assert raised.value.param == "data_source_config.type"
    with pytest.raises(EvaluationError) as raised:
        check_eval_config({"type": "custom", "item_schema": ITEM_SCHEMA}, [_criterion(), _criterion()])
    assert raised.value.param == "testing_criteria[1].name"
    config, criteria = check_eval_config({"type": "custom", "item_schema": ITEM_SCHEMA,
                                          "include_sample_schema": True}, [_criterion()])
    assert config["schema"]["properties"]["item"] == ITEM_SCHEMA and "sample" in config["schema"]["properties"]


def test_rows_are_checked_against_the_item_schema():
    config, criteria = check_eval_config({"type": "custom", "item_schema": ITEM_SCHEMA}, [_criterion()])
    stored = {"id": "eval_x", "name": "x", "data_source_config": config, "testing_criteria": criteria}
    rows = [{"item": {"question": "q", "answer": "a"}}, {"item": {"question": "q", "answer": 4}}]
    with pytest.raises(EvaluationError) as raised:
        check_data_source({"type": "jsonl", "source": {"type": "file_content", "content": rows}}, stored)
    assert raised.value.param == "data_source.source.content[1].item.answer"
    with pytest.raises(EvaluationError) as raised:
        check_data_source({"type": "completions", "source": {"type": "file_content", "content": rows[:1]},
                           "input_messages": {"type": "template", "template": [{"role": "user",
                                                                               "content": "{{item.question}}"}]},
                           "model": "m", "sampling_params": {"top_p": 0.5}}, stored)
    assert raised.value.param == "data_source.sampling_params.top_p"


# -- grading items -------------------------------------------------------------------------------------


async def _sandbox(code: str, timeout_s: float) -> tuple[bool, str]:
    from tools.sandbox import SandboxLimits, run_python

    outcome = await asyncio.to_thread(run_python, code, SandboxLimits(cpu_s=int(timeout_s), wall_s=timeout_s))
    return outcome.error is None, outcome.stdout


@pytest.mark.timeout(120)
async def test_python_grader_runs_in_the_sandbox():
    source = ("def grade(sample, item):\n"
              "    words = sample['output_text'].split()\n"
              "    return sum(w == item['answer'] for w in words) / len(words)\n")
    spec = graders.check_grader({"type": "python", "name": "share", "source": source, "pass_threshold": 0.3}, "c")
    ctx = ScoringContext(execute=_sandbox)
    result = await graders.grade(spec, {"answer": "4"}, {"output_text": "4 plus 4 is 8"}, ctx)
    assert (result.score, result.passed, result.error) == (pytest.approx(2 / 5), True, None)
    broken = graders.check_grader({"type": "python", "name": "b", "source": "def grade(s, i):\n    return 1 / 0\n"},
                                  "c")
    result = await graders.grade(broken, {}, {"output_text": ""}, ctx)
    assert result.error and "ZeroDivisionError" in result.error and not result.passed


class _Judge(EvalModel):
    """Answers every request with fixed text and records the messages it was sent (unit tests of
    the grader's prompt and parsing; real judges are served models, see test_evals_api)."""

    def __init__(self, answer: str):
        self.info = ModelInfo(id="judge", fingerprint="judge")
        self.answer, self.seen = answer, []

    async def loglikelihood(self, requests, batch_size=8):
        raise NotImplementedError

    async def loglikelihood_rolling(self, requests, batch_size=8):
        raise NotImplementedError

    async def generate(self, requests, batch_size=8):
        self.seen += [request.messages for request in requests]
        return [self.answer for _ in requests]


async def test_label_and_score_model_graders_parse_the_judges_answer():
    label = graders.check_grader({"type": "label_model", "name": "tone", "model": "judge",
                                  "input": [{"role": "system", "content": "Classify the tone."},
                                            {"role": "user", "content": "{{sample.output_text}}"}],
                                  "labels": ["polite", "rude"], "passing_labels": ["polite"]}, "c")
    judge = _Judge("The answer is Polite.")

    async def open_judge(model_id: str) -> EvalModel:
        assert model_id == "judge"
        return judge

    ctx = ScoringContext(judge=open_judge)
    result = await graders.grade(label, {}, {"output_text": "Thank you!"}, ctx)
    assert (result.passed, result.score, result.extra["label"]) == (True, 1.0, "polite")
    sent = judge.seen[-1]
    assert sent[-1]["content"].startswith("Thank you!") and "polite, rude" in sent[-1]["content"]
    judge.answer = "no idea"
    result = await graders.grade(label, {}, {"output_text": "x"}, ctx)
    assert (result.passed, result.parsed) == (False, False)

    score = graders.check_grader({"type": "score_model", "name": "q", "model": "judge", "range": [0, 10],
                                  "pass_threshold": 7, "input": [{"role": "user", "content": "Rate it"}]}, "c")
    judge.answer = "Score: 8/10"
    result = await graders.grade(score, {}, {}, ctx)
    assert (result.score, result.passed) == (8.0, True)
    judge.answer = "42"
    assert (await graders.grade(score, {}, {}, ctx)).parsed is False
    assert graders.parse_label("rude, not polite", ["polite", "rude"]) == "rude"
    assert graders.parse_score("about 0.25", 0, 1) == 0.25


async def test_an_eval_task_grades_given_outputs_and_aggregates_pass_rates():
    config, criteria = check_eval_config(
        {"type": "custom", "item_schema": ITEM_SCHEMA},
        [_criterion(), {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                        "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.5}])
    stored = {"id": "eval_t", "name": "t", "data_source_config": config, "testing_criteria": criteria}
    rows = [{"item": {"question": "2+2", "answer": "4"}, "sample": {"output_text": "4"}},
            {"item": {"question": "3+3", "answer": "6"}, "sample": {"output_text": "six"}},
            {"item": {"question": "1+1", "answer": "2"}}]  # no sample: the graders cannot read one
    task = OpenAIEvalTask(stored, check_data_source({"type": "jsonl", "source": {"type": "file_content",
                                                                                 "content": rows}}, stored))
    samples = task.samples()
    assert [s.requests for s in samples] == [[], [], []]
    scores = [await task.score(sample, [], ScoringContext()) for sample in samples]
    assert [s.metrics["passed"] for s in scores] == [1.0, 0.0, 0.0]
    assert [s.metrics["errored"] for s in scores] == [0.0, 0.0, 1.0]
    metrics = task.aggregate(scores)
    assert metrics["pass_rate"].value == pytest.approx(1 / 3)
    assert metrics["pass_rate"].stderr == pytest.approx(math.sqrt((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 2) / math.sqrt(3))
    assert metrics["exact/pass_rate"].value == pytest.approx(1 / 3)
    other = OpenAIEvalTask(stored, check_data_source({"type": "jsonl", "source": {"type": "file_content",
                                                                                  "content": rows[:2]}}, stored))
    assert other.version != task.version  # other rows: never the same cached records
