"""LAMA T-REx fact probing: LAMA's manual templates against AutoPrompt triggers (P@1, P@10, MRR).

For each relation of ``../shared/data/lama_trex`` (AutoPrompt's ``original_rob`` split, see
its PROVENANCE: 28 relations have a test file), subjects fill ``[X]`` and the mask replaces
``[Y]``. The label set is the union of the run's relations' objects that are one token for
the backbone (spelled after a space); facts whose object is not are dropped and counted.
A causal head reads the mask at the end, so it runs only relations whose ``[Y]`` comes last
once the final `` .`` is dropped; a masked LM runs every relation.

Two prompts per relation, both scored on its test split:

- ``manual``: LAMA's template (``[X] was born in [Y] .``);
- ``autoprompt``: ``[X] {{ trigger(n) }} [Y]`` with triggers searched on the relation's
  train split (capitalised tokens filtered out, as AutoPrompt does for facts), the best set
  on its dev split kept.

Overall figures are the mean over relations (LAMA's macro average) and over facts (micro).

    python benchmarks/lama.py                                        # smollm2-135m, CPU subset
    python benchmarks/lama.py --backbone splade-tiny                 # the masked-LM path
    python benchmarks/lama.py --relations P19 P20 P103 --iterations 60
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402
from _plots import score_bars  # noqa: E402

from promptkit import PromptModel, Template, Verbalizer, get_strategy  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from promptkit.errors import DataError  # noqa: E402
from promptkit.label_words import tokenize_in_context  # noqa: E402
from promptkit.tasks import data_root  # noqa: E402

# [Y] last (causal-ready), distinct answer types: a city, a language, a company, an instrument.
DEFAULT_RELATIONS = ("P19", "P103", "P176", "P1303")
SPLITS = ("train", "dev", "test")


def read_relations(root: Path, wanted: list[str]) -> dict[str, dict]:
    """``{relation: {"template": LAMA text, "train"/"dev"/"test": facts}}``; a missing test file is an error."""
    templates = {}
    for line in (root / "relations.jsonl").read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            templates[item["relation"]] = item["template"]
    out = {}
    for relation in wanted:
        if relation not in templates:
            raise DataError(f"--relations {relation!r}: not a LAMA relation (e.g. {', '.join(DEFAULT_RELATIONS)})")
        facts = {}
        for split in SPLITS:
            path = root / "original_rob" / relation / f"{split}.jsonl"
            if not path.exists():
                raise DataError(f"{path} is missing (see {root / 'PROVENANCE.md'}: 13 test files are absent)")
            facts[split] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[relation] = {"template": templates[relation], **facts}
    return out


def causal_ready(lama_template: str) -> bool:
    """Whether ``[Y]`` comes last once a final `` .`` is dropped (a causal head scores the mask at the end)."""
    return lama_template.removesuffix(" .").rstrip().endswith("[Y]")


def prompt_text(lama_template: str, head: str, triggers: int = 0) -> str:
    """LAMA's ``[X] ... [Y] .`` as template text; with ``triggers``, AutoPrompt's ``[X] [T]*n [Y]``."""
    text = "[X] {{ trigger(" + str(triggers) + ") }} [Y] ." if triggers else lama_template
    if head == "causal":
        text = text.removesuffix(" .").rstrip()
    return text.replace("[X]", "{{ sub }}").replace("[Y]", "{{ mask }}")


def label_set(tokenizer, objects: list[str]) -> list[str]:
    """The objects that are one token after a space, one object per token (first seen), in order."""
    seen: dict[int, str] = {}
    for obj in dict.fromkeys(objects):
        ids = tokenize_in_context(tokenizer, obj, True)
        if len(ids) == 1 and ids[0] not in seen:
            seen[ids[0]] = obj
    return list(seen.values())


def rows(facts: list[dict], labels: set[str]) -> list[dict]:
    return [{"sub": f["sub_label"], "label": f["obj_label"]} for f in facts if f["obj_label"] in labels]


def ranks(model: PromptModel, facts: list[dict]) -> torch.Tensor:
    """``[N]`` rank of each fact's object among the label set (1 = top)."""
    log_probs = model.label_log_probs(facts, progress=False)
    gold = torch.tensor([model.verbalizer.index(f["label"]) for f in facts])
    gold_scores = log_probs[torch.arange(len(facts)), gold]
    return (log_probs > gold_scores[:, None]).sum(-1) + 1


