"""PET and iPET (Schick & Schütze, 2021): an ensemble of prompt fine-tunes, distilled into one model.

PET: (1) for every pattern-verbalizer pair (PVP), ``repetitions`` copies of the original
pretrained weights are fine-tuned on the labelled set (:class:`Finetune`, seeds
``seed + index``); (2) each member scores the unlabelled set, and the members' label
log-probs are averaged -- weighted by their PVP's accuracy on the labelled set *before*
training (``"wmean"``) or uniformly (``"mean"``) -- into soft labels; (3) the model passed
to :meth:`Pet.fit`, prompted with the first PVP, is trained on the unlabelled rows to match
those soft labels (:class:`~promptkit.losses.Distillation`, temperature 2).

iPET repeats step (1) for ``generations``: each member of generation g trains on the
labelled set plus examples pseudo-labelled by a random ``sample_ratio`` subset of the
*other* members of generation g-1 (see :mod:`promptkit.strategies.pet_math` for the sizes
and the sampling). The final distillation uses the last generation's ensemble.

Members are trained one at a time and freed, so besides the final model at most one
member and one untouched copy of the starting weights are in memory. With ``output_dir``
every finished member's scores are kept (:mod:`promptkit.strategies.pet_store`); a re-run
skips finished members, and :meth:`Pet.distill` redoes only the distillation.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from promptkit.errors import ConfigError, DataError, StrategyError
from promptkit.examples import as_examples, labels_of, target_distributions
from promptkit.lora import LoraSettings
from promptkit.losses import AuxiliaryLM, Distillation
from promptkit.model import PromptModel
from promptkit.scoring import calibrated
from promptkit.strategies import pet_data as data
from promptkit.strategies.base import StrategyBase
from promptkit.strategies.finetune import Finetune
from promptkit.strategies.pet_math import (
    WEIGHTINGS,
    member_weights,
    merge_log_probs,
)
from promptkit.strategies.pet_store import PetStore, fingerprint
from promptkit.strategies.registry import register
from promptkit.train_config import TrainConfig


@dataclass
class _Member:
    """One finished member: which PVP and repetition (-1: a zero-shot PVP), its scores and its record."""

    pvp: int
    repetition: int
    scores: np.ndarray  # [N, L] label log-probs on the unlabelled rows
    info: dict[str, Any]


@register("pet")
class Pet(StrategyBase):
    """Pattern-Exploiting Training: fine-tune an ensemble of PVPs, label the unlabelled set, distil.

    Args:
        pvps: None (the model's own template and verbalizer), a task name such as ``"sst2"``
            (every catalog template of the task with its paired verbalizer), or a list of
            ``(template, verbalizer)`` pairs (objects or catalog names). All verbalizers need
            the same labels in the same order.
        repetitions: fine-tunes per PVP, with seeds ``seed + index`` (PET: 3).
        config: the members' TrainConfig (or a mapping of its fields); learning rate 1e-5
            and batch size 4 unless set (PET's). Members never write checkpoints.
        distill_config: the final model's TrainConfig; None: the members' config.
        weighting: ``"wmean"`` (by each PVP's pre-training accuracy) or ``"mean"``.
        temperature: distillation temperature, > 0 (PET: 2).
        aux_lm_alpha: None (off) or the weight of PET's auxiliary LM loss on the unlabelled
            rows for the members (PET: 1e-4).
        lora: as for :class:`Finetune`: train LoRA adapters instead of every weight.
        seed: members' seeds are ``seed + 1000 * generation + member index``.
        output_dir: where scores and settings are kept (None: nothing on disk, no resume).
        evaluate_on: labelled rows each trained member is scored on after training; its
            accuracy is kept as ``eval_accuracy`` in ``members_`` (and its member.json).
            They play no part in training, weighting or the ensemble: this is how the
            single-PVP baseline PET's paper reports (the members themselves) is measured.

    Attributes:
        members_: per trained or loaded member: generation, pvp, repetition, seed, accuracy
            (its PVP's before training; None without labelled rows), weight (in its
            generation's ensemble), steps, final_loss, seconds (training, scoring and
            evaluating it), eval_accuracy (on ``evaluate_on``, else None), loaded (from
            output_dir), error.
        pvp_accuracies_: pre-training accuracy of each PVP on the labelled set.
        soft_labels_: ``[N, L]`` the ensemble's soft labels of the unlabelled rows.
        generations_: per generation: training-set ``sizes`` and ``label_counts`` per member.
        trained_: how many members this fit trained (0 when all were loaded).
        result_: the distillation's :class:`~promptkit.train_config.TrainResult`.
    """

    default_learning_rate: ClassVar[float] = 1e-5
    allows_zero_labels: ClassVar[bool] = False
    n_generations: int = 1

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
        evaluate_on: Any = None,
    ) -> None:
        owner = type(self).__name__
        self.pvps = pvps
        self._pvps = data.resolve_pvps(pvps)
        self.repetitions = data.check_int(owner, "repetitions", repetitions, 1)
        self.config = TrainConfig.coerce(config, learning_rate=self.default_learning_rate, batch_size=4)
        self.distill_config = (
            self.config
            if distill_config is None
            else TrainConfig.coerce(distill_config, learning_rate=self.default_learning_rate, batch_size=4)
        )
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"{owner}.weighting={weighting!r} is invalid: expected one of {list(WEIGHTINGS)}")
        self.weighting = weighting
        self.temperature = data.check_number(owner, "temperature", temperature, 0, None, "a number > 0 (PET: 2)")
        if aux_lm_alpha is not None:
            data.check_number(owner, "aux_lm_alpha", aux_lm_alpha, -1e-300, None, "None or a number >= 0 (PET: 1e-4)")
        self.aux_lm_alpha = aux_lm_alpha
        LoraSettings.parse(lora)  # validates now
        self.lora = lora
        self.seed = data.check_int(owner, "seed", seed, 0)
        self.output_dir = None if output_dir is None else str(output_dir)
        self.evaluate_on = evaluate_on
        self._eval_rows = [] if evaluate_on is None else as_examples(evaluate_on)
        self.result_ = None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        model: PromptModel,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        targets: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Train the ensemble, label ``unlabeled`` with it, distil it into ``model`` (in place) and return ``model``.

        ``resume_from`` is an ``output_dir`` (the same as the constructor's): finished members are loaded.
        """
        owner = type(self).__name__
        root = self._root(resume_from)
        rows = as_examples(train) if train is not None else []
        pool = data.unlabeled_rows(unlabeled, self.config.label_key, owner)
        pvps = self._pvps or [(model.template, model.verbalizer)]
        verbalizer = pvps[0][1]
        if not rows and not self.allows_zero_labels:
            raise DataError(f"{owner}.fit needs labelled examples (train); got none. iPET can start without any")
        labels_of(self._eval_rows, verbalizer, self.config.label_key)  # an unknown label fails now, not after training
        if rows and len(rows) < len(verbalizer.labels):
            warnings.warn(f"{owner}: {len(rows)} labelled rows for {len(verbalizer.labels)} labels", stacklevel=2)
        soft_t = None if not rows else target_distributions(rows, targets, verbalizer, self.config.label_key)
        soft_t = None if soft_t is None else soft_t.double().numpy()  # [T, L]
        pristine = model.clone()  # the original weights, before anything trains ``model``
        if model.template.to_dict() != pvps[0][0].to_dict() or model.verbalizer != verbalizer:
            model.template, model.verbalizer = pvps[0]
        store = PetStore(root, self._settings(pvps, rows, soft_t, pool, model))
        store.open()
        self._take_over(store, rows)
        self.members_, self.generations_, self.trained_ = [], [], 0
        self.pvp_accuracies_: list[float | None] = [None] * len(pvps)
        self._accuracy_known = [False] * len(pvps)
        last = self._run(pristine, pvps, rows, soft_t, pool, store)
        del pristine
        gc.collect()
        self.soft_labels_ = self._merge(last)
        store.save_ensemble(self.soft_labels_)
        return self._distill(model, pool, self.soft_labels_, dev)

    def distill(self, model: PromptModel, unlabeled: Any, *, dev: Any = None) -> PromptModel:
        """Redo only the distillation from ``output_dir``'s saved ensemble (no member is trained).

        ``unlabeled`` must be the rows the ensemble scored (checked by fingerprint); the
        constructor's ``distill_config`` and ``temperature`` apply, so they may differ from the run's.
        """
        store = PetStore(self._root(None), {})
        saved = store.saved_settings()
        pool = data.unlabeled_rows(unlabeled, self.config.label_key, type(self).__name__)
        if fingerprint(pool) != saved["data"]["unlabeled"]:
            raise DataError(
                f"distill: these {len(pool)} unlabeled rows are not the {saved['data']['n_unlabeled']} rows the "
                f"ensemble in {self.output_dir} scored; pass the same unlabeled rows"
            )
        labels = [repr(label) for label in model.verbalizer.labels]
        if labels != saved["labels"]:
            raise StrategyError(f"distill: the model's labels {labels} are not the ensemble's {saved['labels']}")
        self.soft_labels_ = store.load_ensemble()
        return self._distill(model, pool, self.soft_labels_, dev)

    # ------------------------------------------------------------ the steps
    def _run(self, pristine, pvps, rows, soft_t, pool, store) -> list[_Member]:
        """Every generation's members; returns the last generation's."""
        members = [(p, r) for p in range(len(pvps)) for r in range(self.repetitions)]
        todo = sum(not store.has_member(g, p, r) for g in range(self.n_generations) for p, r in members)
        bar = tqdm(total=todo, desc=f"{self.name} members", unit="member", disable=not self.config.progress)
        previous = None if rows else self._zero_shot(pristine, pvps, pool)
        try:
            for g in range(self.n_generations):
                current, failures, sizes, counts = [], [], [], []
                for i, (p, r) in enumerate(members):
                    train_rows, train_soft = self._training_set(g, i, p, r, rows, soft_t, pool, previous)
                    sizes.append(len(train_rows))
                    counts.append(np.bincount(train_soft.argmax(-1), minlength=train_soft.shape[1]).tolist())
                    member = self._member(store, pristine, pvps, g, i, p, r, train_rows, train_soft, pool, bar)
                    if isinstance(member, str):
                        failures.append(f"generation {g} member {p}-{r}: {member}")
                    else:
                        current.append(member)
                if not current:
                    raise StrategyError(f"{self.name}: every member failed:\n  " + "\n  ".join(failures))
                weights = member_weights([m.info["accuracy"] for m in current], self.weighting)
                for member, weight in zip(current, weights, strict=True):
                    member.info["weight"] = float(weight)
                self.generations_.append({"generation": g, "sizes": sizes, "label_counts": counts})
                previous = current
        finally:
            bar.close()
        return previous

    def _member(self, store, pristine, pvps, g, i, p, r, train_rows, train_soft, pool, bar) -> _Member | str:
        """Load member (g, p, r) from ``store`` or train and score it; a failure is returned as its reason."""
        saved = store.load_member(g, p, r)
        if saved is not None:
            scores, info = saved
            self.pvp_accuracies_[p], self._accuracy_known[p] = info["accuracy"], True
            record = {**info, "loaded": True}
        else:
            template, verbalizer = pvps[p]
            seed = self.seed + 1000 * g + i
            model = strategy = None
            start = time.perf_counter()
            try:
                accuracy = self._accuracy(pristine, pvps, p)
                model = pristine.with_prompt(template, verbalizer).clone()
                config = replace(self.config, seed=seed, output_dir=None, save_every=0)
                loss = None if self.aux_lm_alpha is None else AuxiliaryLM(pool, self.aux_lm_alpha, seed=seed)
                strategy = Finetune(config=config, lora=self.lora, loss=loss)
                strategy.fit(model, train_rows, targets=train_soft)
                scores = data.score_rows(model, pool)
                evaluated = self._evaluate(model)
                done = strategy.result_
            except Exception as err:  # noqa: BLE001 - one member's failure must not lose the others
                self.members_.append({"generation": g, "pvp": p, "repetition": r, "seed": seed, "error": repr(err)})
                return f"{type(err).__name__}: {err}"
            finally:
                del model, strategy  # at most one member in memory
                gc.collect()
            result = {"steps": done.steps, "final_loss": done.losses[-1] if done.losses else None,
                      "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
            info = {"generation": g, "pvp": p, "repetition": r, "seed": seed, "accuracy": accuracy, **result,
                    "eval_accuracy": evaluated}  # fmt: skip
            store.save_member(g, p, r, scores, info)
            self.trained_ += 1
            bar.update(1)
            record = {**info, "loaded": False}
        record["error"] = None
        self.members_.append(record)
        return _Member(p, r, scores, record)

    def _accuracy(self, pristine: PromptModel, pvps: list, p: int) -> float | None:
        """PVP ``p``'s accuracy on the labelled rows with the untrained weights (None without labelled rows)."""
        rows, soft_t = self._labeled
        if not self._accuracy_known[p]:
            if rows:
                proba = pristine.with_prompt(*pvps[p]).predict_proba(rows, progress=False)
                self.pvp_accuracies_[p] = float((proba.argmax(-1) == soft_t.argmax(-1)).mean())
            self._accuracy_known[p] = True
        return self.pvp_accuracies_[p]

    def _evaluate(self, model: PromptModel) -> float | None:
        """A trained member's accuracy on ``evaluate_on`` (None without it)."""
        if not self._eval_rows:
            return None
        return model.score(self._eval_rows, label_key=self.config.label_key, progress=False)

    def _training_set(self, g, i, p, r, rows, soft_t, pool, previous) -> tuple[list[dict], np.ndarray]:
        """PET: every member trains on the labelled rows (iPET overrides this for later generations)."""
        return rows, soft_t

    def _zero_shot(self, pristine: PromptModel, pvps: list, pool: list[dict]) -> list[_Member]:
        """iPET without labelled rows: each PVP's untrained, content-free calibrated scores ("generation -1")."""
        members = []
        for p, pvp in enumerate(pvps):
            model = pristine.with_prompt(*pvp)
            scores = calibrated(torch.from_numpy(data.score_rows(model, pool)), model.content_free_prior())
            members.append(_Member(p, -1, scores.numpy(), {"accuracy": None}))
        return members

    def _merge(self, members: list[_Member]) -> np.ndarray:
        """Soft labels ``[N, L]`` from ``members``' scores and weights (see :func:`merge_log_probs`)."""
        weights = member_weights([m.info["accuracy"] for m in members], self.weighting)
        return merge_log_probs(np.stack([m.scores for m in members]), weights)

    def _distill(self, model: PromptModel, pool: list[dict], soft: np.ndarray, dev: Any) -> PromptModel:
        strategy = Finetune(config=self.distill_config, lora=self.lora, loss=Distillation(self.temperature))
        strategy.fit(model, pool, pool, dev=dev, targets=soft)
        self.result_ = strategy.result_
        return model

    # ------------------------------------------------------------ bookkeeping
    def _root(self, resume_from: str | Path | None) -> str | None:
        if resume_from is not None and self.output_dir is not None and Path(resume_from) != Path(self.output_dir):
            raise ConfigError(
                f"resume_from={str(resume_from)!r} differs from output_dir={self.output_dir!r}; pass one of them"
            )
        return str(resume_from) if resume_from is not None else self.output_dir

    def _settings(self, pvps, rows, soft_t, pool, model: PromptModel) -> dict[str, Any]:
        """Every setting that changes the members' scores; a folder made with others is refused."""
        self._labeled = (rows, soft_t)
        member = self.config.to_dict()
        for volatile in ("progress", "output_dir", "save_every", "seed"):
            member.pop(volatile)
        lora = LoraSettings.parse(self.lora)
        settings = {
            "strategy": self.name, "pvps": data.pvp_settings(pvps),
            "labels": [repr(label) for label in pvps[0][1].labels], "repetitions": self.repetitions,
            "member_config": member, "weighting": self.weighting, "aux_lm_alpha": self.aux_lm_alpha,
            "lora": None if lora is None else data.json_ready(vars(lora)), "seed": self.seed,
            "calibrate": model.calibrate, "weights": data.weights_fingerprint(model),
            "data": {"labeled": fingerprint([rows, None if soft_t is None else soft_t.tolist()]),
                     "unlabeled": fingerprint(pool), "n_labeled": len(rows), "n_unlabeled": len(pool),
                     "evaluate_on": fingerprint(self._eval_rows) if self._eval_rows else None},
        }  # fmt: skip
        settings.update(self._extra_settings())
        return data.json_ready(settings)

    def _extra_settings(self) -> dict[str, Any]:
        return {}

    def _take_over(self, store: PetStore, rows: list[dict[str, Any]]) -> None:
        """Where members come from besides ``store`` (:class:`~promptkit.strategies.pet_ipet.IPet`'s ``start_from``)."""
