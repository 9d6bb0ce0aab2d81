"""What the ``promptkit`` command line is told: prompts by name and the ``train`` YAML file.

Templates are named three ways: a catalog name (``sst2/review_sentiment``), a promptsource
template (``promptsource:glue/sst2/review``) or jinja text with ``{{ mask }}``. Verbalizers:
a catalog name, or a mapping written as YAML/JSON (``{0: [terrible], 1: [great]}``); without
one, a catalog or promptsource template brings its own.

``promptkit train CONFIG.yaml`` reads this schema (unknown keys are errors that name the
closest valid key; relative paths are relative to the config file's folder)::

    model: smollm2-135m                  # required: backbone alias, hub name, folder, or a saved model
    template: sst2/review_sentiment      # required unless model is a saved model
    verbalizer: sst2/positive_negative   # optional: default the template's own
    calibrate: content_free              # optional: none | content_free | batch
    max_length: 256                      # optional
    batch_size: 16                       # optional: examples per forward pass when scoring
    strategy: finetune                   # required: any of promptkit.list_strategies()
    params:                              # optional: the strategy's keyword arguments
      config: {learning_rate: 2.0e-5, max_steps: 100, batch_size: 8, seed: 13}
    train: {task: sst2, split: train, k: 16, seed: 13}   # or a .jsonl/.csv file
    dev: {task: sst2, split: dev, limit: 200}            # optional, selects the best weights
    unlabeled: unlabeled.jsonl                           # optional
    label_field: label                   # optional: the label column of train/dev files
    output: runs/sst2-finetuned          # required: where the trained model is saved

A data entry is a file path, ``{file: PATH, limit: N}``, or a built-in task
``{task: NAME, split: SPLIT, limit: N, k: K, seed: S}`` (``k`` draws K examples per class).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptkit.errors import CatalogError, ConfigError, check_keys, did_you_mean
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

PROMPTSOURCE_PREFIX = "promptsource:"
TRAIN_KEYS = (
    "model", "template", "verbalizer", "calibrate", "max_length", "batch_size", "strategy", "params", "train", "dev",
    "unlabeled", "label_field", "output",
)  # fmt: skip
TASK_DATA_KEYS = ("task", "split", "limit", "k", "seed")
FILE_DATA_KEYS = ("file", "limit")


def resolve_template(spec: str) -> tuple[Template, Verbalizer | None]:
    """The template ``spec`` names, and the verbalizer it comes with (None for jinja text).

    Raises:
        CatalogError / TemplateError: an unknown name (with the closest one) or bad jinja.
    """
    from promptkit import catalog

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a template is a catalog name, promptsource:DATASET/NAME or jinja text, got {spec!r}")
    if spec.startswith(PROMPTSOURCE_PREFIX):
        converted = promptsource_template(spec[len(PROMPTSOURCE_PREFIX) :])
        return converted.template, converted.verbalizer
    if "{{" in spec or "{%" in spec:
        return Template(spec, name="command line"), None
    template = catalog.load_template(spec)
    return template, catalog.load_verbalizer(catalog.paired_verbalizer(spec))


def promptsource_template(spec: str) -> Any:
    """A converted promptsource template from ``DATASET/NAME`` (``glue/sst2/review``)."""
    from promptkit import promptsource

    parts = spec.strip("/").split("/")
    for cut in range(len(parts) - 1, 0, -1):
        dataset, name = "/".join(parts[:cut]), "/".join(parts[cut:])
        if (promptsource.templates_dir() / dataset / "templates.yaml").is_file():
            return promptsource.load(dataset)[name]
    promptsource.resolve(parts[0] if len(parts) < 2 else "/".join(parts[:-1]))  # raises with the closest dataset
    raise CatalogError(f"promptsource template {spec!r} must be written DATASET/NAME, e.g. glue/sst2/review")


def resolve_verbalizer(spec: Any) -> Verbalizer:
    """A catalog verbalizer name, or a mapping (or its YAML/JSON text) of label -> words."""
    from promptkit import catalog

    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"verbalizer {spec!r} is not a valid YAML/JSON mapping ({getattr(err, 'problem', None) or err}); "
                "write it like '{0: [terrible], 1: [great]}'"
            ) from None
    if isinstance(spec, Mapping):
        return Verbalizer(dict(spec), name="command line")
    if isinstance(spec, str):
        return catalog.load_verbalizer(spec)
    raise ConfigError(f"a verbalizer is a catalog name or a mapping of label -> words, got {spec!r}")


def prompt_pair(template: str | None, verbalizer: Any) -> tuple[Template | None, Verbalizer | None]:
    """Template and verbalizer from their specs; the verbalizer defaults to the template's own."""
    chosen, paired = resolve_template(template) if template is not None else (None, None)
    if verbalizer is not None:
        return chosen, resolve_verbalizer(verbalizer)
    if chosen is not None and paired is None:
        raise ConfigError(
            "a template written as jinja text needs a verbalizer: give a catalog name (sst2/great_terrible) "
            "or a mapping such as '{0: [terrible], 1: [great]}'"
        )
    return chosen, paired


