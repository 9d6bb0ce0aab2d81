"""benchmarks/pet.py: disjoint seeded pools, aggregation, --merge, and one tiny end-to-end grid on a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _pet_data import draw_pools  # noqa: E402
from _pet_report import aggregate, markdown  # noqa: E402
from pet import main  # noqa: E402

AG = [{"title": f"t{i}", "description": "d", "label": 1 + i % 4, "_pos": i} for i in range(400)]
SST = [{"text": f"s{i}", "label": i % 2, "_pos": i} for i in range(300)]
DEV = [{"text": f"dev{i}", "label": i % 2, "_pos": i} for i in range(50)]


def _pos(rows):
    return {row["_pos"] for row in rows}


@pytest.mark.parametrize("size", [0, 10, 50])
def test_ag_news_pools_are_disjoint_seeded_and_share_the_eval_rows_across_sizes(size):
    files = {"pool": AG, "eval": None, "max_size": 50}
    split = draw_pools("ag_news", size, 13, 100, 0, files)
    assert (len(split.train), len(split.dev), len(split.eval)) == (size, 100, 400 - 50 - 100)
    assert not _pos(split.train) & _pos(split.dev) and not (_pos(split.train) | _pos(split.dev)) & _pos(split.eval)
    assert all("label" not in row for row in split.dev)
    again = draw_pools("ag_news", size, 13, 100, 0, files)
    assert [r["_pos"] for r in again.train] == [r["_pos"] for r in split.train]
    assert _pos(draw_pools("ag_news", size, 21, 100, 0, files).eval) != _pos(split.eval)
    largest = draw_pools("ag_news", 50, 13, 100, 20, files)
    assert _pos(split.eval) >= _pos(largest.eval) and len(largest.eval) == 20  # --eval-limit
    assert _pos(split.train) <= _pos(largest.train) and _pos(split.dev) == _pos(largest.dev)


def test_sst2_and_rte_pools():
    split = draw_pools("sst2", 32, 13, 40, 10, {"pool": SST, "eval": DEV})
    assert len(split.train) == 32 and sorted(r["label"] for r in split.train) == [0] * 16 + [1] * 16
    assert len(split.dev) == 40 and not _pos(split.train) & _pos(split.dev) and split.eval == DEV[:10]
    fewglue = [{"premise": "p0", "hypothesis": "h0", "label": "entailment", "_pos": 0}]
    train = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": "entailment", "_pos": i} for i in range(5)]
    rte = draw_pools("rte", 1, 13, 10, 0, {"pool": train, "eval": DEV, "train": fewglue})
    assert rte.train == fewglue and len(rte.dev) == 4 and "p0" not in {r["premise"] for r in rte.dev}


def test_aggregate_mean_std_variants_and_failures():
    def row(seed, method, accuracy, **extra):
        return {"task": "sst2", "size": 32, "seed": seed, "method": method, "accuracy": accuracy, "seconds": 10.0,
                "peak_rss_mib": 100.0 + seed, **extra}  # fmt: skip

    rows = [row(13, "pet", 0.5, pool_ensemble_accuracy=0.8), row(21, "pet", 0.7), row(42, "pet", None, error="boom"),
            row(13, "pvp_finetune", 0.6, variants={"mean": 0.6, "best": 0.8}),
            row(13, "ipet", None, error="boom")]  # fmt: skip
    by_method = {a["method"]: a for a in aggregate(rows)}
    pet = by_method["pet"]
    assert (pet["n_seeds"], pet["n_failed"], pet["peak_rss_mib"]) == (2, 1, 121.0)
    assert pet["accuracy_mean"] == pytest.approx(0.6) and pet["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert by_method["pvp_finetune (best)"]["accuracy_mean"] == 0.8
    assert by_method["ipet"]["n_seeds"] == 0
    assert (pet["pool_ensemble_mean"], pet["pool_ensemble_seeds"]) == (0.8, 1)  # only the seed that measured it
    table = markdown(aggregate(rows), ["settings line"], ["a note"])
    assert "| sst2 | 32 | pet | 60.0 ± 14.1 | 2 (1 failed) | 10 | 121 | 80.0 (1 of 2 seeds) |" in table
    assert "| sst2 | 32 | pvp_finetune (mean) | 60.0 | 1 | 10 | 113 |  |" in table
    assert "| sst2 | 32 | ipet | failed | 0 (1 failed) |" in table and "- settings line" in table


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, bpe_tokenizer):
    """A 2-layer random-init Llama over SmolLM2's vocabulary, saved with the tokenizer (as conftest's tiny_causal)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=bpe_tokenizer.pad_token_id)  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    return folder


