"""PET's inputs: pattern-verbalizer pairs, the data it is given, and the memory-bounded scoring of many rows.

Kept apart from :mod:`promptkit.strategies.pet` so the strategy reads as the method's
steps; everything here checks or converts inputs and names the offending value.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch

from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer
from promptkit.errors import ConfigError, DataError, StrategyError
from promptkit.examples import as_examples
from promptkit.model import PromptModel
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

PVP = tuple[Template, Verbalizer]
SCORE_CHUNK = 1024
"""Rows rendered and scored per call of ``label_log_probs``: memory stays bounded however large the pool."""


def resolve_pvps(pvps: Any) -> list[PVP] | None:
    """``pvps`` as (Template, Verbalizer) pairs.

    None stays None (the model's own prompt is used at fit time). A task name such as
    ``"sst2"`` means every catalog template of that task with its paired verbalizer. A list
    holds ``(template, verbalizer)`` pairs, each a promptkit object or a catalog name
    (``"sst2/it_was"``, ``"sst2/great_terrible"``).
    """
    if pvps is None:
        return None
    if isinstance(pvps, str):
        names = list_templates(pvps)  # CatalogError naming the closest task
        out = [(load_template(n), load_verbalizer(paired_verbalizer(n))) for n in names]
    elif isinstance(pvps, Sequence) and pvps:
        out = []
        for i, pair in enumerate(pvps):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ConfigError(f"pvps[{i}]={pair!r} is invalid: expected a (template, verbalizer) pair")
            template = load_template(pair[0]) if isinstance(pair[0], str) else pair[0]
            verbalizer = load_verbalizer(pair[1]) if isinstance(pair[1], str) else pair[1]
            if not isinstance(template, Template) or not isinstance(verbalizer, Verbalizer):
                raise ConfigError(
                    f"pvps[{i}]=({type(pair[0]).__name__}, {type(pair[1]).__name__}) is invalid: expected a "
                    "promptkit Template (or catalog name) and a Verbalizer (or catalog name)"
                )
            out.append((template, verbalizer))
    else:
        raise ConfigError(f"pvps={pvps!r} is invalid: expected None, a task name such as 'sst2', or a list of pairs")
    check_label_sets(out)
    return out


def check_label_sets(pvps: Sequence[PVP]) -> None:
    """Every verbalizer must have the first one's labels in the same order (their scores are averaged)."""
    first = list(pvps[0][1].labels)
    for i, (_, verbalizer) in enumerate(pvps[1:], start=1):
        labels = list(verbalizer.labels)
        if labels != first:
            missing = [x for x in first if x not in labels]
            extra = [x for x in labels if x not in first]
            what = f"missing {missing}, extra {extra}" if missing or extra else "same labels in another order"
            raise StrategyError(
                f"PVP {i} verbalizer {verbalizer.name!r} has labels {labels} but PVP 0's has {first} ({what}); "
                "every PVP's verbalizer needs the same labels in the same order"
            )


def unlabeled_rows(unlabeled: Any, label_key: str, owner: str) -> list[dict[str, Any]]:
    """The unlabelled rows, without ``label_key`` (a warning says how many carried one); DataError if none."""
    rows = as_examples(unlabeled) if unlabeled is not None else []
    if not rows:
        raise DataError(
            f"{owner}.fit needs unlabeled=... (the unlabelled examples the ensemble labels and the final model is "
            f"distilled on); got {'None' if unlabeled is None else 'no rows'}"
        )
    carrying = sum(label_key in row for row in rows)
    if carrying:
        warnings.warn(
            f"{owner}: ignoring the {label_key!r} values of {carrying} of {len(rows)} unlabeled rows "
            "(unlabelled data is labelled by the ensemble)",
            stacklevel=3,
        )
        rows = [{k: v for k, v in row.items() if k != label_key} for row in rows]
    return rows


def score_rows(model: PromptModel, rows: list[dict], chunk: int = SCORE_CHUNK) -> np.ndarray:
    """``[N, L]`` label log-probs (float32), rendering and scoring ``chunk`` rows at a time.

    ``label_log_probs`` renders all its rows up front; chunking bounds that to ``chunk``
    prompts, so a pool of millions of rows needs memory for its ``[N, L]`` scores only.
    """
    out = np.empty((len(rows), len(model.verbalizer.labels)), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = model.label_log_probs(rows[start : start + chunk], progress=False).numpy()
    return out


def weights_fingerprint(model: PromptModel) -> str:
    """SHA-256 of the backbone's weights and config: members from other starting weights are never mixed in."""
    digest = hashlib.sha256(model.backbone.config.to_json_string(use_diff=True).encode())
    for name, tensor in model.backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pvp_settings(pvps: Sequence[PVP]) -> list[dict[str, Any]]:
    return [{"template": t.text, "chat": t.chat, "verbalizer": [[repr(label), list(words)] for label, words in
             zip(v.labels, v.words, strict=True)]} for t, v in pvps]  # fmt: skip


def check_int(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{owner}.{name}={value!r} is invalid: expected an int >= {low}")
    return value


def check_number(owner: str, name: str, value: Any, low: float, high: float | None, what: str) -> float:
    """A finite real in ``(low, high]`` (``high`` None: no upper bound)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= low or (high is not None and value > high):
        raise ConfigError(f"{owner}.{name}={value!r} is invalid: expected {what}")
    return float(value)


def json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
