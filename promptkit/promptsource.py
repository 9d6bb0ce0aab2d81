"""Import promptsource's community prompts as promptkit templates and verbalizers.

promptsource (``pip install --no-deps --ignore-requires-python promptsource==0.2.3``; its
declared dependencies pull an old streamlit, and its metadata says Python < 3.10 although
the YAML files need no Python at all) ships one ``templates.yaml`` per dataset. A
promptsource template is jinja text whose prompt and target are split by ``|||``, with
``answer_choices`` (jinja too, split on ``|||``). :func:`load` reads a dataset's file with a
*safe* YAML loader (constructors for ``!Template`` and ``!TemplateMetadata`` only) and
converts every template with fixed answer choices into a promptkit :class:`Template` and
:class:`Verbalizer`:

* the target side becomes ``{{ mask }}``, at the end of the prompt (where a causal head
  scores the label word with one forward pass), after a newline when ``|||`` stood next to
  one and after a space otherwise;
* the answer choices become the label words: the target is rendered for every label
  (``answer_choices[label]``, ``{% if label != -1 %}...``, ``{% if label %}{{ answer_choices[0] }}...``
  all work) and must name one choice, and each label gets the choice its target names;
* dataset field names map to the promptkit task's fields (``glue/sst2``'s ``sentence`` is
  ``text``; ``ag_news``'s ``text`` is ``title ~ " " ~ description``), written as
  ``{% set %}`` lines at the start of the template, and the labels map to the task's labels
  (``ag_news``' class 0 is promptkit's label 1).

Datasets that promptkit has no task for are converted too, keeping their own field names
and the class indices ``0..n-1`` as labels.

Templates that cannot convert are reported, each with a short reason (``per-example answer
choices``, ``no answer choices (generation)``, ``target is not an answer choice``...); see
:attr:`PromptsourceTemplates.skipped` and :meth:`PromptsourceTemplates.reasons`.

The jinja features promptsource's templates use (the ``choice``, ``most_frequent`` and
``highlight`` filters and the ``zip`` global) are part of promptkit's sandbox
(:mod:`promptkit.promptsource_filters`), ``choice`` seeded, so converted templates render
under the same limits as every other template, and save and load with a model.

Example:
    >>> from promptkit import promptsource
    >>> sst2 = promptsource.load("glue/sst2")  # doctest: +SKIP
    >>> len(sst2), sst2.reasons()  # doctest: +SKIP
    (5, {})
    >>> t = sst2["review"]  # doctest: +SKIP
    >>> model = PromptModel.from_pretrained(  # doctest: +SKIP
    ...     "smollm2-135m", template=t.template, verbalizer=t.verbalizer)
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta

from promptkit.errors import CatalogError, PromptkitError, did_you_mean
from promptkit.tasks import get_task
from promptkit.template import Template
from promptkit.template_sandbox import _PUBLIC_FILTERS
from promptkit.verbalizer import Verbalizer

ENV_VAR = "PROMPTKIT_PROMPTSOURCE"
INSTALL = "pip install --no-deps --ignore-requires-python promptsource==0.2.3"
SEPARATOR = "|||"
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_CHOICE_FILTER = re.compile(r"\|\s*choice\b(?!\s*\()")
_SENTINEL = "@@answer_choice_{}@@"
_JINJA_GLOBALS = frozenset(jinja2.Environment().globals) | {"zip"}


def _analysis_environment() -> jinja2.Environment:
    """A jinja environment that only parses (never renders), knowing promptkit's filter names."""
    env = jinja2.Environment()
    env.filters.update(dict.fromkeys(_PUBLIC_FILTERS, str))  # jinja's, promptkit's and promptsource's names
    return env


_ANALYSIS = _analysis_environment()


@dataclass(frozen=True)
class DatasetMapping:
    """How one promptsource dataset maps onto a promptkit task.

    Attributes:
        task: the promptkit task name (see :func:`promptkit.list_tasks`).
        fields: promptsource field name -> jinja expression over the task's fields.
        labels: the task's label of each dataset class index (``labels[i]`` is class ``i``).
        label_field: the dataset's label column.
    """

    task: str
    fields: Mapping[str, str]
    labels: tuple
    label_field: str = "label"


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