def test_tiny_grid_writes_json_and_markdown_and_merge_reuses_matching_runs(tiny_folder, tmp_path):
    torch.set_num_threads(1)
    base = ["--backbone", str(tiny_folder), "--tasks", "ag_news", "--sizes", "0", "4", "--seeds", "13",
            "--pvps", "ag_news/topic_end", "ag_news/paren", "--steps", "2", "--distill-steps", "2",
            "--batch-size", "2", "--unlabeled", "12", "--eval-limit", "6", "--max-length", "64",
            "--generations", "2", "--output-dir", str(tmp_path / "runs")]  # fmt: skip
    first = tmp_path / "first"
    payload = main([*base, "--out", str(first)])
    name = f"pet_{tiny_folder.name}"
    saved = json.loads((first / f"{name}.json").read_text())
    runs = {(r["size"], r["method"]): r for r in saved["runs"]}
    assert set(runs) == {(0, "ipet"), (0, "zero_shot_cf"), *[(4, m) for m in ("head_finetune", "pvp_finetune",
                                                                               "pet", "ipet")]}  # fmt: skip
    for run in saved["runs"]:
        assert run["error"] is None, run["error"]
        assert 0.0 <= run["accuracy"] <= 1.0 and run["seconds"] > 0 and run["peak_rss_mib"] > 0
        assert (run["n_unlabeled"], run["n_eval"]) == (12, 6)
    single = runs[(4, "pvp_finetune")]  # read off PET's own members, each scored on the evaluation rows
    assert set(single["per_pvp"]) == {"ag_news/topic_end", "ag_news/paren"}
    members = {m[1]: m[2] for m in runs[(4, "pet")]["member_eval"]}
    assert single["per_pvp"] == {"ag_news/topic_end": members[0], "ag_news/paren": members[1]}
    with pytest.raises(SystemExit):  # the baseline needs the PET run it is measured on
        main([*base, "--methods", "pvp_finetune", "--out", str(tmp_path / "none")])
    assert runs[(4, "pet")]["members"] == 2 and Path(runs[(4, "pet")]["store"]).is_dir()
    # iPET's generation 0 is the PET run's: loaded from its store, with its accuracies; only generation 1 trained
    ipet = runs[(4, "ipet")]
    assert ipet["members_loaded"] == 2 and ipet["members"] == 4
    assert [m for m in ipet["member_eval"] if m[0] == 0] == runs[(4, "pet")]["member_eval"]
    assert runs[(0, "ipet")]["members_loaded"] == 0  # no labelled rows: nothing to take over
    for key in ((4, "pet"), (4, "ipet"), (0, "ipet")):  # the teacher, scored with the pool's hidden labels
        assert 0.0 <= runs[key]["pool_ensemble_accuracy"] <= 1.0
    table = (first / f"{name}.md").read_text()
    assert "| ag_news | 4 | pet |" in table and "| ag_news | 0 | zero_shot_cf (best) |" in table
    assert payload["aggregates"] and "peak" in payload["peak_rss"]

    merged = main([*base, "--methods", "pet", "head_finetune", "--out", str(tmp_path / "second"),
                   "--merge", str(first / f"{name}.json")])  # fmt: skip
    assert all(run["reused"] for run in merged["runs"])
    other = main([*base, "--sizes", "4", "--methods", "head_finetune", "--lr-head", "1e-3",
                  "--out", str(tmp_path / "third"), "--merge", str(first / f"{name}.json")])  # fmt: skip
    assert [run["reused"] for run in other["runs"]] == [False]  # another learning rate: run again
    # another distillation: the members and the ensemble come from the same stores, only the distillation runs
    longer = main([*base, "--methods", "pet", "ipet", "--distill-steps", "3", "--out", str(tmp_path / "fourth"),
                   "--merge", str(first / f"{name}.json")])  # fmt: skip
    again = {(r["size"], r["method"]): r for r in longer["runs"]}
    for key in ((4, "pet"), (4, "ipet"), (0, "ipet")):
        assert not again[key]["reused"] and again[key]["settings"]["distill_steps"] == 3
        assert again[key]["store"] == runs[key]["store"]
        assert again[key]["members_loaded"] == again[key]["members"] == runs[key]["members"]
