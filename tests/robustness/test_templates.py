"""Hostile and malformed templates: each fails fast with a TemplateError that names the
template and the limit or field, or behaves as the template module documents."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from promptkit import Template, TemplateError
from promptkit.catalog import read_templates
from promptkit.errors import CatalogError
from promptkit.template_limits import MAX_LENGTH

NAME = "hostile"


def _refused(text: str, example: dict | None = None, *, match: str) -> TemplateError:
    """Build and (if that succeeds) render; the TemplateError must come within 2 s, name the
    template and match ``match``."""
    start = time.perf_counter()
    with pytest.raises(TemplateError, match=match) as caught:
        Template(text, name=NAME).render(example or {})
    assert time.perf_counter() - start < 2.0, "a hostile template must fail fast"
    assert repr(NAME) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    return caught.value


# --------------------------------------------------------------------- denial of service
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{{ 9**(9**9) }} {{ mask }}", r"9 \*\* 387420489 .*MAX_INT_BITS=4,096"),
        ("{{ 2 ** 100000 }} {{ mask }}", "MAX_INT_BITS"),
        ("{{ 'a' * 999999999 }} {{ mask }}", r"str \* 999999999 .*MAX_LENGTH=1,000,000"),
        ('{{ "x" * 10**9 }} {{ mask }}', r"str \* 1000000000 .*MAX_LENGTH"),
        ("{{ ['a'] * 10**7 }} {{ mask }}", r"list \* 10000000 .*MAX_LENGTH"),
        ("{{ ('a' ~ 'b') * 999999 }} {{ mask }}", "MAX_LENGTH"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{{ mask }}", "MAX_RANGE"),
        ("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}{{ mask }}", "MAX_STEPS"),
        ("{{ range(10**6) | list }} {{ mask }}", r"range\(1000000\) has 1,000,000 items.*MAX_RANGE=10,000"),
    ],
)
def test_constant_resource_bombs_fail_at_construction(text, match):
    start = time.perf_counter()
    with pytest.raises(TemplateError, match=match) as caught:
        Template(text, name=NAME)
    assert time.perf_counter() - start < 2.0
    assert repr(NAME) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "example", "match"),
    [
        ("{{ n ** (n ** n) }} {{ mask }}", {"n": 9}, "MAX_INT_BITS"),
        ("{{ s * n }} {{ mask }}", {"s": "a", "n": 10**9}, r"str \* 1000000000 .*MAX_LENGTH"),
        (
            "{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}{{ mask }}",
            {"n": 10_000},
            "MAX_STEPS=100,000",
        ),
        (
            "{% set r = range(n) %}{% for i in r %}{% for j in r %}{% for k in r %}{% endfor %}{% endfor %}"
            "{% endfor %}{{ mask }}",
            {"n": 1000},
            "MAX_STEPS",
        ),
        ("{{ range(n) }} {{ mask }}", {"n": 10**6}, "MAX_RANGE"),
        (
            "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ mask }}",
            {},
            r"'~' concatenation .*MAX_LENGTH",
        ),
        (
            "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ mask }}",
            {},
            r"str \+ str .*MAX_LENGTH",
        ),
        ("{{ s.ljust(n) }} {{ mask }}", {"s": "a", "n": 10**9}, r"str\.ljust\(\) .*MAX_LENGTH"),
        ("{{ s | center(n) }} {{ mask }}", {"s": "a", "n": 10**9}, "filter 'center' with width=1000000000"),
        ("{{ '%*d' % (n, 1) }} {{ mask }}", {"n": 10**9}, r"'%' format .*MAX_LENGTH"),
        ("{{ '{:{}}'.format(1, n) }} {{ mask }}", {"n": 10**9}, r"str\.format\(\) .*MAX_LENGTH"),
        ("{{ s.replace('a', s) }} {{ mask }}", {"s": "a" * 100_000}, r"str\.replace\(\) .*MAX_LENGTH"),
        ("{{ s | replace('a', s) }} {{ mask }}", {"s": "a" * 100_000}, "filter 'replace' .*MAX_LENGTH"),
        ("{{ s | indent(s) }} {{ mask }}", {"s": "a\n" * 100_000}, "filter 'indent' .*MAX_LENGTH"),
        ("{{ s | wordwrap(1, wrapstring=s) }} {{ mask }}", {"s": "a " * 100_000}, "filter 'wordwrap'"),
        ("{{ ([s] * 1000) | join }} {{ mask }}", {"s": "a" * 100_000}, "filter 'join' .*MAX_LENGTH"),
        ("{{ [s] * 1000 }} {{ mask }}", {"s": "a" * 100_000}, "an output would be .*MAX_LENGTH"),
        ("{{ s }}{{ s }} {{ mask }}", {"s": "a" * 600_000}, "rendered text passed MAX_LENGTH"),
        ("{{ xs | sum(start=[]) }} {{ mask }}", {"xs": [[1], [2]]}, "filter 'sum' adds numbers only; got start=\\[\\]"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }} {{ mask }}", {}, "MAX_DEPTH=32"),
        (
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(20) }} {{ mask }}",
            {},
            "MAX_STEPS|MAX_SECONDS",  # 2**20 calls: whichever budget runs out first
        ),
        (
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}" + "x" * 5000 + "{% endif %}{% endmacro %}"
            "{{ f(16) }} {{ mask }}",
            {},
            "MAX_LENGTH",
        ),
    ],
)
def test_resource_bombs_fail_fast_at_render(text, example, match):
    _refused(text, example, match=match)


# ------------------------------------------------------------------------- sandbox escapes
@pytest.mark.parametrize(
    ("text", "attribute"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ cycler.__init__.__globals__ }}", "__init__"),
        ("{{ text.__class__.__init__.__globals__ }}", "__init__"),  # jinja names the next hop on an unsafe value
        ("{{ range.__globals__ }}", "__globals__"),
        ("{{ text | attr('__class__') }}", "__class__"),
        ("{{ '{0.__class__}'.format(text) }}", "__class__"),
        ("{{ (text | list).append(1) }}", "append"),
        ("{{ text.translate({}) }}", "translate"),
        ("{{ text.__len__() }}", "__len__"),
    ],
)
def test_sandbox_escapes_are_blocked(text, attribute):
    _refused(text + " {{ mask }}", {"text": "x"}, match=f"blocked by the sandbox: access to attribute '{attribute}'")


# ------------------------------------------------------------ refused at construction
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{{ self }} {{ mask }}", "uses 'self'"),
        ("{% include 'other.txt' %} {{ mask }}", r"uses \{% include %\}.*no loader"),
        ("{% import 'macros' as m %} {{ mask }}", r"uses \{% import %\}"),
        ("{% from 'macros' import m %} {{ mask }}", r"uses \{% from \.\.\. import %\}"),
        ("{% extends 'base' %} {{ mask }}", r"uses \{% extends %\}"),
        ("{% block b %}x{% endblock %} {{ mask }}", r"uses \{% block %\}"),
        ("{{ text | _pk_emit }} {{ mask }}", "'_pk_emit'.*reserved"),
        ("{{ mask }} and {{ mask }}", "exactly once, found 2"),
        ("{{ text }} no mask", "exactly once, found 0"),
        ("{% set r %}{{ mask }}{% endset %}{{ r }}", r"\{\{ mask \}\} \(line 1\) is inside a \{% set %\}"),
        ("{% filter upper %}{{ mask }}{% endfilter %}", r"inside a \{% filter %\} block"),
        ("{% macro m() %}{{ mask }}{% endmacro %}{{ m() }}", r"inside a \{% macro %\} block"),
        ("{{ text | lowr }} {{ mask }}", "No filter named 'lowr'.*Did you mean 'lower'"),
        ("{{ text | urlize }} {{ mask }}", "No filter named 'urlize'"),
        ("{{ text }}\x00{{ mask }}", "NUL"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }} {{ mask }}", "nested too deeply"),
        ("{% if a %}" * 200 + "x" + "{% endif %}" * 200 + "{{ mask }}", "nested too deeply"),
        ("{{ " + "9" * 5000 + " }} {{ mask }}", "cannot parse the text"),
        ("{{ text }}\n{% if %}{{ mask }}", "syntax error on line 2"),
    ],
)
def test_unsupported_templates_are_refused_at_construction(text, match):
    with pytest.raises(TemplateError, match=match) as caught:
        Template(text, name=NAME)
    assert repr(NAME) in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chat": "no"}, r"chat must be True or False, got 'no' \(str\); pass chat=True"),
        ({"chat": 1}, r"chat must be True or False, got 1 \(int\)"),
        ({"chat": None}, r"chat must be True or False, got None"),
        ({"name": 5}, r"template name must be a str, got 5 \(int\)"),
        ({"description": ["PET"]}, r"description must be a str, got \['PET'\] \(list\)"),
        ({"example": "A gem."}, r"example must be a dict of fields \(or None\), got 'A gem.' \(str\)"),
        ({"text": 123}, "text must be a non-empty str, got 123"),
        ({"text": None}, "text must be a non-empty str, got None"),
        ({"text": "   "}, "text must be a non-empty str"),
        ({"text": "{{ mask }}" + "x" * MAX_LENGTH}, "text has 1,000,010 characters.*MAX_LENGTH"),
    ],
)
def test_argument_types_are_checked(kwargs, match):
    with pytest.raises(TemplateError, match=match):
        Template(**{"text": "{{ text }} {{ mask }}", **kwargs})


# ------------------------------------------------------------------- render-time refusals
@pytest.mark.parametrize(
    ("text", "example", "match"),
    [
        ("{% macro f(x) %}<{{ x }}>{% endmacro %}{{ f(mask) }}", {}, r"\{\{ mask \}\} was output inside a captured"),
        ("{% set s %}{{ soft(2) }}{% endset %}{{ s }} {{ mask }}", {}, r"soft\(2\) was output inside a captured"),
        ("{{ text }} {{ mask | upper }}", {"text": "x"}, "mask .*cannot be passed through filters"),
        ("{{ mask ~ '!' }}", {}, "mask .*cannot be passed through filters"),
        ("{% for i in range(2) %}{{ mask }}{% endfor %}", {}, "rendered 2 masks"),
        ("{{ '\\x00' }} {{ mask }}", {}, r"rendered a NUL character \(\\x00\) in its input text"),
        ("{{ text }} {{ mask }}", {"text": "a\x00b"}, r"field 'text' holds a NUL character \(\\x00\) at position 1"),
        ("{{ 1 / 0 }} {{ mask }}", {}, "failed while rendering: ZeroDivisionError"),
        ("{{ text }} {{ mask }}", {"text": None}, "field 'text' is None"),
        ("{{ text }} {{ mask }}", {"sentence": "x"}, r"needs field 'text'.*\['sentence'\]"),
        ("{{ lipsum(3) }} {{ mask }}", {}, "needs field 'lipsum'"),
    ],
)
def test_bad_renders_are_template_errors(text, example, match):
    _refused(text, example, match=match)


def test_an_example_must_be_a_mapping():
    with pytest.raises(TemplateError, match="an example must be a dict, got str"):
        Template("{{ text }} {{ mask }}", name=NAME).render("A gem.")


# --------------------------------------------------------------- captured blocks (documented)
@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("{% filter upper %}{{ text }}{% endfilter %} {{ mask }}", [("input", "HI"), ("text", " "), ("mask", "")]),
        (
            "{% filter upper %}Review: {{ text }}{% endfilter %} {{ mask }}",
            [("input", "REVIEW: HI"), ("text", " "), ("mask", "")],
        ),
        (
            "{% filter upper %}{% filter trim %}  {{ text }}  {% endfilter %}{% endfilter %} {{ mask }}",
            [("input", "HI"), ("text", " "), ("mask", "")],
        ),
        ("{% set r %}{{ text }}!{% endset %}{{ r }} {{ mask }}", [("input", "hi!"), ("text", " "), ("mask", "")]),
        ("{% set r | upper %}{{ text }}{% endset %}{{ r }} {{ mask }}", [("input", "HI"), ("text", " "), ("mask", "")]),
        (
            "{% set r %}{{ text }}{% endset %}{% if r == 'hi' %}yes {% endif %}{{ mask }}",
            [("text", "yes "), ("mask", "")],
        ),
        (
            "{% macro f(x) %}<{{ x }}>{% endmacro %}{{ f(text) }} {{ mask }}",
            [("input", "<hi>"), ("text", " "), ("mask", "")],
        ),
        (
            "{% macro f() %}[{{ caller() }}]{% endmacro %}{% call f() %}{{ text }}{% endcall %} {{ mask }}",
            [("input", "[hi]"), ("text", " "), ("mask", "")],
        ),
        (
            "{% for x in tree recursive %}{{ x.n }}({{ loop(x.c) }}){% endfor %} {{ mask }}",
            [("input", "a(b())"), ("text", " "), ("mask", "")],
        ),
        (
            "{% for i in range(2) %}{% filter upper %}{{ text }}{{ i }}{% endfilter %},{% endfor %}{{ mask }}",
            [("input", "HI0"), ("text", ","), ("input", "HI1"), ("text", ","), ("mask", "")],
        ),
    ],
)
def test_captured_blocks_give_their_real_text_as_one_input(text, segments):
    example = {"text": "hi", "tree": [{"n": "a", "c": [{"n": "b", "c": []}]}]}
    prompt = Template(text, name=NAME).render(example)
    assert [(s.kind, s.text) for s in prompt.segments] == segments
    assert "\x00" not in prompt.to_text()


def test_ordinary_templates_still_render_as_before():
    text = "{% for k, v in d | dictsort %}{{ k }}={{ v }};{% endfor %} {{ '%s/%s' % (a, b) }} {{ a ~ b }} {{ mask }}"
    prompt = Template(text).render({"d": {"y": 2, "x": 1}, "a": "p", "b": "q"})
    assert prompt.to_text() == "x=1;y=2; p/q pq [MASK]"
    assert [s.kind for s in prompt.segments][:4] == ["input", "text", "input", "text"]


def test_a_long_but_legal_input_renders():
    prompt = Template("{{ text }} {{ mask }}").render({"text": "x" * 900_000})
    assert len(prompt.segments[0].text) == 900_000


# ----------------------------------------------------------------------- to_dict / from_dict
TEMPLATE = Template(
    "Review: {{ text }}\nSentiment: {{ mask }}",
    name="sst2/review",
    chat=True,
    example={"text": "A gem.", "label": 1},
    description="PET-style pattern",
)


@pytest.mark.parametrize(
    "through",
    [
        lambda d: d,
        lambda d: yaml.safe_load(yaml.safe_dump(d, sort_keys=False)),
        lambda d: json.loads(json.dumps(d)),
    ],
    ids=["dict", "yaml", "json"],
)
def test_template_round_trips_with_every_field(through):
    data = TEMPLATE.to_dict()
    assert data == {
        "name": "sst2/review",
        "text": "Review: {{ text }}\nSentiment: {{ mask }}",
        "chat": True,
        "description": "PET-style pattern",
        "example": {"text": "A gem.", "label": 1},
    }
    again = Template.from_dict(through(data))
    assert again == TEMPLATE
    assert again.to_dict() == data
    assert again.render(again.example).to_text() == TEMPLATE.render(TEMPLATE.example).to_text()


def test_a_template_without_example_round_trips():
    plain = Template("{{ text }} {{ mask }}")
    assert plain.to_dict()["example"] is None
    assert Template.from_dict(plain.to_dict()).to_dict() == plain.to_dict()
    assert Template.from_dict({"text": "{{ text }} {{ mask }}"}) == plain  # every key but text is optional


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"text": "{{ text }} {{ mask }}", "descripton": "x"}, "unknown key 'descripton'. Did you mean 'description'"),
        ({"txt": "{{ text }} {{ mask }}"}, "unknown key 'txt'. Did you mean 'text'"),
        ({"name": "x"}, "has no 'text'"),
        (["{{ text }} {{ mask }}"], "must be a mapping .*got list"),
        ("{{ text }} {{ mask }}", "must be a mapping .*got str"),
        ({"text": "{{ text }} {{ mask }}", "chat": "no"}, "chat must be True or False, got 'no'"),
    ],
)
def test_from_dict_rejects_bad_data(data, match):
    with pytest.raises(TemplateError, match=match):
        Template.from_dict(data)


# ---------------------------------------------------------------------------------- catalog
@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ('{text: "{{ x }} {{ mask }}", chat: "no"}', r"chat: 'no' \(str\); write chat: true or chat: false"),
        ('{text: "{{ x }} {{ mask }}", chat: 1}', r"chat: 1 \(int\)"),
        ('{text: "{{ x }} {{ mask }}", descripton: d}', "unknown key 'descripton'. Did you mean 'description'"),
        ('{text: "{{ x }} {{ mask }}", description: 3}', "description must be a str, got 3"),
        ('{text: "{% set r %}{{ mask }}{% endset %}{{ r }}"}', r"inside a \{% set %\}"),
    ],
)
def test_catalog_file_mistakes_are_catalog_errors(tmp_path, entry, match):
    path = tmp_path / "t.yaml"
    path.write_text(f"task: t\ntemplates:\n  a: {entry}\n")
    with pytest.raises(CatalogError, match=match):
        read_templates(path)
