"""{{ soft(n) }} / {{ trigger(n) }} slots: rendering, encoding positions, and embedding replacement."""

import pytest
import torch

from promptkit import PromptkitError, PromptModel, Template, TemplateError, Verbalizer
from promptkit.addons import AddOn

SENTIMENT = Verbalizer({0: ["terrible"], 1: ["great"]})
EXAMPLES = [{"text": "a charming journey."}, {"text": "bleak, slow and desperate"}]


class FixedVectors(AddOn):
    """A test-only slot add-on (not registered: it is never saved)."""

    role = "slot_embeddings"

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.vectors = torch.nn.Parameter(vectors)

    def slot_vectors(self, model) -> torch.Tensor:
        return self.vectors


def test_slots_render_as_segments():
    prompt = Template("{{ soft(3) }} {{ text }} {{ trigger(2) }} It was {{ mask }}").render({"text": "hi"})
    assert [s.kind for s in prompt.segments] == ["slot", "text", "input", "text", "slot", "text", "mask"]
    assert prompt.slot_size == 5 and prompt.to_text() == "<soft*3> hi <trigger*2> It was [MASK]"
    with pytest.raises(TemplateError, match=r"soft\(n\) needs an int n between 1 and 512, got 0"):
        Template("{{ soft(0) }} {{ mask }}").render({})


@pytest.mark.parametrize("head", ["causal", "mlm"])
@pytest.mark.parametrize(
    "text", ["{{ soft(3) }} {{ text }} It was {{ mask }}", "{{ text }} {{ soft(2) }} {{ mask }} . {{ soft(1) }}"]
)
def test_slot_positions_point_at_placeholders(head, text, tiny_causal, bpe_tokenizer, tiny_mlm, wordpiece_tokenizer):
    backbone, tok = (tiny_causal, bpe_tokenizer) if head == "causal" else (tiny_mlm, wordpiece_tokenizer)
    model = PromptModel(backbone, tok, Template(text), SENTIMENT)
    batch = model.encode(EXAMPLES)
    assert batch.slot_positions.shape == (batch.input_ids.shape[0], 3)
    placeholder = tok.convert_tokens_to_ids(model.encoder.slot_token)
    picked = batch.input_ids.gather(1, batch.slot_positions)
    assert (picked == placeholder).all()


def test_slot_embeddings_replace_placeholder_inputs(tiny_causal, bpe_tokenizer):
    words = bpe_tokenizer("Movie review:", add_special_tokens=False)["input_ids"]
    slotted = Template(f"{{{{ soft({len(words)}) }}}} {{{{ text }}}} It was {{{{ mask }}}}")
    model = PromptModel(tiny_causal, bpe_tokenizer, slotted, SENTIMENT)
    with pytest.raises(PromptkitError, match="no add-on fills them"):
        model.predict_proba(EXAMPLES)
    # Slot vectors equal to the embeddings of real words give the same scores as those words as text.
    model.attach(FixedVectors(tiny_causal.get_input_embeddings().weight[words].detach().clone()))
    as_text = PromptModel(tiny_causal, bpe_tokenizer, Template("Movie review: {{ text }} It was {{ mask }}"), SENTIMENT)
    torch.testing.assert_close(
        torch.tensor(model.predict_proba(EXAMPLES)), torch.tensor(as_text.predict_proba(EXAMPLES)), atol=1e-5, rtol=0
    )


def test_gradients_reach_slot_vectors(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(
        tiny_mlm, wordpiece_tokenizer, Template("{{ soft(4) }} {{ text }} It was {{ mask }}."), SENTIMENT
    )
    model.attach(FixedVectors(torch.randn(4, tiny_mlm.config.hidden_size)))
    scores = model(model.encode(EXAMPLES))
    scores[:, 1].sum().backward()
    grad = model.addons["slot_embeddings"].vectors.grad
    assert grad is not None and grad.abs().sum() > 0
