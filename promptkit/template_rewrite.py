"""The rewriting pass that turns a checked jinja2 tree into one that records segments.

:func:`_rewrite` routes every loop and ``~`` through the internal filters that keep the
render budget (:class:`_Bounds`), and makes every output that goes straight to the prompt a
segment (``_pk_emit``) while the output of captured blocks stays plain text; a captured
block that writes to the prompt (``{% filter %}``, ``{% call %}``, a recursive loop) is
captured into a variable and output as one input segment (:class:`_Segments`). See
"Captured blocks" in :mod:`promptkit.template` for what users see.
"""

from __future__ import annotations

from jinja2 import nodes
from jinja2.visitor import NodeTransformer

from promptkit.template_checks import _capture_kind
from promptkit.template_sandbox import _ENV


def _internal(node: nodes.Expr, name: str, *args: nodes.Expr) -> nodes.Filter:
    """``node | <internal filter>(*args)``."""
    wrapped = nodes.Filter(node, name, list(args), [], None, None)
    wrapped.set_lineno(node.lineno or 1)
    return wrapped


class _Bounds(NodeTransformer):
    """Route every loop and ``~`` through the internal filters that keep the render budget."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return _internal(nodes.List(node.nodes, lineno=node.lineno), "_pk_concat")

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        cost = 1 + sum(len(data.data) for data in node.find_all(nodes.TemplateData))
        node.iter = _internal(node.iter, "_pk_loop", nodes.Const(cost))
        return node


class _Segments:
    """Make every output that goes straight to the prompt a segment (``_pk_emit``); leave the
    output of captured blocks plain text, and output a captured block that writes to the
    prompt (filter, call, recursive loop) as one segment."""

    def __init__(self) -> None:
        self.blocks = 0

    def body(self, body: list[nodes.Node], captured: bool) -> list[nodes.Node]:
        return [new for node in body for new in self.statement(node, captured)]

    def statement(self, node: nodes.Node, captured: bool) -> list[nodes.Node]:
        if isinstance(node, nodes.Output):
            if not captured:
                node.nodes = [n if isinstance(n, nodes.TemplateData) else _internal(n, "_pk_emit") for n in node.nodes]
            return [node]
        kind = _capture_kind(node)
        for attr in ("body", "else_", "elif_"):
            if attr in node.fields and isinstance(getattr(node, attr), list):
                setattr(node, attr, self.body(getattr(node, attr), captured or kind is not None))
        if captured or kind is None or isinstance(node, (nodes.Macro, nodes.AssignBlock)):
            return [node]
        self.blocks += 1
        name = f"_pk_block{self.blocks}"
        if isinstance(node, nodes.FilterBlock):
            assign = nodes.AssignBlock(nodes.Name(name, "store"), node.filter, node.body)
        else:
            assign = nodes.AssignBlock(nodes.Name(name, "store"), None, [node])
        output = nodes.Output([_internal(nodes.Name(name, "load"), "_pk_emit")])
        for new in (assign, output):
            new.set_lineno(node.lineno)
        return [assign, output]


def _rewrite(tree: nodes.Template) -> nodes.Template:
    tree = _Bounds().visit(tree)
    tree.body = _Segments().body(tree.body, captured=False)
    tree.set_environment(_ENV)
    return tree
