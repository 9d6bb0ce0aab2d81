"""``PromptClassifier``: a prompt model as a scikit-learn classifier.

It wraps backbone + template + verbalizer + strategy in the estimator contract, so it
drops into ``Pipeline``, ``GridSearchCV`` (over templates, verbalizers, learning rates ...),
``cross_val_score`` and the rest of scikit-learn::

    from sklearn.model_selection import GridSearchCV
    from promptkit import PromptClassifier

    search = GridSearchCV(PromptClassifier(), {"template": ["sst2/it_was", "sst2/review_sentiment"]}, cv=3)
    search.fit(texts, labels)

The constructor only stores its parameters; everything is checked and built in :meth:`fit`.

Inputs ``X`` (one example per row):

* a list (or 1-D array, or pandas Series) of strings: each fills the template's single field;
* a list of dicts, a pandas DataFrame or a ``datasets.Dataset``: rows of named fields;
* a 2-D array (numbers or strings), or a DataFrame of numbers only that lacks the template's
  fields: each row is written as one text, its values joined by spaces (floats with 6
  significant digits), for a template with a single field. This is what scikit-learn's own
  estimator checks feed; ``n_features_in_`` is set from it.

Pickling (joblib, ``GridSearchCV(n_jobs=...)``) stores the fitted model as the files
``PromptModel.save_pretrained`` writes (safetensors, JSON, YAML), never as pickled tensors.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from promptkit import persistence
from promptkit.catalog import load_template, load_verbalizer, paired_verbalizer
from promptkit.errors import ConfigError, DataError, PromptkitError, VerbalizerError, did_you_mean
from promptkit.examples import as_examples
from promptkit.model import PromptModel
from promptkit.strategies import get_strategy
from promptkit.strategies.registry import _STRATEGIES
from promptkit.template import Template
from promptkit.verbalizer import Label, Verbalizer

DEFAULT_TEMPLATE = "Text: {{ text }}\nLabel: {{ mask }}"
_LABEL_KEY = "label"


class PromptClassifier(ClassifierMixin, BaseEstimator):
    """A prompt-based classifier with scikit-learn's ``fit`` / ``predict`` / ``predict_proba`` / ``score``.

    Args:
        backbone: an offline alias (``"smollm2-135m"``), a hub name, a local folder with a
            transformers checkpoint, or a folder written by ``PromptModel.save_pretrained``.
        template: template text (it contains ``{{ mask }}``), a catalog name such as
            ``"sst2/it_was"``, or a :class:`~promptkit.template.Template`. None: the saved
            model's template when ``backbone`` is a saved model, else
            ``"Text: {{ text }}\\nLabel: {{ mask }}"``.
        verbalizer: ``{label: [words]}`` (a single word may be a plain string), a catalog name
            such as ``"sst2/great_terrible"``, or a :class:`~promptkit.verbalizer.Verbalizer`.
            None: the catalog template's paired verbalizer when ``template`` is a catalog
            name, else the saved model's when ``backbone`` is a saved model, else each class's
            own name (``str(label)``) is its label word. Labels the training ``y`` does not have
            are dropped; labels ``y`` has and the verbalizer lacks are an error.
        strategy: a registered strategy name (``promptkit.list_strategies()``); ``"zero_shot"``
            trains nothing and only fits the calibration prior.
        strategy_params: keyword arguments of the strategy, e.g.
            ``{"config": {"max_steps": 100, "learning_rate": 2e-5}}`` for ``"finetune"``.
        calibrate: ``"none"``, ``"content_free"`` or ``"batch"`` (see :class:`PromptModel`).
            A ``"batch"`` prior is fitted on ``unlabeled`` when given to :meth:`fit`, else on
            the training inputs, so predictions never depend on the batch predicted.
        seed: the training seed (``TrainConfig.seed`` and a strategy's own ``seed``) unless
            ``strategy_params`` sets it (a ``TrainConfig`` object sets it too).
        batch_size: examples per forward pass when predicting.
        max_length: most tokens per prompt (None: the model's default).
        device: where the model runs (``"cpu"``, ``"cuda"``); None leaves it where it loads.

    Attributes:
        classes_: the labels seen in ``y``, sorted; ``predict_proba`` columns follow them.
        model_: the fitted :class:`~promptkit.model.PromptModel` (its verbalizer holds
            exactly ``classes_``, in that order); save it with ``model_.save_pretrained``.
        strategy_: the strategy object that fitted it (e.g. ``strategy_.result_``).
        n_features_in_: columns of a 2-D array ``X`` (only set when ``X`` was one).

    Example:
        >>> clf = PromptClassifier(template="sst2/review_sentiment")  # doctest: +SKIP
        >>> clf.fit(["a gem", "a mess"], [1, 0]).predict(["what a delight"])  # doctest: +SKIP
        array([1])
    """

    def __init__(
        self,
        backbone: str = "smollm2-135m",
        template: str | Template | None = None,
        verbalizer: str | Mapping[Label, Any] | Verbalizer | None = None,
        strategy: str = "zero_shot",
        strategy_params: Mapping[str, Any] | None = None,
        calibrate: str = "content_free",
        seed: int = 0,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        self.backbone = backbone
        self.template = template
        self.verbalizer = verbalizer
        self.strategy = strategy
        self.strategy_params = strategy_params
        self.calibrate = calibrate
        self.seed = seed
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, *, unlabeled: Any = None) -> PromptClassifier:
        """Build the prompt model for the classes of ``y`` and run the strategy on ``(X, y)``.

        Args:
            X: the training examples (see the module docstring for the accepted forms).
                The zero-shot strategy learns nothing from them: ``X=None`` is allowed
                there (the classes come from ``y``) unless ``calibrate="batch"`` needs inputs.
            y: one label per row of ``X``; at least two classes.
            unlabeled: examples without labels, passed to the strategy (PET/iPET) and used
                for a ``"batch"`` calibration prior.

        Returns:
            self, fitted.
        """
        for name in ("n_features_in_", "feature_names_in_"):
            self.__dict__.pop(name, None)  # set again below only if X is a 2-D array
        if y is None:
            raise ValueError(
                "PromptClassifier requires y to be passed, but the target y is None; pass one label per example"
            )
        template = self._template()
        y = self._targets(y)
        rows = None if X is None else self._rows(X, template, reset=True)
        if rows is not None and len(rows) != len(y):
            raise DataError(f"X has {len(rows)} examples but y has {len(y)} labels; pass exactly one label per example")
        if len(y) == 0:
            raise DataError("fit() got no examples (empty y); pass at least one example of each of two classes")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise DataError(
                f"y has only one class ({_python(classes[0])!r}) in {len(y)} example(s); a classifier needs at "
                "least two classes to choose between: pass examples of every class"
            )
        if rows is None and self.strategy != "zero_shot":
            raise DataError(
                f"strategy {self.strategy!r} trains on examples, and X is None; pass the training examples as X "
                "(only strategy='zero_shot' may be fitted on y alone)"
            )
        labels = _internal_labels(classes)
        strategy = get_strategy(self.strategy, **self._strategy_params())
        model = self._model(template, labels)
        if rows is not None:
            key = getattr(getattr(strategy, "config", None), "label_key", _LABEL_KEY)
            rows = [{**row, key: labels[int(i)]} for row, i in zip(rows, np.searchsorted(classes, y))]
        extra = None if unlabeled is None else self._rows(unlabeled, template, reset=False)
        prior_inputs = extra if extra is not None else rows
        if self.strategy == "zero_shot":
            model = strategy.fit(model, rows, extra)
        else:
            model = strategy.fit(model, rows, prior_inputs if model.calibrate == "batch" else extra)
        if model.calibration_ is None and model.calibrate == "content_free":
            model.fit_calibration()
        if model.calibration_ is None and model.calibrate == "batch":
            if not prior_inputs:
                raise DataError(
                    "calibrate='batch' needs inputs to estimate its prior and fit() got none (X is None); "
                    "pass X or unlabeled=..., or use calibrate='content_free'"
                )
            model.fit_calibration(prior_inputs)
        self.classes_ = classes
        self.model_ = model
        self.strategy_ = strategy
        return self

    # -------------------------------------------------------------- predict
    def predict_proba(self, X: Any) -> np.ndarray:
        """``[n_examples, n_classes]`` class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, ("model_", "classes_"))
        rows = self._rows(X, self.model_.template, reset=False)
        if not rows:
            return np.empty((0, len(self.classes_)))
        return self.model_.predict_proba(rows).astype(np.float64)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each example, of the dtype of the ``y`` given to :meth:`fit`."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)] if len(proba) else self.classes_[:0]

    # ------------------------------------------------------------- sklearn glue
    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # text is the point
        tags.input_tags.dict = True  # rows of named fields
        # scikit-learn's checks score classifiers on numeric blobs; numbers written as text
        # through a language model are not what it is for, so no accuracy bar applies there.
        tags.classifier_tags.poor_score = True
        return tags

    def __sklearn_clone__(self) -> PromptClassifier:
        """``sklearn.base.clone``: Template and Verbalizer parameters are immutable and shared, not deep-copied."""
        params = self.get_params(deep=False)
        copied = {k: v if isinstance(v, (Template, Verbalizer)) else clone(v, safe=False) for k, v in params.items()}
        new = type(self)(**copied)
        if hasattr(self, "_metadata_request"):
            new._metadata_request = clone(self._metadata_request)
        return new

    def __getstate__(self) -> dict[str, Any]:
        """Pickle support (joblib, scikit-learn's persistence): the fitted model travels as the
        files ``save_pretrained`` writes (safetensors + JSON/YAML), templates as plain data."""
        state = dict(super().__getstate__())
        for key in ("template", "verbalizer"):
            if isinstance(state.get(key), (Template, Verbalizer)):
                state[key] = _Portable(type(state[key]).__name__, state[key].to_dict())
        if isinstance(state.get("model_"), PromptModel):
            state["model_"] = _SavedFiles.of(state["model_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for key in ("template", "verbalizer"):
            if isinstance(state.get(key), _Portable):
                state[key] = state[key].build()
        if isinstance(state.get("model_"), _SavedFiles):
            state["model_"] = state["model_"].load(state.get("device"))
        super().__setstate__(state)

    # ------------------------------------------------------------- internals
    def _saved_backbone(self) -> bool:
        return isinstance(self.backbone, (str, Path)) and persistence.is_saved_model(str(self.backbone))

    def _template(self) -> Template | None:
        """The template parameter as a Template (None: the saved model's)."""
        value = self.template
        if isinstance(value, Template):
            return value
        if value is None:
            return None if self._saved_backbone() else Template(DEFAULT_TEMPLATE, name="default")
        if isinstance(value, str):
            return load_template(value) if _is_catalog_name(value) else Template(value)
        raise ConfigError(
            f"PromptClassifier template={value!r} is a {type(value).__name__}; pass template text with "
            "{{ mask }} (e.g. '{{ text }} It was {{ mask }}.'), a catalog name such as 'sst2/it_was', or a Template"
        )

    def _verbalizer(self) -> Verbalizer | None:
        """The verbalizer parameter as a Verbalizer (None: decided by :meth:`_model`)."""
        value = self.verbalizer
        if value is None or isinstance(value, Verbalizer):
            return value
        if isinstance(value, str):
            return load_verbalizer(value)
        if isinstance(value, Mapping):
            return Verbalizer(dict(value))
        raise ConfigError(
            f"PromptClassifier verbalizer={value!r} is a {type(value).__name__}; pass a mapping such as "
            "{0: ['terrible'], 1: ['great']}, a catalog name such as 'sst2/great_terrible', or a Verbalizer"
        )

    def _model(self, template: Template | None, labels: list[Label]) -> PromptModel:
        """Load the backbone with the template and a verbalizer of exactly ``labels``, in order."""
        options = {"calibrate": self.calibrate, "batch_size": self.batch_size, "max_length": self.max_length,
                   "device": self.device}  # fmt: skip
        verbalizer = self._verbalizer()
        if verbalizer is None and _is_catalog_name(self.template):
            verbalizer = load_verbalizer(paired_verbalizer(self.template))
        if self._saved_backbone():
            model = PromptModel.from_pretrained(str(self.backbone), template=template, **options)
            full = verbalizer if verbalizer is not None else model.verbalizer
        else:
            model, full = None, verbalizer
        chosen = _restricted(full, labels) if full is not None else _class_names(labels)
        if model is None:
            return PromptModel.from_pretrained(str(self.backbone), template=template, verbalizer=chosen, **options)
        model.verbalizer = chosen
        return model

    def _strategy_params(self) -> dict[str, Any]:
        """``strategy_params`` with the seed filled in where the strategy takes one and it is not set."""
        params = dict(self.strategy_params or {})
        try:
            accepted = set(inspect.signature(_STRATEGIES[self.strategy]).parameters)
        except KeyError:
            return params  # get_strategy names the unknown strategy
        if "seed" in accepted and "seed" not in params:
            params["seed"] = self.seed
        if "config" in accepted:
            config = params.get("config")
            if config is None or isinstance(config, Mapping):
                params["config"] = {"seed": self.seed, **(config or {})}
        return params

    def _targets(self, y: Any) -> np.ndarray:
        y = np.asarray(y) if not hasattr(y, "dtype") else y
        if getattr(y, "ndim", 1) == 0:
            raise DataError(f"y must be one label per example (a list or 1-D array), got a single value {y!r}")
        return column_or_1d(y, warn=True)

    def _rows(self, X: Any, template: Template | None, *, reset: bool) -> list[dict[str, Any]]:
        """``X`` as row dicts holding the template's fields; 2-D arrays set or check ``n_features_in_``."""
        if template is None:  # a saved model's template, known once the model is loaded
            template = self.model_.template if hasattr(self, "model_") else self._saved_template()
        fields = sorted(template.variables)
        if isinstance(X, (str, bytes)):
            raise DataError(
                f"X is a single {type(X).__name__} ({X[:60]!r}); pass a list of texts, one per example, "
                f"e.g. [{X[:30]!r}]"
            )
        kind = f"{type(X).__module__}.{type(X).__name__}"
        if sparse.issparse(X):  # scikit-learn's message: dense data is required
            validate_data(self, X, reset=reset, accept_sparse=False)
        if kind.startswith("pandas") and hasattr(X, "columns") and _numeric_table(X, fields):
            rows = self._array_texts(X, fields, reset)
        elif (
            kind.startswith("pandas") and hasattr(X, "columns") or kind.startswith("datasets") or isinstance(X, Mapping)
        ):
            rows = as_examples(X)
        elif kind.startswith("pandas"):  # a Series: one text per row
            rows = self._texts(list(X), fields)
        elif isinstance(X, (list, tuple)) and X and all(isinstance(x, Mapping) for x in X):
            rows = as_examples(list(X))
        elif isinstance(X, (list, tuple)) and all(isinstance(x, str) for x in X):
            rows = self._texts(list(X), fields)
        elif _is_1d_text(X):
            rows = self._texts([str(x) for x in np.asarray(X)], fields)
        else:
            rows = self._array_texts(X, fields, reset)
        _check_fields(rows, template, fields)
        return rows

    def _array_texts(self, X: Any, fields: list[str], reset: bool) -> list[dict[str, Any]]:
        """A 2-D table as one text per row (values joined by spaces); sets or checks ``n_features_in_``."""
        array = validate_data(self, X, reset=reset, dtype=None, ensure_2d=True)
        return self._texts([" ".join(_cell(v) for v in row) for row in array], fields)

    def _texts(self, texts: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        if len(fields) != 1:
            raise DataError(
                f"X is a list of texts, but the template reads {len(fields)} fields {fields}; pass a list of dicts "
                f"or a DataFrame with those fields as keys/columns"
            )
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"X item {i} is {text!r} ({type(text).__name__}), not a text; pass strings")
        return [{fields[0]: text} for text in texts]

    def _saved_template(self) -> Template:
        return persistence._from_yaml(Path(str(self.backbone)) / "template.yaml", Template.from_dict)


# ------------------------------------------------------------------ helpers
def _python(value: Any) -> Any:
    """A numpy scalar as the Python value (``np.int64(1)`` -> ``1``)."""
    return value.item() if isinstance(value, np.generic) else value


def _internal_labels(classes: np.ndarray) -> list[Label]:
    """The model's verbalizer labels for ``classes``: their Python values; whole floats become ints."""
    labels = []
    for value in map(_python, classes):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        labels.append(value if isinstance(value, (int, str)) else str(value))
    if len(set(map(repr, labels))) != len(labels):
        raise DataError(f"the classes {list(classes)} do not map to distinct labels {labels}; use int or str labels")
    return labels


def _class_names(labels: list[Label]) -> Verbalizer:
    """Each class's own name as its label word (the default with no verbalizer)."""
    return Verbalizer({label: [str(label).strip() or repr(label)] for label in labels}, name="class_names")


def _restricted(verbalizer: Verbalizer, labels: list[Label]) -> Verbalizer:
    """``verbalizer`` cut to ``labels``, in that order; labels it lacks are named in the error."""
    missing, hints = [], []
    for label in labels:
        try:
            verbalizer.index(label)
        except VerbalizerError:
            missing.append(label)
            same_text = [known for known in verbalizer.labels if str(known) == str(label)]
            if same_text:
                hints.append(f"{label!r} ({type(label).__name__}) vs {same_text[0]!r} ({type(same_text[0]).__name__})")
    if missing:
        name = f" {verbalizer.name!r}" if verbalizer.name else ""
        hint = (
            f" Types differ: {', '.join(hints)}; convert y's labels."
            if hints
            else did_you_mean(missing[0], verbalizer.labels)
        )
        raise VerbalizerError(
            f"y has label(s) {missing} that the verbalizer{name} lacks; it has {list(verbalizer.labels)}. Add label "
            f"words for them (verbalizer={{label: [words], ...}}) or drop those examples.{hint}"
        )
    return Verbalizer({label: verbalizer.words[verbalizer.index(label)] for label in labels}, name=verbalizer.name)


def _numeric_table(frame: Any, fields: Sequence[str]) -> bool:
    """A DataFrame of numbers only, without the template's fields: a feature table, not rows of text."""
    columns = {str(c) for c in frame.columns}
    return not set(fields) <= columns and all(getattr(t, "kind", "O") in "biufc" for t in frame.dtypes)


def _is_catalog_name(template: Any) -> bool:
    """A template parameter that names a catalog entry (text without jinja markup)."""
    return isinstance(template, str) and "{{" not in template and "{%" not in template


def _cell(value: Any) -> str:
    """One value of a 2-D array row as text (floats with 6 significant digits)."""
    value = _python(value)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _is_1d_text(X: Any) -> bool:
    """A 1-D array(-like) whose items are all strings."""
    if not hasattr(X, "__array__") and not isinstance(X, (list, tuple)):
        return False
    try:
        array = np.asarray(X)
    except (TypeError, ValueError):
        return False
    return array.ndim == 1 and array.size > 0 and all(isinstance(x, str) for x in array.tolist())


def _check_fields(rows: list[dict[str, Any]], template: Template, fields: Sequence[str]) -> None:
    """Every row has every field the template reads; the first row without one is named."""
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(
                f"X row {i} has no field {missing[0]!r}, which template {template.name or template.text!r} reads; "
                f"its fields are {sorted(row)}.{did_you_mean(missing[0], row)} Rename that key/column or pick a "
                f"template over the fields you have"
            )


class _Portable:
    """A Template or Verbalizer as plain data inside a pickle."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        self.kind, self.data = kind, data

    def build(self) -> Template | Verbalizer:
        return Template.from_dict(self.data) if self.kind == "Template" else Verbalizer.from_dict(self.data)


class _SavedFiles:
    """A PromptModel as the bytes of the files ``save_pretrained`` writes (no torch pickling)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @classmethod
    def of(cls, model: PromptModel) -> _SavedFiles:
        scratch = Path(tempfile.mkdtemp(prefix="promptkit-pickle-"))
        try:
            model.save_pretrained(str(scratch / "model"))
            root = scratch / "model"
            return cls({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def load(self, device: str | None) -> PromptModel:
        scratch = Path(tempfile.mkdtemp(prefix="promptkit-unpickle-"))
        try:
            for name, data in self.files.items():
                path = scratch / name
                if not path.resolve().is_relative_to(scratch.resolve()):
                    raise PromptkitError(f"pickled PromptClassifier holds a file outside its folder: {name!r}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            return PromptModel.from_pretrained(str(scratch), device=device)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
