"""iPET (Schick & Schütze, 2021): PET's ensemble trained for several generations on its own pseudo-labels.

Generation 0 is PET's ensemble (trained on the labelled set ``T``); each member of
generation g >= 1 trains on ``T`` plus examples of the unlabelled pool labelled by a random
``sample_ratio`` share of the *other* members of generation g-1. The sizes and the draw are
the pure functions of :mod:`promptkit.strategies.pet_math`; everything else (members,
scores on disk, resuming, distillation) is :class:`~promptkit.strategies.pet.Pet`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from promptkit.lora import LoraSettings
from promptkit.strategies import pet_data as data
from promptkit.strategies.pet import Pet
from promptkit.strategies.pet_math import confidence_sample, ipet_target_size, label_quota, top_confident
from promptkit.strategies.pet_store import PetStore
from promptkit.strategies.registry import register
from promptkit.train_config import TrainConfig

ZERO_SHOT_PER_LABEL = 10
"""Without labelled data, generation 0 trains on the ``ZERO_SHOT_PER_LABEL * scale_factor`` most
confident zero-shot examples per label (content-free calibrated scores of each untrained PVP);
generation g >= 1 on ``ZERO_SHOT_PER_LABEL * n_labels * scale_factor ** (g + 1)`` examples drawn
label-balanced (both capped by the unlabelled pool)."""


@register("ipet")
class IPet(Pet):
    """Iterative PET: ``generations`` of PVP ensembles, each trained on pseudo-labels from the previous one.

    Args (besides :class:`Pet`'s):
        generations: ensembles trained one after the other (>= 1; iPET: 3).
        scale_factor: generation g+1 trains on ``|T| * scale_factor ** (g + 1)`` examples
            (labelled + pseudo-labelled, capped by the unlabelled pool); iPET: 5.
        sample_ratio: the share, in (0, 1], of the previous generation's other members
            that pseudo-label a member's data (at least one); iPET: 0.25.
        start_from: a finished PET or iPET run's ``output_dir``, whose members are loaded
            instead of trained where this run would train them alike: generation 0 of a PET
            run (it *is* PET's ensemble), every generation of an iPET run with the same
            schedule (so 3 generations extend a finished 2-generation run). The PVPs,
            repetitions, member config, seed and data must be that run's (its
            ``settings.json`` is compared, naming each difference). Loaded members are
            copied into ``output_dir`` if given.

    Pseudo-labelled examples keep the labelled set's label distribution
    (:func:`label_quota`) and are drawn without replacement with probability proportional
    to the merged probability of their label (:func:`confidence_sample`). Without labelled
    rows, generation 0 trains on the most confident zero-shot examples per label (see
    :data:`ZERO_SHOT_PER_LABEL`); ``unlabeled`` is then required all the more.
    """

    allows_zero_labels: ClassVar[bool] = True

    def __init__(
        self,
        pvps: Any = None,
        repetitions: int = 3,
        config: TrainConfig | Mapping[str, Any] | None = None,
        distill_config: TrainConfig | Mapping[str, Any] | None = None,
        weighting: str = "wmean",
        temperature: float = 2.0,
        aux_lm_alpha: float | None = None,
        lora: bool | Mapping[str, Any] | LoraSettings = False,
        seed: int = 42,
        output_dir: str | Path | None = None,
        generations: int = 3,
        scale_factor: int = 5,
        sample_ratio: float = 0.25,
        evaluate_on: Any = None,
        start_from: str | Path | None = None,
    ) -> None:
        super().__init__(pvps, repetitions, config, distill_config, weighting, temperature, aux_lm_alpha, lora,
                         seed, output_dir, evaluate_on)  # fmt: skip
        self.generations = self.n_generations = data.check_int("IPet", "generations", generations, 1)
        self.scale_factor = data.check_int("IPet", "scale_factor", scale_factor, 1)
        self.sample_ratio = data.check_number("IPet", "sample_ratio", sample_ratio, 0, 1, "a number in (0, 1]")
        self.start_from = None if start_from is None else str(start_from)

    def _extra_settings(self) -> dict[str, Any]:
        return {"generations": self.generations, "scale_factor": self.scale_factor, "sample_ratio": self.sample_ratio}

    def _take_over(self, store: PetStore, rows: list[dict[str, Any]]) -> None:
        """Generations from ``start_from``: with labelled rows, generation 0 is PET's ensemble whatever the
        schedule; without them it is drawn with ``scale_factor`` and ``sample_ratio``, so those must match."""
        if self.start_from is not None:
            store.take_over(self.start_from, ("scale_factor", "sample_ratio"), labelled=bool(rows))

    def _training_set(self, g, i, p, r, rows, soft_t, pool, previous) -> tuple[list[dict], np.ndarray]:
        """The labelled rows plus rows pseudo-labelled by a random subset of ``previous``' other members."""
        if rows and g == 0:
            return rows, soft_t
        others = [m for m in previous if m.pvp != p or (m.repetition not in (r, -1))] or previous
        rng = np.random.default_rng([self.seed, g, i])
        k = max(1, int(self.sample_ratio * len(others)))
        subset = [others[j] for j in sorted(rng.choice(len(others), size=k, replace=False))]
        probs = self._merge(subset)
        n_labels = probs.shape[1]
        if not rows and g == 0:
            index, labels = top_confident(probs, ZERO_SHOT_PER_LABEL * self.scale_factor)
        else:
            if rows:
                size, distribution = ipet_target_size(len(rows), g - 1, self.scale_factor, len(pool)), soft_t.sum(0)
            else:
                size = min(ZERO_SHOT_PER_LABEL * n_labels * self.scale_factor ** (g + 1), len(pool))
                distribution = np.ones(n_labels)
            index, labels = confidence_sample(probs, label_quota(distribution, size), rng)
        added = np.eye(n_labels)[labels].reshape(len(labels), n_labels)
        new_rows = list(rows) + [pool[j] for j in index]
        return new_rows, added if soft_t is None else np.concatenate([soft_t, added])
