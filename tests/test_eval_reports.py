"""Leaderboards and comparisons: the numbers appear where they should, the chart is a real PNG."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from evaluation.metrics import MetricValue
from evaluation.reports import compare, leaderboard
from evaluation.results import ResultStore, TaskResult


def result(model: str, task: str, **metrics: tuple[float, float | None]) -> TaskResult:
    return TaskResult(task=task, task_version="1", model=model, model_fingerprint=f"fp-{model}", num_fewshot=0,
                      seed=1234, limit=None, chat_template=False, samples=200, unparsed=0,
                      metrics={name: MetricValue(value, stderr) for name, (value, stderr) in metrics.items()},
                      cached=0, seconds=1.0)


RESULTS = [
    result("base", "arc_easy", acc=(0.4312, 0.0207), acc_norm=(0.3991, 0.0205)),
    result("base", "piqa", acc=(0.6015, 0.0114)),
    result("tuned", "arc_easy", acc=(0.5120, 0.0209), acc_norm=(0.4700, 0.0210)),
    result("tuned", "piqa", acc=(0.6100, 0.0113)),
    result("other", "arc_easy", acc=(0.2500, 0.0190)),
]


def test_leaderboard_markdown_ranks_models_and_shows_each_score_with_its_error():
    board = leaderboard(RESULTS)
    text = board.markdown()
    lines = text.strip().splitlines()
    assert lines[0] == "| model | arc_easy (acc) | piqa (acc) | average |"
    assert lines[2] == "| tuned | 0.5120 ± 0.0209 | 0.6100 ± 0.0113 | 0.5610 |"
    assert lines[3] == "| base | 0.4312 ± 0.0207 | 0.6015 ± 0.0114 | 0.5164 |"
    assert lines[4] == "| other | 0.2500 ± 0.0190 | — | — |"  # not on every task: no average, listed last


def test_leaderboard_csv_and_json_carry_the_numbers():
    board = leaderboard(RESULTS)
    rows = list(csv.DictReader(io.StringIO(board.csv())))
    assert len(rows) == 5
    tuned_arc = next(r for r in rows if r["model"] == "tuned" and r["task"] == "arc_easy")
    assert (tuned_arc["metric"], float(tuned_arc["value"]), float(tuned_arc["stderr"])) == ("acc", 0.512, 0.0209)
    data = json.loads(board.json())
    assert [row["model"] for row in data["data"]] == ["tuned", "base", "other"]
    assert data["data"][1]["scores"]["piqa"] == {"metric": "acc", "value": 0.6015, "stderr": 0.0114,
                                                 "higher_is_better": True, "samples": 200}
    assert data["data"][0]["average"] == pytest.approx((0.512 + 0.61) / 2)


def test_leaderboard_metric_choice_and_newest_result_wins():
    newer = result("base", "arc_easy", acc=(0.45, 0.02), acc_norm=(0.41, 0.02))
    board = leaderboard(RESULTS + [newer], metrics={"arc_easy": "acc_norm"})
    assert board.cells[("base", "arc_easy")].value == 0.41
    assert "arc_easy (acc_norm)" in board.markdown()
    assert ("other", "arc_easy") not in board.cells  # it has no acc_norm


def test_leaderboard_png_is_a_real_chart(tmp_path):
    path = leaderboard(RESULTS).png(tmp_path / "board.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # bars, error bars, labels and a legend, not an empty canvas
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] >= 600 and len(image.getcolors(1_000_000) or []) > 20


def test_leaderboard_from_the_store_reads_the_newest_result_per_model_and_task(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    for r in RESULTS:
        store.put_result(r)
    store.put_result(result("base", "piqa", acc=(0.7, 0.01)))
    board = leaderboard(store.task_results())
    assert board.cells[("base", "piqa")].value == 0.7 and len(board.cells) == 5
    store.close()


def test_compare_gives_the_delta_its_confidence_interval_and_a_note():
    base, tuned = RESULTS[0], RESULTS[2]
    comparison = compare(base, tuned)
    acc = comparison.deltas[0]
    half = 1.959964 * math.sqrt(0.0207**2 + 0.0209**2)
    assert acc.metric == "acc" and acc.delta == pytest.approx(0.0808)
    assert (acc.ci_low, acc.ci_high) == (pytest.approx(0.0808 - half), pytest.approx(0.0808 + half))
    assert acc.within_noise is False and acc.better == "b" and comparison.within_noise is False
    assert "tuned is better, beyond noise" in comparison.note and "+0.0808" in comparison.note
    assert [d.metric for d in comparison.deltas] == ["acc", "acc_norm"]
    assert "| acc_norm | 0.3991 | 0.4700 | +0.0709 |" in comparison.markdown()


def test_compare_says_when_a_difference_is_within_noise():
    comparison = compare(RESULTS[1], RESULTS[3])
    assert comparison.within_noise is True and comparison.deltas[0].better is None
    assert comparison.deltas[0].ci_low < 0 < comparison.deltas[0].ci_high
    assert "within noise" in comparison.text() and "200 samples" in comparison.text()


def test_compare_lower_is_better_and_missing_errors():
    a = result("a", "wiki", word_perplexity=(30.0, 0.5))
    b = result("b", "wiki", word_perplexity=(25.0, 0.5))
    a.metrics["word_perplexity"].higher_is_better = b.metrics["word_perplexity"].higher_is_better = False
    assert compare(a, b).deltas[0].better == "b"
    no_error = compare(result("a", "t", acc=(0.5, None)), result("b", "t", acc=(0.6, None)))
    assert no_error.deltas[0].within_noise is None and "cannot tell" in no_error.note
    assert "not comparable" in compare(RESULTS[0], RESULTS[1]).note
