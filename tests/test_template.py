import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptkit import Template, TemplateError
from promptkit.template import render_all


def test_render_splits_text_input_and_mask():
    prompt = Template("{{ text }} All in all, it was {{ mask }}.").render({"text": "A gem."})
    assert [s.kind for s in prompt.segments] == ["input", "text", "mask", "text"]
    assert prompt.to_text() == "A gem. All in all, it was [MASK]."
    assert prompt.to_text("___") == "A gem. All in all, it was ___."
    assert [s.text for s in prompt.after_mask] == ["."]


def test_filters_from_pet():
    t = Template('"{{ hypothesis | strip_punct }}"? {{ mask }}, "{{ premise | lower_first }}"')
    prompt = t.render({"hypothesis": "It rains.", "premise": "The sky is grey"})
    assert prompt.to_text() == '"It rains"? [MASK], "the sky is grey"'
    assert t.variables == frozenset({"hypothesis", "premise"})


def test_jinja_control_flow_and_builtin_filters():
    t = Template("{% if title %}{{ title | upper }}: {% endif %}{{ body }} {{ mask }}")
    assert t.render({"title": "x", "body": "b"}).to_text() == "X: b [MASK]"
    assert t.render({"title": "", "body": "b"}).to_text() == "b [MASK]"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{{ text }} no mask", "exactly once, found 0"),
        ("{{ mask }} and {{ mask }}", "exactly once, found 2"),
        ("{{ text }}\n{% if %}{{ mask }}", "syntax error on line 2"),
        ("{{ text | lowr }} {{ mask }}", "No filter named 'lowr'.*Did you mean 'lower'"),
        ("", "non-empty"),
    ],
)
def test_malformed_templates_are_rejected(text, match):
    with pytest.raises(TemplateError, match=match):
        Template(text, name="bad")


def test_missing_field_names_field_and_keys():
    t = Template("{{ text }} It was {{ mask }}.", name="t")
    with pytest.raises(TemplateError, match=r"needs field 'text'.*\['sentence'\]"):
        t.render({"sentence": "x"})


@pytest.mark.parametrize("value", [None, float("nan")])
def test_none_or_nan_text_names_the_row(value):
    t = Template("{{ text }} {{ mask }}")
    with pytest.raises(TemplateError, match=r"row 1: .*field 'text' is"):
        render_all(t, [{"text": "fine"}, {"text": value}])


@pytest.mark.parametrize(
    "escape",
    ["{{ ''.__class__.__mro__ }}", "{{ text.__class__.__init__.__globals__ }}", "{{ cycler.__init__.__globals__ }}"],
)
def test_sandbox_blocks_escapes(escape):
    t = Template(escape + " {{ mask }}")
    with pytest.raises(TemplateError):
        t.render({"text": "x"})


def test_chat_template_must_end_with_mask():
    with pytest.raises(TemplateError, match="end the template with"):
        Template("Q: {{ text }} {{ mask }} end", chat=True).render({"text": "x"})
    assert Template("Q: {{ text }}\n{{ mask }}", chat=True).render({"text": "x"}).chat


def test_mask_cannot_be_filtered():
    with pytest.raises(TemplateError, match="mask"):
        Template("{{ text }} {{ mask | upper }}").render({"text": "x"})


def test_repr_and_notebook_html():
    t = Template("{{ text }} It was {{ mask }}.", name="sst2/it_was", example={"text": "A <b>gem</b>."})
    assert repr(t) == "Template(name='sst2/it_was', text='{{ text }} It was {{ mask }}.')"
    html = t._repr_html_()
    assert "<mark>[MASK]</mark>" in html and "&lt;b&gt;gem" in html


def test_templates_are_frozen_data():
    t = Template("{{ text }} {{ mask }}")
    with pytest.raises(AttributeError):
        t.text = "other"
    assert t == Template("{{ text }} {{ mask }}")


@given(st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=50))
def test_any_input_text_round_trips(value):
    prompt = Template("<{{ text }}> {{ mask }}").render({"text": value})
    assert prompt.to_text("M") == f"<{value}> M"


def test_strip_punct_matches_pet():
    t = Template("{{ h | strip_punct }}? {{ mask }}")
    assert t.render({"h": 'He said "no."'}).to_text() == 'He said "no? [MASK]'


def test_variables_are_example_fields_only():
    t = Template("{{ soft(2) }}{% set r %}{{ text }}{% endset %}{% for i in range(2) %}{{ r }}{% endfor %} {{ mask }}")
    assert t.variables == frozenset({"text"})
    assert t.render({"text": "x"}).to_text() == "<soft*2>xx [MASK]"


def test_filter_block_output_is_one_input_segment():
    prompt = Template("{% filter upper %}Q: {{ text }}{% endfilter %} {{ mask }}").render({"text": "why"})
    assert [(s.kind, s.text) for s in prompt.segments] == [("input", "Q: WHY"), ("text", " "), ("mask", "")]


def test_templates_deep_copy_and_pickle_as_their_fields():
    """scikit-learn's clone and parallel grid search copy and pickle parameter values."""
    import copy
    import pickle

    template = Template("{{ text }} It was {{ mask }}.", name="t", description="d", example={"text": "A gem."})
    assert copy.deepcopy(template) is template  # immutable: nothing to copy
    again = pickle.loads(pickle.dumps(template))
    assert again == template and again.example == {"text": "A gem."} and again.description == "d"
    assert again.render({"text": "Fine."}).to_text() == "Fine. It was [MASK]."
