"""In-context demonstrations: labelled examples, rendered through the template, placed before it.

A demonstration is the template filled with a training example and, at the mask, the first
word of that example's label ("Review: a gem .\\nSentiment: positive"). Put in front of every
prompt, a few of them show a small LM the task's format and label words (GPT-3's in-context
learning, Brown et al. 2020), and prompt-based fine-tuning can train with them in place
(LM-BFF's "demonstrations", Gao et al. 2021). The demonstrations here are fixed: the same
ones precede every input, chosen per class from a seed, so the prompt is a plain
:class:`~promptkit.template.Template` that saves, resumes and scores like any other.

Example:
    >>> from promptkit import Template, Verbalizer
    >>> t = Template("Review: {{ text }}\\nSentiment: {{ mask }}", name="review")
    >>> v = Verbalizer({0: ["negative"], 1: ["positive"]})
    >>> rows = [{"text": "dull .", "label": 0}, {"text": "a gem .", "label": 1}]
    >>> demo = with_demonstrations(t, v, rows, seed=0)
    >>> print(demo.render({"text": "fine ."}).to_text())
    Review: a gem .
    Sentiment: positive
    <BLANKLINE>
    Review: dull .
    Sentiment: negative
    <BLANKLINE>
    Review: fine .
    Sentiment: [MASK]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from promptkit.errors import DataError, PromptkitError, TemplateError
from promptkit.examples import as_examples, draw_per_class, labels_of
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

_RAW_END = "endraw"


def pick_demonstrations(
    examples: Sequence[Mapping[str, Any]],
    verbalizer: Verbalizer,
    *,
    per_class: int = 1,
    seed: int = 0,
    label_key: str = "label",
) -> list[tuple[int, dict[str, Any]]]:
    """``per_class`` examples of every label, drawn with ``seed`` and shuffled together, as (class index, row).

    Rows are grouped by the verbalizer's class index, so two spellings of one label
    (``1`` and ``True``, say, if the verbalizer maps both) count as one class.

    Raises:
        DataError: ``per_class`` < 1, or a label with fewer than ``per_class`` examples.
        VerbalizerError: a row without a label the verbalizer knows.
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise DataError(f"per_class={per_class!r} is invalid: expected an int >= 1, e.g. 1")
    rows = as_examples(examples)
    try:
        indices = labels_of(rows, verbalizer, label_key)
    except PromptkitError as err:
        raise type(err)(f"demonstrations: {err}") from None
    counts = Counter(indices)
    short = {label: counts[i] for i, label in enumerate(verbalizer.labels) if counts[i] < per_class}
    if short:
        raise DataError(
            f"need {per_class} demonstration(s) per label, but these labels have fewer examples: {short}; "
            "lower per_class or add examples of those labels"
        )
    tagged = [{"row": row, "class": index} for row, index in zip(rows, indices)]
    picked = draw_per_class(tagged, lambda item: item["class"], per_class, seed=seed)
    return [(item["class"], dict(item["row"])) for item in picked]


def render_demonstration(template: Template, example: Mapping[str, Any], label_word: str) -> str:
    """The template's text for ``example`` with ``label_word`` at the mask."""
    prompt = template.render(example)
    if prompt.slot_size:
        raise TemplateError(
            f"template {template.name!r} has soft/trigger slots; add demonstrations before the slots are added"
        )
    return prompt.to_text(mask_text=label_word)


def with_demonstrations(
    template: Template,
    verbalizer: Verbalizer,
    examples: Sequence[Mapping[str, Any]],
    *,
    per_class: int = 1,
    seed: int = 0,
    separator: str = "\n\n",
    label_key: str = "label",
) -> Template:
    """``template`` preceded by ``per_class`` demonstrations of every label from ``examples``.

    The demonstrations become literal template text: they are never truncated, so raise
    the model's ``max_length`` for long inputs. With a chat template they are part of the
    user's message.

    Args:
        template: the cloze template the demonstrations are rendered with.
        verbalizer: gives each demonstration's label word (the label's first word).
        examples: labelled rows to draw from (usually the training set).
        per_class: demonstrations per label.
        seed: which examples are drawn and their order.
        separator: text between demonstrations and before the prompt.
        label_key: the field holding the label.
    """
    picked = pick_demonstrations(examples, verbalizer, per_class=per_class, seed=seed, label_key=label_key)
    context = "".join(render_demonstration(template, row, verbalizer.words[i][0]) + separator for i, row in picked)
    if _RAW_END in context:
        raise TemplateError(f"a demonstration contains {_RAW_END!r}, which cannot be quoted in a template; drop it")
    name = f"{template.name}+demos{per_class}" if template.name else f"demos{per_class}"
    return Template(
        "{% raw %}" + context + "{% endraw %}" + template.text,
        name=name,
        chat=template.chat,
        example=template.example,
        description=f"{template.description} With {len(picked)} fixed in-context demonstrations (seed {seed}).",
    )