# Class order of the Hugging Face datasets promptsource was written for.
DATASETS: dict[str, DatasetMapping] = {
    "glue/sst2": DatasetMapping("sst2", {"sentence": "text"}, (0, 1)),
    "super_glue/rte": DatasetMapping("rte", _same("premise", "hypothesis"), ("entailment", "not_entailment")),
    "glue/rte": DatasetMapping(
        "rte", {"sentence1": "premise", "sentence2": "hypothesis"}, ("entailment", "not_entailment")
    ),
    "super_glue/cb": DatasetMapping("cb", _same("premise", "hypothesis"), ("entailment", "contradiction", "neutral")),
    "super_glue/boolq": DatasetMapping("boolq", _same("passage", "question"), (False, True)),
    "ag_news": DatasetMapping("ag_news", {"text": 'title ~ " " ~ description'}, (1, 2, 3, 4)),
    "glue/mnli": DatasetMapping("mnli", _same("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "snli": DatasetMapping("snli", _same("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
}
# promptkit task name -> the promptsource dataset its data comes from.
TASK_DATASETS = {
    "sst2": "glue/sst2",
    "rte": "super_glue/rte",
    "cb": "super_glue/cb",
    "boolq": "super_glue/boolq",
    "ag_news": "ag_news",
    "mnli": "glue/mnli",
    "snli": "snli",
}


# ---------------------------------------------------------------- safe YAML reading
class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads promptsource's two tags, as plain mappings."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag} must tag a mapping", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_SafeLoader.add_constructor("!Template", _construct_mapping)
_SafeLoader.add_constructor("!TemplateMetadata", _construct_mapping)


def templates_dir() -> Path:
    """The folder of promptsource's ``templates.yaml`` files.

    ``$PROMPTKIT_PROMPTSOURCE`` wins when set; otherwise the installed ``promptsource``
    package's ``templates`` folder (found without importing promptsource).

    Raises:
        CatalogError: neither is there; the message gives the install command.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise CatalogError(f"${ENV_VAR}={env!r} is not a folder; point it at promptsource's templates/ or unset it")
        return path
    spec = importlib.util.find_spec("promptsource")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / "templates").is_dir():
            return Path(location) / "templates"
    raise CatalogError(f"promptsource is not installed; install its prompt files with `{INSTALL}`")


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Every dataset with a promptsource templates file, as ``"dataset"`` or ``"dataset/subset"``."""
    base = Path(root) if root is not None else templates_dir()
    return sorted(p.parent.relative_to(base).as_posix() for p in base.rglob("templates.yaml"))


def read_file(path: str | Path) -> dict[str, Any]:
    """One promptsource ``templates.yaml`` as plain data (safe loader: no Python objects).

    Raises:
        CatalogError: the file is missing, not YAML, uses another tag, or is not a mapping
            with a ``templates`` mapping.
    """
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)  # noqa: S506 (a SafeLoader subclass)
    except OSError as err:
        raise CatalogError(f"cannot read promptsource file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise CatalogError(
            f"promptsource file {path} is not valid YAML or uses a tag other than !Template/!TemplateMetadata: "
            f"{' '.join(str(err).split())[:300]}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("templates") or {}, dict):
        raise CatalogError(f"promptsource file {path} must hold a mapping with a 'templates' mapping")
    data["templates"] = data.get("templates") or {}
    return data


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class ConvertedTemplate:
    """One promptsource template as a promptkit template and verbalizer.

    Attributes:
        name: promptsource's name of the template (``"review"``).
        id: promptsource's template id.
        template: the promptkit template (mask at the end).
        verbalizer: the task's labels and their answer choices.
        source: promptsource's jinja text.
        answer_choices: the answer choices, in promptsource's order.
        original_task: promptsource's metadata (None where it has none).
        choices_in_prompt: promptsource's metadata (None where it has none).
        reference: promptsource's reference text.
        label_field: the dataset column the target reads (``label``, or e.g. ``author`` for a
            dataset promptkit has no task for); examples to score carry their label under it.
    """

    name: str
    id: str
    template: Template
    verbalizer: Verbalizer
    source: str
    answer_choices: tuple[str, ...]
    original_task: bool | None = None
    choices_in_prompt: bool | None = None
    reference: str = ""
    label_field: str = "label"


@dataclass(frozen=True)
class SkippedTemplate:
    """A promptsource template that does not convert: ``reason`` is a short category for
    counting, ``detail`` says what exactly was found."""

    name: str
    id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class PromptsourceTemplates:
    """The converted templates of one promptsource dataset, by name, and the skipped ones.

    Iterating yields the :class:`ConvertedTemplate` objects; ``collection["review"]``
    looks one up by name or id.
    """

    dataset: str
    task: str | None
    templates: dict[str, ConvertedTemplate]
    skipped: list[SkippedTemplate] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self) -> Iterator[ConvertedTemplate]:
        return iter(self.templates.values())

    def __getitem__(self, name: str) -> ConvertedTemplate:
        if name in self.templates:
            return self.templates[name]
        for converted in self.templates.values():
            if converted.id == name:
                return converted
        skipped = {s.name: s for s in self.skipped}
        if name in skipped:
            raise CatalogError(
                f"promptsource template {self.dataset}/{name} did not convert ({skipped[name].reason}: "
                f"{skipped[name].detail}); converted are {sorted(self.templates)}"
            )
        raise CatalogError(
            f"{self.dataset} has no converted promptsource template {name!r}; converted are "
            f"{sorted(self.templates)}.{did_you_mean(name, self.templates)}"
        )

    def names(self) -> list[str]:
        """Names of the converted templates, in file order."""
        return list(self.templates)

    def reasons(self) -> dict[str, int]:
        """How many templates were skipped for each reason, most common first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def check(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
        """Render every converted template on ``examples``; name -> None, or the first error."""
        out: dict[str, str | None] = {}
        for name, converted in self.templates.items():
            out[name] = None
            for example in examples:
                try:
                    converted.template.render(example)
                except PromptkitError as err:
                    out[name] = str(err)
                    break
        return out


# ---------------------------------------------------------------- conversion
class _Skip(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _split_outside_tags(text: str, separator: str = SEPARATOR) -> list[str]:
    """Split ``text`` on ``separator`` where it stands in literal text, not inside ``{{ }}``/``{% %}``."""
    parts, start, cursor = [], 0, 0
    for tag in [*_TAG.finditer(text), None]:
        end = tag.start() if tag is not None else len(text)
        position = text.find(separator, cursor, end)
        while position != -1:
            parts.append(text[start:position])
            start = position + len(separator)
            position = text.find(separator, start, end)
        if tag is None:
            break
        cursor = tag.end()
    parts.append(text[start:])
    return parts


def _variables(text: str) -> set[str]:
    """Names a jinja text reads that it does not set itself (globals excluded)."""
    try:
        tree = _ANALYSIS.parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise _Skip("'|||' inside a jinja block", f"{err.message} in {text[:120]!r}") from None
    try:
        return set(meta.find_undeclared_variables(tree)) - _JINJA_GLOBALS
    except jinja2.TemplateAssertionError as err:  # e.g. a filter neither jinja nor promptkit has
        raise _Skip("refused by promptkit", f"{err.message} in {text[:120]!r}") from None


def _render_constant(text: str, variables: Mapping[str, Any], what: str) -> str:
    """Render jinja ``text`` in promptkit's sandbox (through a Template) and return its text."""
    if "mask" in _variables(text):
        raise _Skip("uses the name 'mask'", f"{what} reads 'mask', which promptkit reserves for the label slot")
    try:
        prompt = Template(text + "{{ mask }}", name=what).render(variables)
    except PromptkitError as err:
        raise _Skip(f"{what} does not render", str(err)[:300]) from None
    return "".join(s.text for s in prompt.segments if s.kind != "mask")


def _answer_choices(raw: Mapping[str, Any]) -> list[str]:
    expression = raw.get("answer_choices")
    if expression is None or not str(expression).strip():
        raise _Skip("no answer choices (generation)", "the template has no answer_choices")
    expression = str(expression)
    reads = _variables(expression)
    if reads:
        raise _Skip("per-example answer choices", f"answer_choices reads {sorted(reads)}: {expression[:120]!r}")
    choices = [c.strip() for c in _render_constant(expression, {}, "answer_choices").split(SEPARATOR)]
    if any(not c for c in choices):
        raise _Skip("empty answer choice", f"answer_choices {expression[:120]!r} renders an empty choice")
    return choices


def _target_choices(target: str, choices: list[str], n_labels: int, label_field: str) -> list[int]:
    """The index of the answer choice the target names for each class index."""
    reads = _variables(target) - {"answer_choices", label_field}
    if reads:
        raise _Skip("target is not an answer choice", f"the target reads {sorted(reads)}: {target.strip()[:120]!r}")
    sentinels = [_SENTINEL.format(i) for i in range(len(choices))]
    picks = []
    for label in range(n_labels):
        try:
            rendered = _render_constant(target, {"answer_choices": sentinels, label_field: label}, "target").strip()
        except _Skip as skip:
            if len(choices) < n_labels:
                raise _Skip(
                    "fewer answer choices than labels", f"{len(choices)} choices {choices} for {n_labels} labels"
                ) from None
            raise _Skip("target is not an answer choice", skip.detail) from None
        if rendered not in sentinels:
            raise _Skip(
                "target is not an answer choice",
                f"for {label_field}={label} the target renders {rendered[:80]!r}, not one answer choice",
            )
        picks.append(sentinels.index(rendered))
    if len({choices[j] for j in picks}) < len(picks):
        raise _Skip("two labels share an answer choice", f"class indices -> choices {picks} over {choices}")
    return picks


def _label_field(target: str) -> str:
    """The label column of a dataset promptkit has no mapping for: the one field the target
    reads besides ``answer_choices`` (``answer_choices[author]``), else ``label``."""
    reads = sorted(_variables(target) - {"answer_choices"})
    return reads[0] if len(reads) == 1 else "label"


def _literal(values: Sequence[str]) -> str:
    """A jinja list literal of strings (Python's repr is valid jinja for str lists)."""
    return "[" + ", ".join(repr(str(v)) for v in values) + "]"


def _choice_seeded(text: str, seed: int) -> str:
    return text if seed == 0 else _CHOICE_FILTER.sub(f"| choice(seed={seed})", text)


def convert(
    raw: Mapping[str, Any],
    *,
    dataset: str,
    mapping: DatasetMapping | None = None,
    seed: int = 0,
    chat: bool = False,
) -> ConvertedTemplate:
    """Convert one promptsource template (a ``!Template`` mapping) into a promptkit one.

    Args:
        raw: the template's mapping (``name``, ``id``, ``jinja``, ``answer_choices``,
            ``metadata``, ``reference``), as :func:`read_file` returns them.
        dataset: its dataset name (``"glue/sst2"``), used in the template's name.
        mapping: field and label mapping onto a promptkit task; None keeps the dataset's
            field names and uses the class indices ``0..n-1`` as labels.
        seed: seed of the ``choice`` filter (0 keeps the text unchanged; any other value is
            written into every ``| choice`` as ``| choice(seed=N)``).
        chat: make a chat template (the prompt is the user's message, the answer choice the
            assistant's first word), for instruction-tuned backbones.

    Raises:
        CatalogError: the template does not convert; the message starts with the reason.
    """
    try:
        return _convert(raw, dataset, mapping, seed, chat)
    except _Skip as skip:
        raise CatalogError(f"{skip.reason}: {skip.detail}") from None


def _convert(
    raw: Mapping[str, Any], dataset: str, mapping: DatasetMapping | None, seed: int, chat: bool = False
) -> ConvertedTemplate:
    name, jinja = str(raw.get("name", "")), raw.get("jinja")
    if not isinstance(jinja, str) or not jinja.strip():
        raise _Skip("no jinja text", f"template {name!r} has jinja: {jinja!r}")
    choices = _answer_choices(raw)
    parts = _split_outside_tags(jinja)
    if len(parts) != 2:
        reason = "no target ('|||')" if len(parts) == 1 else "several '|||' separators"
        raise _Skip(reason, f"{len(parts) - 1} separators in {jinja[:120]!r}")
    prompt, target = parts
    label_field = mapping.label_field if mapping is not None else _label_field(target)
    n_labels = len(mapping.labels) if mapping is not None else len(choices)
    picks = _target_choices(target, choices, n_labels, label_field)
    reads = _variables(prompt)
    if label_field in reads:
        raise _Skip("prompt reads the label", f"the prompt side reads {label_field!r}: {prompt.strip()[:120]!r}")
    if mapping is not None:
        unknown = sorted(reads - set(mapping.fields) - {"answer_choices"})
        if unknown:
            raise _Skip(
                "reads a field the task lacks",
                f"the prompt reads {unknown}; promptkit's {mapping.task} maps only {sorted(mapping.fields)}",
            )
    joiner = "\n" if "\n" in prompt[len(prompt.rstrip()) :] + target[: len(target) - len(target.lstrip())] else " "
    header = ""
    if mapping is not None:
        renames = {ps: pk for ps, pk in mapping.fields.items() if ps in reads and ps != pk}
        header += "".join(f"{{% set {ps} = {pk} %}}" for ps, pk in renames.items())
    if "answer_choices" in reads:
        header += f"{{% set answer_choices = {_literal(choices)} %}}"
    text = header + _choice_seeded(prompt.strip(), seed) + joiner + "{{ mask }}"
    labels = mapping.labels if mapping is not None else tuple(range(len(choices)))
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), Mapping) else {}
    try:
        template = Template(
            text,
            name=f"{dataset}/{name}",
            chat=chat,
            description=f"promptsource {dataset} template {name!r} ({raw.get('id')})",
        )
        verbalizer = Verbalizer({labels[i]: [choices[j]] for i, j in enumerate(picks)}, name=f"{dataset}/{name}")
    except PromptkitError as err:
        raise _Skip("refused by promptkit", str(err)[:300]) from None
    return ConvertedTemplate(
        name=name,
        id=str(raw.get("id", "")),
        template=template,
        verbalizer=verbalizer,
        source=jinja,
        answer_choices=tuple(choices),
        original_task=metadata.get("original_task"),
        choices_in_prompt=metadata.get("choices_in_prompt"),
        reference=str(raw.get("reference") or ""),
        label_field=label_field,
    )


