"""AutoPrompt's automatic verbalizer and writing a found prompt as catalog YAML.

Label-word search (Shin et al., 2020, section 2.2): with the LM frozen, collect what the
output projection sees at the mask for the training examples, fit a multinomial logistic
regression from those features to the labels, then feed every allowed token's *output*
embedding to that classifier: the tokens it assigns most confidently to a label are that
label's words. We use this rather than PETAL's likelihood ratio (Schick et al., 2020)
because it is one classifier fit plus one ``[V, H] @ [H, L]`` product (PETAL scores each
token's likelihood on every example), and it is the method of the AutoPrompt paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from promptkit.atomic import write_text
from promptkit.errors import CatalogError, StrategyError
from promptkit.label_words import tokenize_in_context
from promptkit.scoring import output_features
from promptkit.strategies.autoprompt_search import fit_mask, top_tokens_per_label
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer


def mask_features(model: Any, rows: list[dict[str, Any]]) -> torch.Tensor:
    """``[N, H']`` inputs of the output projection where each example's label word is predicted."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), model.batch_size):
            batch = model.encode(rows[start : start + model.batch_size]).to(model.device)
            with output_features(model.backbone) as features:
                model(batch)
            out.append(features[0][batch.example_rows, 0].float().cpu())
    return torch.cat(out)


def token_log_odds(features: np.ndarray, labels: np.ndarray, vectors: np.ndarray, n_labels: int, seed: int):
    """``[V, L]`` log-odds ``log p(y|v) - log(1 - p(y|v))`` of each label for each row of ``vectors``.

    A seeded multinomial logistic regression fitted on ``features`` -> ``labels`` scores the
    vectors. Log-odds, unlike probabilities, do not saturate to equal values for the
    most confident tokens, so the ranking stays exact.
    """
    from sklearn.linear_model import LogisticRegression

    present = np.unique(labels)
    if len(present) < 2:
        raise StrategyError(f"label-word search needs examples of at least two labels; the training set has {present}")
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(features, labels)
    logits = torch.as_tensor(vectors @ clf.coef_.T + clf.intercept_, dtype=torch.float64)  # [V, C] or [V, 1]
    if logits.size(1) == 1:  # binary: one logit for classes_[1]
        logits = torch.cat([-logits / 2, logits / 2], dim=1)
    full = torch.full((len(vectors), n_labels), float("-inf"), dtype=torch.float64)
    full[:, torch.as_tensor(clf.classes_)] = logits
    odds = torch.empty_like(full)
    for y in range(n_labels):
        others = torch.cat([full[:, :y], full[:, y + 1 :]], dim=1)
        odds[:, y] = full[:, y] - others.logsumexp(-1)
    return odds


def search_label_words(
    model: Any, rows: list[dict[str, Any]], targets: list[int], k: int, allowed: torch.Tensor, seed: int
) -> Verbalizer:
    """A verbalizer of ``k`` words per label found by AutoPrompt's logistic-regression method."""
    features = mask_features(model, rows).double().numpy()
    weight = model.backbone.get_output_embeddings().weight.detach().double().cpu()  # [V, H']
    mask = fit_mask(allowed, weight.size(0))
    ids = mask.nonzero().squeeze(-1)
    n_labels = len(model.verbalizer.labels)
    odds = token_log_odds(features, np.asarray(targets), weight[ids].numpy(), n_labels, seed)
    # Keep only tokens whose bare word tokenizes back to that very token after a space.
    words: dict[int, str] = {}
    order = odds.max(-1).values.argsort(descending=True)[: 50 * k * n_labels]
    for row in order.tolist():
        token_id = int(ids[row])
        word = model.tokenizer.decode([token_id]).strip()
        if word and tokenize_in_context(model.tokenizer, word, True) == (token_id,):
            words[row] = word
    rows_kept = sorted(words)
    picked = top_tokens_per_label(odds[rows_kept], k)
    labels = model.verbalizer.labels
    return Verbalizer({labels[y]: [words[rows_kept[i]] for i in picked[y]] for y in range(n_labels)}, name="autoprompt")


class _Quoted(str):
    """A string YAML writes in double quotes (label words such as 'yes'/'no'/'on' stay strings)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, '"'))


def _merged(path: Path, task: str, kind: str, name: str, entry: dict[str, Any]) -> str:
    """The YAML text of ``path`` (created if missing) with ``entry`` under ``kind`` -> ``name``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path} is not valid YAML ({err}); fix or move it before saving a prompt there") from None
    if data is not None and not isinstance(data, dict):  # never overwrite a file we cannot merge into
        raise CatalogError(f"{path} holds a {type(data).__name__}, not a catalog mapping; move it before saving")
    data = data if data is not None else {"task": task}
    data.setdefault(kind, {})
    data[kind] = {**(data[kind] or {}), name: entry}
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def save_prompt(folder: str | Path, task: str, name: str, template: Template, verbalizer: Verbalizer) -> Path:
    """Write ``templates/<task>.yaml`` and ``verbalizers/<task>.yaml`` entries ``name`` under ``folder``.

    Existing files keep their other entries; every label word is quoted. Read them back
    with :func:`promptkit.catalog.read_templates` / :func:`~promptkit.catalog.read_verbalizers`.
    """
    root = Path(folder)
    for kind in ("templates", "verbalizers"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    words = {label: [_Quoted(w) for w in ws] for label, ws in verbalizer.label_words.items()}
    entry = {"text": template.text, "verbalizer": name, "description": template.description or "AutoPrompt triggers"}
    if template.chat:
        entry["chat"] = True
    for kind, item in (("templates", entry), ("verbalizers", {"label_words": words})):
        path = root / kind / f"{task}.yaml"
        write_text(path, _merged(path, task, kind, name, item))
    return root
