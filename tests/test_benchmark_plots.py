"""Benchmark metrics (sklearn.metrics) and the PNGs the benchmark scripts save next to their JSON."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import few_shot  # noqa: E402
import speed  # noqa: E402
from _few_shot_report import plot  # noqa: E402
from _metrics import accuracy, classification_scores  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_classification_scores_come_out_in_label_order():
    scores = classification_scores(["a", "b", "b", "c"], ["a", "b", "a", "a"], labels=["a", "b", "c"])
    assert scores["accuracy"] == 0.5
    # rows are true labels, columns predicted; "c" is never predicted, so its F1 is 0 and still averaged
    assert scores["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [1, 0, 0]]
    f1_a, f1_b = 2 * (1 / 3 * 1) / (1 / 3 + 1), 2 * (1 * 0.5) / (1 + 0.5)
    assert scores["macro_f1"] == pytest.approx((f1_a + f1_b + 0.0) / 3)
    assert json.loads(json.dumps(scores)) == scores  # JSON-ready
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)


def test_few_shot_scores_include_the_confusion_matrix():
    rows = [{"label": 0}, {"label": 1}, {"label": 1}]
    assert few_shot.scores("sst2", rows, [0, 0, 1])["confusion_matrix"] == [[1, 0], [1, 1]]


@pytest.mark.parametrize("name", ["few_shot_smollm2-135m_sst2_demos", "few_shot_smollm2-135m_cb"])
def test_few_shot_replot_draws_the_png_next_to_a_results_file(tmp_path, name):
    pytest.importorskip("matplotlib")
    results = tmp_path / f"{name}.json"
    shutil.copy(BENCHMARKS / "results" / f"{name}.json", results)
    few_shot.main(["--replot", str(results)])
    assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_MAGIC)


def test_few_shot_plot_against_k_for_several_k(tmp_path):
    pytest.importorskip("matplotlib")
    aggregates = [{"task": "rte", "k": k, "method": m, "n_seeds": 2, "accuracy_mean": 0.5 + k / 100,
                   "accuracy_std": 0.01} for k in (4, 16) for m in ("zero_shot", "prompt_finetune")]  # fmt: skip
    path = plot(aggregates, ["rte"], ["zero_shot", "prompt_finetune"], tmp_path / "k.png", "title")
    assert path == tmp_path / "k.png" and path.read_bytes().startswith(PNG_MAGIC)


def test_speed_replot_draws_the_png(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "speed_smollm2-135m.json"
    shutil.copy(BENCHMARKS / "results" / "speed_smollm2-135m.json", results)
    speed.main(["--replot", str(results)])
    assert (tmp_path / "speed_smollm2-135m.png").read_bytes().startswith(PNG_MAGIC)


def test_replot_of_a_file_that_is_not_a_result_names_it(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="notes.json: cannot read it as a few_shot results file"):
        few_shot.main(["--replot", str(bad)])