def resolve(dataset: str, root: str | Path | None = None) -> tuple[str, Path]:
    """The promptsource dataset name (promptkit task names are accepted too) and its file.

    Raises:
        CatalogError: promptsource is missing, or the name is unknown (with the closest one).
    """
    if not isinstance(dataset, str) or not dataset.strip():
        raise CatalogError(f"a promptsource dataset name is a string like 'glue/sst2', got {dataset!r}")
    base = Path(root) if root is not None else templates_dir()
    name = TASK_DATASETS.get(dataset, dataset).strip("/")
    path = base / name / "templates.yaml"
    if ".." in Path(name).parts or not path.is_file():
        known = list_datasets(base)
        hint = did_you_mean(dataset, [*known, *TASK_DATASETS])
        raise CatalogError(
            f"unknown promptsource dataset {dataset!r}: promptsource has {len(known)} datasets such as "
            f"{', '.join(known[:5])} (promptkit.promptsource.list_datasets() lists all).{hint}"
        )
    return name, path


def load(
    dataset: str,
    *,
    task: str | None = None,
    seed: int = 0,
    chat: bool = False,
    root: str | Path | None = None,
) -> PromptsourceTemplates:
    """Convert a promptsource dataset's templates, e.g. ``load("glue/sst2")``.

    Args:
        dataset: a promptsource dataset (``"glue/sst2"``, ``"super_glue/rte"``, ``"ag_news"``)
            or a promptkit task name with promptsource prompts (``"sst2"``, ``"rte"``, ``"cb"``,
            ``"boolq"``, ``"ag_news"``, ``"mnli"``, ``"snli"``).
        task: the promptkit task whose fields and labels the templates should use; by
            default the one :data:`DATASETS` pairs with the dataset (none for other datasets:
            their own field names and class indices ``0..n-1`` are kept). A task without a
            mapping is refused.
        seed: seed of the templates' ``choice`` filter (0 leaves the text as promptsource wrote it).
        chat: make chat templates (prompt as the user's message, answer choice as the
            assistant's first word) for instruction-tuned backbones.
        root: a folder laid out like promptsource's ``templates/`` (default: the installed
            package, or ``$PROMPTKIT_PROMPTSOURCE``).

    Returns:
        The converted templates by name, with the skipped ones and their reasons.

    Raises:
        CatalogError: promptsource is not installed, the dataset is unknown (the message
            suggests the closest name), or its file is not a promptsource file.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CatalogError(f"seed must be an int, got {seed!r}")
    if not isinstance(chat, bool):
        raise CatalogError(f"chat must be True or False, got {chat!r}")
    name, path = resolve(dataset, root)
    mapping = DATASETS.get(name)
    if task is not None:
        get_task(task)  # a known promptkit task (DataError with the closest name otherwise)
        if mapping is None or mapping.task != task:
            paired = sorted(d for d, m in DATASETS.items() if m.task == task)
            raise CatalogError(
                f"promptkit has no field mapping from promptsource's {name} to task {task!r}; "
                f"datasets mapped to {task!r}: {paired}. Leave task=None to keep {name}'s own field names."
            )
    data = read_file(path)
    converted: dict[str, ConvertedTemplate] = {}
    skipped: list[SkippedTemplate] = []
    for key, raw in data["templates"].items():
        if not isinstance(raw, Mapping):
            skipped.append(SkippedTemplate(str(key), str(key), "not a !Template mapping", repr(raw)[:120]))
            continue
        template_name = str(raw.get("name") or key)
        try:
            result = _convert({**raw, "name": template_name}, name, mapping, seed, chat)
        except _Skip as skip:
            skipped.append(SkippedTemplate(template_name, str(raw.get("id", key)), skip.reason, skip.detail))
            continue
        if template_name in converted:
            skipped.append(SkippedTemplate(template_name, result.id, "duplicate name", "an earlier template has it"))
            continue
        converted[template_name] = result
    return PromptsourceTemplates(name, mapping.task if mapping is not None else None, converted, skipped)
