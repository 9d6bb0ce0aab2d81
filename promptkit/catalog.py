"""Ready-made templates and verbalizers, stored as YAML data files.

``templates/<task>.yaml`` and ``verbalizers/<task>.yaml`` hold one task each; entries are
addressed as ``"<task>/<name>"``. The folders ship inside the wheel (as the packages
``promptkit.templates`` / ``promptkit.verbalizers``) and are found beside the package in a
source checkout. Files are read with ``yaml.safe_load`` only.

File layout::

    # templates/sst2.yaml
    task: sst2
    example: {text: "a gem of a film.", label: 1}
    templates:
      it_was:
        text: "{{ text }} It was {{ mask }}."
        verbalizer: great_terrible     # the verbalizer it is meant for
        description: PET pattern

    # verbalizers/sst2.yaml
    task: sst2
    verbalizers:
      great_terrible:
        label_words: {0: ["terrible"], 1: ["great"]}

A file usually belongs to a task of :mod:`promptkit.tasks`, whose fields and labels its
templates and verbalizers are written for. A file of prompts for no registered task (e.g.
``zh_sentiment``, general Chinese sentiment prompts) declares them itself in its templates
file, ``fields: [text]`` and ``labels: [0, 1]``; :func:`task_schema` returns either.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml

from promptkit.errors import CatalogError, PromptkitError, did_you_mean
from promptkit.tasks import TASKS
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

Kind = Literal["templates", "verbalizers"]
_TEMPLATE_KEYS = {"text", "chat", "description", "verbalizer"}


def catalog_dir(kind: Kind) -> Path:
    """Folder of the shipped ``templates`` or ``verbalizers`` files."""
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec(f"promptkit.{kind}")  # the wheel ships them as data-only packages
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(f"promptkit's {kind} folder is missing; reinstall promptkit")
    return Path(list(spec.submodule_search_locations)[0])


def _read(path: Path, kind: Kind) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole file and its ``kind`` entries, both checked to be mappings."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CatalogError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise CatalogError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path} must hold a mapping with 'task' and '{kind}', got {type(data).__name__}")
    entries = data.get(kind) or {}
    if not isinstance(entries, dict):
        raise CatalogError(f"{path}: '{kind}' must be a mapping of name -> entry, got {type(entries).__name__}")
    return data, entries


def read_templates(path: str | Path) -> dict[str, Template]:
    """All templates of one YAML file, by name (each gets the file's ``example``)."""
    data, entries = _read(Path(path), "templates")
    task = data.get("task", Path(path).stem)
    out = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "text" not in entry:
            raise CatalogError(
                f"{path}: template {name!r} must be a mapping with 'text' and optionally "
                f"{sorted(_TEMPLATE_KEYS - {'text'})}; got {entry!r}"
            )
        for key in entry:
            if key not in _TEMPLATE_KEYS:
                raise CatalogError(
                    f"{path}: template {name!r} has an unknown key {key!r}."
                    f"{did_you_mean(key, sorted(_TEMPLATE_KEYS))} Valid keys: {sorted(_TEMPLATE_KEYS)}"
                )
        if not isinstance(entry.get("chat", False), bool):
            raise CatalogError(
                f"{path}: template {name!r} has chat: {entry['chat']!r} ({type(entry['chat']).__name__}); "
                "write chat: true or chat: false, unquoted"
            )
        try:
            template = Template(
                entry["text"],
                name=f"{task}/{name}",
                chat=entry.get("chat", False),
                example=data.get("example"),
                description=entry.get("description", ""),
            )
            if template.example is not None:
                template.render(template.example)  # every file template must render the file's example
        except PromptkitError as err:
            raise CatalogError(f"{path}: {err}") from None
        out[name] = template
    return out


def read_verbalizers(path: str | Path) -> dict[str, Verbalizer]:
    """All verbalizers of one YAML file, by name."""
    data, entries = _read(Path(path), "verbalizers")
    task = data.get("task", Path(path).stem)
    out = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "label_words" not in entry:
            raise CatalogError(f"{path}: verbalizer {name!r} must be a mapping with 'label_words'; got {entry!r}")
        try:
            out[name] = Verbalizer(entry["label_words"], name=f"{task}/{name}")
        except PromptkitError as err:
            raise CatalogError(f"{path}: {err}") from None
    return out


def _tasks(kind: Kind) -> list[str]:
    return sorted(p.stem for p in catalog_dir(kind).glob("*.yaml"))


def _split(name: str, kind: Kind) -> tuple[str, str]:
    task, sep, entry = name.partition("/")
    if not sep or task not in _tasks(kind):
        known = _tasks(kind)
        raise CatalogError(
            f"unknown {kind[:-1]} {name!r}: names look like 'task/name' with task one of {known}."
            f"{did_you_mean(task, known)}"
        )
    return task, entry


def _lookup(name: str, kind: Kind):
    task, entry = _split(name, kind)
    path = catalog_dir(kind) / f"{task}.yaml"
    items = read_templates(path) if kind == "templates" else read_verbalizers(path)
    if entry not in items:
        raise CatalogError(f"unknown {kind[:-1]} {name!r}; {task} has {sorted(items)}.{did_you_mean(entry, items)}")
    return items[entry]


def load_template(name: str) -> Template:
    """A shipped template, e.g. ``load_template("sst2/it_was")``."""
    return _lookup(name, "templates")


def load_verbalizer(name: str) -> Verbalizer:
    """A shipped verbalizer, e.g. ``load_verbalizer("sst2/great_terrible")``."""
    return _lookup(name, "verbalizers")


def paired_verbalizer(template_name: str) -> str:
    """Name of the verbalizer a shipped template is meant for (its ``verbalizer:`` key)."""
    task, entry = _split(template_name, "templates")
    load_template(template_name)  # the entry exists and is valid
    _, entries = _read(catalog_dir("templates") / f"{task}.yaml", "templates")
    verbalizers = read_verbalizers(catalog_dir("verbalizers") / f"{task}.yaml")
    name = entries[entry].get("verbalizer") or next(iter(verbalizers))
    if name not in verbalizers:
        raise CatalogError(f"template {template_name!r} names verbalizer {name!r}; {task} has {sorted(verbalizers)}")
    return f"{task}/{name}"


def list_templates(task: str | None = None) -> list[str]:
    """Names of shipped templates, of one task or all."""
    tasks = [_split(f"{task}/", "templates")[0]] if task else _tasks("templates")
    return [f"{t}/{n}" for t in tasks for n in read_templates(catalog_dir("templates") / f"{t}.yaml")]


def list_verbalizers(task: str | None = None) -> list[str]:
    """Names of shipped verbalizers, of one task or all."""
    tasks = [_split(f"{task}/", "verbalizers")[0]] if task else _tasks("verbalizers")
    return [f"{t}/{n}" for t in tasks for n in read_verbalizers(catalog_dir("verbalizers") / f"{t}.yaml")]


def task_schema(task: str) -> tuple[tuple[str, ...], tuple]:
    """The text fields and labels (in class order) a catalog task's files are written for.

    Those of the registered task (:data:`promptkit.tasks.TASKS`), or, for a catalog file of
    no registered task, its templates file's ``fields:`` and ``labels:``.

    Example:
        >>> task_schema("zh_sentiment")
        (('text',), (0, 1))
    """
    if task in TASKS:
        return TASKS[task].fields, TASKS[task].labels
    path = catalog_dir("templates") / f"{_split(f'{task}/', 'templates')[0]}.yaml"
    data, _ = _read(path, "templates")
    fields, labels = data.get("fields"), data.get("labels")
    if not (isinstance(fields, list) and fields and isinstance(labels, list) and labels):
        raise CatalogError(
            f"{path}: {task!r} is no registered task (promptkit.tasks.TASKS), so the file must declare the "
            f"fields and labels its templates are written for, e.g. 'fields: [text]' and 'labels: [0, 1]'; "
            f"got fields={fields!r}, labels={labels!r}"
        )
    return tuple(fields), tuple(labels)
