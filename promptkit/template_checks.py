"""Checks on a template before it is compiled: what promptkit templates may not be or do.

:func:`_check_arguments` refuses a :class:`~promptkit.template.Template` built from arguments
of the wrong type or value (an empty text, a text over ``MAX_LENGTH`` or holding NUL ...).
:func:`_check_tree` refuses ``include`` / ``import`` / ``extends`` / ``block``, the name
``self`` and ``_pk_`` names, and a ``{{ mask }}`` inside a captured block; it also evaluates
the template's constant expressions and constant-range loops under the render limits
(:func:`_fold`, :func:`_check_loops`), so a template such as ``{{ 'a' * 10**9 }}`` fails
when it is built, not when it is first rendered. :func:`_capture_kind` (which blocks jinja
captures) is shared with :mod:`promptkit.template_rewrite`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from promptkit import template_limits
from promptkit.errors import TemplateError
from promptkit.template_limits import _BINOPS, _bounded_binop, _bounded_range, _check_length, _size
from promptkit.template_sandbox import MASK_VARIABLE

if TYPE_CHECKING:
    from promptkit.template import Template

_REFUSED = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Block: "{% block %}",
}
_CAPTURING = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.AssignBlock: "{% set %}...{% endset %}",
}


def _capture_kind(node: nodes.Node) -> str | None:
    """Which captured block ``node`` is (its output is buffered, not written), or None."""
    if isinstance(node, nodes.For) and node.recursive:
        return "recursive {% for %}"
    return next((kind for cls, kind in _CAPTURING.items() if isinstance(node, cls)), None)


def _fold(node: nodes.Node, cache: dict[int, Any]) -> Any:
    """Value of a constant expression, computed under the render limits (so a too-large
    constant raises :class:`TemplateError`); :class:`~jinja2.nodes.Impossible` if not constant."""
    key = id(node)
    if key not in cache:
        try:
            cache[key] = _fold_node(node, cache)
        except TemplateError:
            raise
        except Exception:  # not constant, or an error (1/0) that rendering reports
            cache[key] = nodes.Impossible
    if cache[key] is nodes.Impossible:
        raise nodes.Impossible()
    return cache[key]


def _fold_node(node: nodes.Node, cache: dict[int, Any]) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = [_fold(item, cache) for item in node.items]
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg):
        return -_fold(node.node, cache)
    if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
        return _bounded_binop(node.operator, _fold(node.left, cache), _fold(node.right, cache))
    if isinstance(node, nodes.Concat):
        items = [_fold(item, cache) for item in node.nodes]
        _check_length("a '~' concatenation", sum(_size(item) for item in items))
        return "".join(map(str, items))
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise nodes.Impossible()
        return _bounded_range(*(_fold(arg, cache) for arg in node.args))
    raise nodes.Impossible()


def _check_loops(node: nodes.Node, iterations: int, cache: dict[int, Any]) -> None:
    """Refuse loops over constant ranges whose nesting multiplies past ``MAX_STEPS``."""
    for child in node.iter_child_nodes():
        inner = iterations
        if isinstance(child, nodes.For):
            with contextlib.suppress(nodes.Impossible, TypeError):  # not a constant sequence
                inner *= max(len(_fold(child.iter, cache)), 1)
            if inner > template_limits.MAX_STEPS:
                raise TemplateError(
                    f"loops over constant ranges nested here (line {child.lineno}) would run {inner:,} iterations, "
                    f"over the template limit MAX_STEPS={template_limits.MAX_STEPS:,}; loop over fewer items"
                )
        _check_loops(child, inner, cache)


def _check_arguments(template: Template) -> None:
    """Refuse a :class:`~promptkit.template.Template` whose arguments have the wrong type or value."""
    if not isinstance(template.name, str):
        raise TemplateError(
            f"template name must be a str, got {template.name!r} ({type(template.name).__name__}); "
            "pass e.g. name='sst2/it_was'"
        )
    if not isinstance(template.text, str) or not template.text.strip():
        raise TemplateError(f"template {template.name!r}: text must be a non-empty str, got {template.text!r}")
    if len(template.text) > template_limits.MAX_LENGTH:
        raise TemplateError(
            f"template {template.name!r}: text has {len(template.text):,} characters, over the template limit "
            f"MAX_LENGTH={template_limits.MAX_LENGTH:,}; shorten it"
        )
    if "\x00" in template.text:
        raise TemplateError(f"template {template.name!r}: text contains a NUL character; remove it")
    if not isinstance(template.chat, bool):
        raise TemplateError(
            f"template {template.name!r}: chat must be True or False, got {template.chat!r} "
            f"({type(template.chat).__name__}); pass chat=True for the tokenizer's chat format, chat=False otherwise"
        )
    if not isinstance(template.description, str):
        raise TemplateError(
            f"template {template.name!r}: description must be a str, got {template.description!r} "
            f"({type(template.description).__name__}); pass free text, or leave it out"
        )
    if template.example is not None and not isinstance(template.example, Mapping):
        raise TemplateError(
            f"template {template.name!r}: example must be a dict of fields (or None), got {template.example!r} "
            f"({type(template.example).__name__}); pass e.g. example={{'text': 'A gem.'}}"
        )


def _check_tree(tree: nodes.Template, name: str) -> None:
    """Refuse, before compiling, what promptkit templates may not do."""
    for node in tree.find_all(tuple(_REFUSED)):
        raise TemplateError(
            f"template {name!r} uses {_REFUSED[type(node)]} (line {node.lineno}), which promptkit templates do not "
            "support: a template is one self-contained text (no loader, no inheritance); write the text inline"
        )
    for node in tree.find_all((nodes.Name, nodes.Filter, nodes.Test)):
        if node.name.startswith("_pk_"):
            raise TemplateError(
                f"template {name!r} uses the name {node.name!r} (line {node.lineno}); names starting with '_pk_' "
                "are reserved for promptkit: rename it"
            )
        if isinstance(node, nodes.Name) and node.name == "self":
            raise TemplateError(
                f"template {name!r} uses 'self' (line {node.lineno}), jinja's reference to the template object, "
                "which promptkit templates do not support; rename the field"
            )
    for node in tree.find_all(nodes.Node):
        kind = _capture_kind(node)
        mask = next((n for n in node.find_all(nodes.Name) if n.name == MASK_VARIABLE), None) if kind else None
        if mask is not None:
            raise TemplateError(
                f"template {name!r}: {{{{ mask }}}} (line {mask.lineno}) is inside a {kind} block, whose output "
                "promptkit captures as plain text, so the mask would be lost; output {{ mask }} directly from "
                "the template, outside the block (to change the text around it, filter the fields instead, "
                "e.g. {{ text | upper }})"
            )
    cache: dict[int, Any] = {}
    try:
        for node in tree.find_all((nodes.BinExpr, nodes.Concat, nodes.Call)):
            with contextlib.suppress(nodes.Impossible):
                _fold(node, cache)
        _check_loops(tree, 1, cache)
    except TemplateError as err:
        raise TemplateError(f"template {name!r}: {err}") from None