def metrics(rank: torch.Tensor) -> dict[str, float]:
    rank = rank.double()
    return {"p_at_1": float((rank <= 1).double().mean()), "p_at_10": float((rank <= 10).double().mean()),
            "mrr": float((1 / rank).mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--relations", nargs="+", default=list(DEFAULT_RELATIONS))
    parser.add_argument("--triggers", type=int, default=5, help="trigger tokens between subject and object")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dev-every", type=int, default=10)
    parser.add_argument("--dev-limit", type=int, default=200, help="dev facts that select triggers")
    parser.add_argument("--test-limit", type=int, default=None, help="first N test facts per relation (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    backbone, tokenizer, head = load_backbone(args.backbone)
    backbone.requires_grad_(False)
    relations = read_relations(data_root() / "lama_trex", args.relations)
    skipped = sorted(r for r, data in relations.items() if head == "causal" and not causal_ready(data["template"]))
    relations = {r: data for r, data in relations.items() if r not in skipped}
    if not relations:
        raise DataError(f"none of {args.relations} has [Y] last, which a causal head needs; pick others")
    objects = [f["obj_label"] for data in relations.values() for split in SPLITS for f in data[split]]
    labels = label_set(tokenizer, objects)
    verbalizer = Verbalizer({label: [label] for label in labels})
    keep = set(labels)

    results, kept = [], {}
    for relation, data in relations.items():
        usable = {split: rows(data[split], keep) for split in SPLITS}
        kept[relation] = {split: [len(usable[split]), len(data[split])] for split in SPLITS}
        train, dev, test = usable["train"], usable["dev"][: args.dev_limit], usable["test"][: args.test_limit]
        manual = PromptModel(backbone, tokenizer, Template(prompt_text(data["template"], head)), verbalizer,
                             head=head)  # fmt: skip
        results.append({"relation": relation, "prompt": "manual", "template": manual.template.text,
                        "n_test": len(test), **metrics(ranks(manual, test))})  # fmt: skip
        searched = PromptModel(backbone, tokenizer, Template(prompt_text("", head, args.triggers)), verbalizer,
                               head=head)  # fmt: skip
        strategy = get_strategy(
            "autoprompt", n_candidates=args.candidates, iterations=args.iterations, batch_size=args.batch_size,
            dev_every=args.dev_every, seed=args.seed, filter="no_capitals",
        )  # fmt: skip
        start = time.perf_counter()
        strategy.fit(searched, train, dev=dev)
        seconds = time.perf_counter() - start
        written = strategy.template_.text if strategy.template_ is not None else None
        results.append({"relation": relation, "prompt": "autoprompt", "template": written, "n_test": len(test),
                        "search_seconds": seconds, **metrics(ranks(searched, test))})  # fmt: skip
        logging.info("%s: %s", relation, results[-2:])

    overall = []
    for prompt in ("manual", "autoprompt"):
        mine = [r for r in results if r["prompt"] == prompt]
        n = sum(r["n_test"] for r in mine)
        for key in ("p_at_1", "p_at_10", "mrr"):
            macro = sum(r[key] for r in mine) / len(mine)
            micro = sum(r[key] * r["n_test"] for r in mine) / n
            overall.append({"prompt": prompt, "metric": key, "macro": macro, "micro": micro})
    n_facts = sum(v["test"][0] for v in kept.values())
    table = markdown_table(results, ["relation", "prompt", "template", "n_test", "p_at_1", "p_at_10", "mrr"])
    table += "\n\n" + markdown_table(overall, ["prompt", "metric", "macro", "micro"])
    table += (
        f"\n\nLAMA T-REx (original_rob), frozen {args.backbone} ({head} head). Label set: {len(labels)} objects, "
        f"one token each for this backbone; test facts kept {n_facts} of "
        f"{sum(v['test'][1] for v in kept.values())}. Relations skipped (no [Y] last, causal head): "
        f"{skipped or 'none'}. Search: {args.iterations} iterations x {args.candidates} candidates, batch "
        f"{args.batch_size}, {args.triggers} triggers, capitalised tokens filtered, best of dev every "
        f"{args.dev_every} on {args.dev_limit} dev facts; test limit {args.test_limit or 'none'}; seed {args.seed}."
    )
    payload = {"backbone": args.backbone, "head": head, "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "n_labels": len(labels), "kept": kept, "skipped": skipped, "results": results, "overall": overall,
               "environment": environment()}  # fmt: skip
    path = write_results(f"lama_{Path(args.backbone).name}", payload, table, args.out)
    score_bars(
        path.with_suffix(".png"),
        f"LAMA T-REx test, frozen {args.backbone}: P@1",
        [f"{r['relation']} · {r['prompt']}" for r in results],
        [r["p_at_1"] for r in results],
        xlabel="P@1",
    )
    print(f"\n{table}\n\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
