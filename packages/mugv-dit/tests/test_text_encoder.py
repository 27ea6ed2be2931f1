"""The real pretrained MiniLM-L6 behind `TextEncoder`, and the T5 branch on a tiny local T5."""

from __future__ import annotations

import pytest
import torch

from mugv.dit.text_encoder import HFTextEncoder, TextEncoder, TextEncoderError


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return HFTextEncoder(max_length=32, batch_size=2)


def test_minilm_shapes_mask_and_protocol(minilm):
    assert isinstance(minilm, TextEncoder)
    assert minilm.dim == 384
    texts = ["a red circle moves left", "a small blue square moves up over a grey floor", ""]
    tokens, mask = minilm.encode(texts)
    assert tokens.shape == (3, mask.shape[1], 384) and mask.dtype == torch.bool
    lengths = mask.sum(1).tolist()
    assert lengths[1] == mask.shape[1] > lengths[0] > lengths[2] == 2  # "" -> [CLS] [SEP]
    assert torch.all(tokens[~mask] == 0)
    assert torch.isfinite(tokens).all()
    assert tokens[mask].abs().mean() > 0.05  # real features, not zeros


def test_minilm_deterministic_batch_independent_and_cached(minilm):
    a, ma = minilm.encode(["a green triangle moves right"])
    fresh = HFTextEncoder(max_length=32, cache_size=0)
    b, mb = fresh.encode(
        ["a long prompt about a yellow star that moves down slowly", "a green triangle moves right"]
    )
    n = int(ma.sum())
    assert torch.equal(mb[1, :n], ma[0]) and not mb[1, n:].any()
    torch.testing.assert_close(b[1, :n], a[0, :n], atol=1e-5, rtol=1e-5)
    assert len(fresh._cache) == 0  # cache_size=0 keeps nothing
    again, _ = minilm.encode(["a green triangle moves right"])
    assert torch.equal(again, a)


def test_minilm_two_prompts_differ(minilm):
    tokens, mask = minilm.encode(["a red circle moves left", "a blue square moves up"])
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    assert cos < 0.95
    same, _ = minilm.encode(["a red circle moves left"] * 2)
    assert torch.equal(same[0], same[1])


def test_truncation_to_max_length():
    enc = HFTextEncoder(max_length=8)
    tokens, mask = enc.encode(["one two three four five six seven eight nine ten eleven twelve"])
    assert tokens.shape[1] == 8 and mask.all()


def test_t5_encoder_branch(tmp_path, minilm):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=minilm.tokenizer.vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
    )
    T5EncoderModel(cfg).save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)
    enc = HFTextEncoder(tmp_path, max_length=16)
    assert enc.dim == 32 and type(enc.model).__name__ == "T5EncoderModel"
    tokens, mask = enc.encode(["a red circle", "a blue square moves up"])
    assert tokens.shape == (2, mask.shape[1], 32) and mask.sum(1).tolist()[0] < mask.shape[1]


def test_bad_inputs(minilm, tmp_path):
    with pytest.raises(TextEncoderError, match="list of strings"):
        minilm.encode("a bare string")
    with pytest.raises(TextEncoderError, match="empty"):
        minilm.encode([])
    with pytest.raises(TextEncoderError, match="not a folder"):
        HFTextEncoder(tmp_path / "missing")
    with pytest.raises(TextEncoderError, match="max_length"):
        HFTextEncoder(max_length=0)
