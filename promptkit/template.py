"""Templates: jinja2 text that turns an example into a cloze :class:`Prompt`.

A template is data, not a model component: it holds no tokenizer and no weights. It is
rendered in a jinja2 :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, so a template file from someone else cannot reach
Python internals or change the example, and a misspelled field is an error instead of
an empty string.

Segments
--------
Every ``{{ expression }}`` the template outputs becomes an *input* segment (the part that
may be truncated when a prompt is too long); literal template text becomes a *text*
segment that is never truncated; ``{{ mask }}`` becomes the single *mask* segment;
``{{ soft(n) }}`` and ``{{ trigger(n) }}`` become *slot* segments of ``n`` positions whose
embeddings a strategy supplies (soft prompts, AutoPrompt triggers).

Captured blocks
---------------
Output inside a block whose text jinja captures (``{% set x %}...{% endset %}``,
``{% filter f %}...{% endfilter %}``, ``{% macro %}``, ``{% call %}`` and recursive
``{% for %}``) is plain text: the block's value is the real text, so filters, comparisons
and string methods see what the model will see. Where such a block writes to the prompt
(a filter block, a call block, a recursive loop), its whole output becomes **one input
segment**: ``{% filter upper %}Review: {{ text }}{% endfilter %}`` renders the input
segment ``"REVIEW: A GEM."``. Likewise ``{{ x }}`` of a captured ``x`` is one input
segment. ``{{ mask }}``, ``soft()`` and ``trigger()`` must be output by the template
itself: inside a captured block they are a :class:`TemplateError`. The NUL character is
reserved for promptkit's internal markers, so a NUL in the template text, in an example
field or anywhere in the rendered prompt is a :class:`TemplateError` too.

Limits
------
A template from someone else cannot hang or exhaust the process: rendering is bounded,
and every limit that is hit raises a :class:`TemplateError` naming the template and the
limit. The limits are constants of :mod:`promptkit.template_limits` (raise them there, e.g.
``promptkit.template_limits.MAX_STEPS = 10**6``, only for templates you trust):

* ``MAX_LENGTH`` (1,000,000): characters of the whole rendered prompt, and characters or
  items of any string or list a template builds (``*``, ``+``, ``%``, ``~``, ``.format``,
  ``.replace``, ``.join``, ``center``/``indent``/``wordwrap``/``join``/``format`` ... filters).
  Also the most characters a template text may have.
* ``MAX_INT_BITS`` (4,096): size of an integer ``*`` and ``**`` may build
  (``{{ 9 ** (9 ** 9) }}`` is refused, not computed).
* ``MAX_RANGE`` (10,000): items of one ``range()``.
* ``MAX_STEPS`` (100,000): loop iterations, calls, filter applications, operators and
  outputs of one render (nested loops multiply; each iteration also counts the literal
  text of the loop body against ``MAX_LENGTH``).
* ``MAX_DEPTH`` (32): calls nested in calls (recursive macros, recursive loops).
* ``MAX_SECONDS`` (1.0): wall time of one render (a backstop for the limits above).

Expressions made of constants (``{{ 'a' * 10**9 }}``, ``range(10**6)``) and loops over
constant ranges are checked when the :class:`Template` is built, so such a template fails
at construction. jinja's compile-time constant folding is switched off, so building a
template never evaluates its expressions. ``include``, ``import``, ``extends`` and
``block`` (there is no loader: a template is one self-contained text), the name ``self``
and names starting with ``_pk_`` (promptkit's own) are refused at construction. The
filter ``urlize`` and the global ``lipsum`` are not available; ``str.translate``,
``str.maketrans`` and ``str.encode`` are blocked.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError

from promptkit import template_limits
from promptkit.errors import TemplateError, check_keys, did_you_mean
from promptkit.prompt import Prompt, Segment
from promptkit.prompt import SegmentKind as SegmentKind
from promptkit.template_checks import _check_arguments, _check_tree
from promptkit.template_filters import lower_first as lower_first
from promptkit.template_filters import strip_punct as strip_punct
from promptkit.template_filters import upper_first as upper_first
from promptkit.template_limits import _RENDER, _Render
from promptkit.template_rewrite import _rewrite
from promptkit.template_sandbox import _ENV, _MASK, _PUBLIC_FILTERS, MASK_VARIABLE

_MARKER = re.compile(r"\x00(\d+)\x00")
_FIELDS = ("name", "text", "chat", "description", "example")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Template:
    """A cloze template, validated at construction.

    Args:
        text: jinja2 source with exactly one ``{{ mask }}``, e.g.
            ``"{{ text }} All in all, it was {{ mask }}."``. Filters ``strip_punct``,
            ``lower_first`` and ``upper_first`` are available besides jinja's own. See the
            module docstring for captured blocks and the sandbox's limits.
        name: a short identifier (catalog templates are named ``task/name``).
        chat: render the part before the mask as a user message in the tokenizer's chat
            format and score the mask as the assistant's first word. The mask must then
            end the template.
        example: an example to show in ``repr`` / notebooks and to test the template on.
        description: free text, e.g. the paper the pattern comes from.

    Raises:
        TemplateError: an argument has the wrong type, the text is not valid jinja, has no
            or several masks, uses what promptkit templates may not (``include``, a mask in
            a ``{% set %}`` block, ...), or holds a constant expression over a limit.

    Example:
        >>> t = Template("{{ text }} It was {{ mask }}.")
        >>> t.render({"text": "A gem."}).to_text()
        'A gem. It was [MASK].'
    """

    text: str
    name: str = ""
    chat: bool = False
    example: Mapping[str, Any] | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)
    _variables: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_arguments(self)
        try:
            tree = self._parse()
            masks = [n for n in tree.find_all(nodes.Name) if n.name == MASK_VARIABLE and n.ctx == "load"]
            if len(masks) != 1:
                raise TemplateError(
                    f"template {self.name!r} must contain {{{{ mask }}}} exactly once, found {len(masks)}: "
                    f"{self.text[:200]!r}. Put one {{{{ mask }}}} where the label word goes."
                )
            _check_tree(tree, self.name)
            tree = _rewrite(tree)
            compiled = self._compile(tree)
            variables = meta.find_undeclared_variables(tree) - {MASK_VARIABLE} - set(_ENV.globals)
        except (RecursionError, SyntaxError, MemoryError):  # Python's parser limits on the compiled code
            raise TemplateError(
                f"template {self.name!r} is nested too deeply to compile; flatten its expressions and blocks"
            ) from None
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_variables", frozenset(variables))

    def _parse(self) -> nodes.Template:
        try:
            return _ENV.parse(self.text)
        except jinja2.TemplateSyntaxError as err:
            line = self.text.splitlines()[err.lineno - 1] if err.lineno else ""
            raise TemplateError(
                f"template {self.name!r}: jinja syntax error on line {err.lineno}: {err.message} "
                f"(line: {line[:200]!r}). Fix the template text."
            ) from None
        except ValueError as err:  # e.g. an int literal longer than Python converts
            raise TemplateError(f"template {self.name!r}: cannot parse the text: {err}") from None

    def _compile(self, tree: nodes.Template) -> jinja2.Template:
        try:
            return _ENV.from_string(tree)
        except jinja2.TemplateAssertionError as err:
            unknown = re.search(r"No filter named '([^']+)'", err.message or "")
            hint = did_you_mean(unknown.group(1), _PUBLIC_FILTERS) if unknown else ""
            raise TemplateError(
                f"template {self.name!r}: {err.message} on line {err.lineno}.{hint} "
                f"Promptkit adds the filters strip_punct, lower_first and upper_first to jinja's own."
            ) from None

    @property
    def variables(self) -> frozenset[str]:
        """Example fields this template reads (not ``mask`` or globals such as ``range`` and ``soft``)."""
        return self._variables

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``name``, ``text``, ``chat``, ``description`` and ``example`` (None or a
        dict). JSON/YAML-ready when the example's values are; :meth:`from_dict` inverts it.

        Example:
            >>> Template.from_dict(Template("{{ text }} {{ mask }}", name="t").to_dict()).name
            't'
        """
        example = None if self.example is None else dict(self.example)
        return {"name": self.name, "text": self.text, "chat": self.chat, "description": self.description,
                "example": example}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        """Build a template from :meth:`to_dict` data; every key but ``text`` is optional.

        Raises:
            TemplateError: ``data`` is not a mapping, lacks ``text``, or has an unknown key
                (the message names the closest valid one).
        """
        check_keys("template data", data, _FIELDS, "text", TemplateError)
        return cls(**data)

    def __deepcopy__(self, memo: dict) -> Template:
        """Templates are immutable: a deep copy is the template itself (its compiled jinja cannot be copied)."""
        return self

    def __reduce__(self) -> tuple:
        """Pickle (e.g. scikit-learn's parallel grid search) as the fields; the text is compiled again."""
        return (Template, (self.text, self.name, self.chat, self.example, self.description))

    def render(self, example: Mapping[str, Any]) -> Prompt:
        """Render one example into a :class:`Prompt`.

        Raises:
            TemplateError: a field is missing or None/NaN, a filter is unknown, the template
                tried something the sandbox blocks, or it passed a limit (see the module
                docstring).
        """
        if not isinstance(example, Mapping):
            raise TemplateError(f"template {self.name!r}: an example must be a dict, got {type(example).__name__}")
        self._check_fields(example)
        state = _Render()
        token = _RENDER.set(state)
        try:
            rendered = self._generate({**example, MASK_VARIABLE: _MASK})
        except TemplateError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        except SecurityError as err:
            raise TemplateError(f"template {self.name!r} was blocked by the sandbox: {err}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"template {self.name!r}: {err}; example keys are {sorted(example)}") from None
        except jinja2.TemplateError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        except RecursionError:
            raise TemplateError(f"template {self.name!r} recursed too deeply while rendering") from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, MemoryError) as err:
            raise TemplateError(f"template {self.name!r} failed while rendering: {type(err).__name__}: {err}") from None
        finally:
            _RENDER.reset(token)
        return self._to_prompt(rendered, state.pieces)

    def _generate(self, variables: dict[str, Any]) -> str:
        chunks, size = [], 0
        for chunk in self._compiled.generate(variables):
            size += len(chunk)
            if size > template_limits.MAX_LENGTH:
                raise TemplateError(
                    f"the rendered text passed MAX_LENGTH={template_limits.MAX_LENGTH:,} characters; "
                    "shorten the inputs or the loops"
                )
            chunks.append(chunk)
        return "".join(chunks)

    def _check_fields(self, example: Mapping[str, Any]) -> None:
        missing = sorted(self._variables - set(example) - set(_ENV.globals))
        if missing:
            hint = did_you_mean(missing[0], example)
            raise TemplateError(
                f"template {self.name!r} needs field {missing[0]!r}, which the example lacks; "
                f"example keys are {sorted(example)}.{hint}"
            )
        for name in sorted(self._variables & set(example)):
            value = example[name]
            if _is_missing(value):
                raise TemplateError(
                    f"template {self.name!r}: field {name!r} is {value!r}; "
                    "fill or drop that example (text fields must be strings)"
                )
            if isinstance(value, str) and "\x00" in value:
                raise TemplateError(
                    f"template {self.name!r}: field {name!r} holds a NUL character (\\x00) at position "
                    f"{value.index(chr(0))}, which promptkit reserves for its internal markers; remove NUL "
                    "characters from the data (e.g. value.replace('\\x00', ''))"
                )

    def _to_prompt(self, rendered: str, pieces: list[Segment]) -> Prompt:
        segments: list[Segment] = []
        used: list[int] = []
        for i, part in enumerate(_MARKER.split(rendered)):
            if i % 2:
                used.append(int(part))
                segment = pieces[int(part)] if int(part) < len(pieces) else Segment("text", f"\x00{part}\x00")
            else:
                segment = Segment("text", part)
            if "\x00" in segment.text:
                raise TemplateError(
                    f"template {self.name!r} rendered a NUL character (\\x00) in its {segment.kind} text "
                    f"{segment.text[:60]!r}; NUL is reserved for promptkit's internal markers: remove it from "
                    "the data and the template"
                )
            if segment.text or segment.kind in ("mask", "slot"):
                segments.append(segment)
        if sorted(used) != list(range(len(pieces))):
            raise TemplateError(
                f"template {self.name!r}: the rendered text lost or repeated an internal segment marker "
                f"({sorted(used)} of {len(pieces)}); this is a promptkit bug, please report it with the template"
            )
        n_masks = sum(s.kind == "mask" for s in segments)
        if n_masks != 1:
            raise TemplateError(f"template {self.name!r} rendered {n_masks} masks; it must render exactly one")
        prompt = Prompt(tuple(segments), chat=self.chat)
        if self.chat and "".join(s.text for s in prompt.after_mask).strip():
            raise TemplateError(
                f"chat template {self.name!r} has text after {{{{ mask }}}}; in chat format the mask "
                "is the assistant's first word, so end the template with {{ mask }}"
            )
        return prompt

    def __repr__(self) -> str:
        chat = ", chat=True" if self.chat else ""
        return f"Template(name={self.name!r}, text={self.text!r}{chat})"

    def _repr_html_(self) -> str:
        rows = [f"<b>Template</b> {html.escape(self.name)}<pre>{html.escape(self.text)}</pre>"]
        if self.example is not None:
            prompt = self.render(self.example)
            body = "".join("<mark>[MASK]</mark>" if s.kind == "mask" else html.escape(s.text) for s in prompt.segments)
            rows.append(f"<b>Rendered example</b><pre>{body}</pre>")
        return "".join(rows)


def render_all(template: Template, examples: list[Mapping[str, Any]]) -> list[Prompt]:
    """Render many examples, naming the row of the first one that fails."""
    prompts = []
    for row, example in enumerate(examples):
        try:
            prompts.append(template.render(example))
        except TemplateError as err:
            raise TemplateError(f"row {row}: {err}") from None
    return prompts