# ---------------------------------------------------------------- train config
@dataclass(frozen=True)
class DataSpec:
    """One data entry of a train config: a file, or a built-in task's split."""

    file: Path | None = None
    task: str | None = None
    split: str | None = None
    limit: int | None = None
    k: int | None = None
    seed: int = 13


def _int(where: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where} must be an int >= {minimum}, got {value!r}")
    return value


def data_spec(key: str, value: Any, base: Path) -> DataSpec:
    """Check one data entry (``train``, ``dev`` or ``unlabeled``) of a train config."""
    where = f"config {key!r}"
    if isinstance(value, (str, Path)):
        value = {"file": value}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must be a file path or a mapping such as {{task: sst2, split: train, k: 16}}, got {value!r}"
        )
    valid = FILE_DATA_KEYS if "file" in value else TASK_DATA_KEYS
    if "file" not in value and "task" not in value:
        raise ConfigError(f"{where} needs 'task' (a built-in task) or 'file' (a .jsonl/.csv path); got {dict(value)}")
    check_keys(where, value, valid, None, ConfigError)
    limit = None if value.get("limit") is None else _int(f"{where} limit", value["limit"], 0)
    if "file" in value:
        path = Path(str(value["file"])).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(
                f"{where}: file {str(path)!r} does not exist (relative paths start at the config's folder)"
            )
        return DataSpec(file=path, limit=limit)
    k = None if value.get("k") is None else _int(f"{where} k", value["k"], 1)
    seed = _int(f"{where} seed", value.get("seed", 13), 0)
    return DataSpec(task=str(value["task"]), split=value.get("split"), limit=limit, k=k, seed=seed)


def read_train_config(path: str | Path) -> dict[str, Any]:
    """Read and check a ``promptkit train`` YAML file (see the module docstring for the schema).

    Returns the config with data entries as :class:`DataSpec` and ``output``/local ``model``
    paths resolved against the file's folder.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown (the closest valid key
            is named), a required key is missing, or a value has the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(err).split())[:300]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys {list(TRAIN_KEYS)}")
    for key in data:
        if key not in TRAIN_KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r}.{did_you_mean(key, TRAIN_KEYS)} Valid keys: {', '.join(TRAIN_KEYS)}"
            )
    for key in ("model", "strategy", "output"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{path}: {key!r} is required and must be a string, got {data.get(key)!r}")
    base = path.resolve().parent
    config = dict(data)
    local = base / config["model"]
    if not Path(config["model"]).is_absolute() and local.exists():
        config["model"] = str(local)
    output = Path(config["output"]).expanduser()
    config["output"] = output if output.is_absolute() else base / output
    params = config.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path}: 'params' must be a mapping of the strategy's keyword arguments, got {params!r}")
    config["params"] = dict(params)
    for key in ("train", "dev", "unlabeled"):
        if config.get(key) is not None:
            config[key] = data_spec(key, config[key], base)
    for key in ("max_length", "batch_size"):
        if config.get(key) is not None:
            _int(f"{path}: {key!r}", config[key], 1)
    if not isinstance(config.get("label_field", "label"), str):
        raise ConfigError(f"{path}: 'label_field' must be a column name, got {config['label_field']!r}")
    return config
