import pytest
import torch
from einops import rearrange

from mugv.retrieval import ConfigError, TWBertConfig, VideoEncoderConfig
from mugv.retrieval.text_encoder import default_text_model
from mugv.retrieval.video_encoder import VideoEncoder


def test_text_encoder_matches_huggingface_bert_lower_layers(tiny_model):
    from transformers import BertModel

    ref = BertModel.from_pretrained(default_text_model()).eval()
    ref.encoder.layer = ref.encoder.layer[: tiny_model.config.text_layers]
    ids, mask = tiny_model.tokenize(["a red circle moves left", "two squares"])
    with torch.no_grad():
        ours = tiny_model.encode_text(ids, mask)
        theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)


def test_cross_encoder_initialised_from_upper_bert_layers(tiny_model):
    from mugv.retrieval.text_encoder import load_bert_state

    state = load_bert_state(default_text_model())
    k = tiny_model.config.text_layers
    q = state[f"encoder.layer.{k}.attention.self.query.weight"]
    layer = tiny_model.cross_encoder.layers[0]
    torch.testing.assert_close(layer.text.attention.query.weight, q)
    torch.testing.assert_close(layer.video.attention.query.weight, q)


def test_video_encoder_shapes_and_video_cls_is_mean_of_frame_cls():
    torch.manual_seed(0)
    cfg = VideoEncoderConfig(num_frames=4, image_size=32, patch_size=8, width=32, depth=2)
    enc = VideoEncoder(cfg).eval()
    out = enc(torch.randn(2, 4, 3, 32, 32))
    assert out.patches.shape == (2, 4, 16, 32)
    assert out.frame_cls.shape == (2, 4, 32)
    torch.testing.assert_close(out.video_cls, out.frame_cls.mean(1))


def test_divided_attention_mixes_time_only_through_temporal_attention():
    torch.manual_seed(0)
    cfg = VideoEncoderConfig(num_frames=4, image_size=16, patch_size=8, width=16, depth=1)
    enc = VideoEncoder(cfg).eval()
    block = enc.blocks[0]
    x = torch.randn(1, 4, 5, 16)
    y = x.clone()
    y[:, 2] += torch.randn(5, 16)  # perturb frame 2
    with torch.no_grad():
        assert not torch.allclose(block(x)[:, 0], block(y)[:, 0])  # time is mixed
        block.attn_t.proj.weight.zero_()
        block.attn_t.proj.bias.zero_()
        torch.testing.assert_close(block(x)[:, 0], block(y)[:, 0])  # only through attn_t


def test_temporal_attention_matches_per_position_reference():
    torch.manual_seed(0)
    cfg = VideoEncoderConfig(num_frames=3, image_size=16, patch_size=8, width=16, depth=1)
    block = VideoEncoder(cfg).blocks[0].double().eval()
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        xt = rearrange(x, "b t n c -> (b n) t c")
        ref = []
        for seq in xt:  # one patch position's frames at a time, plain softmax attention
            h = block.norm_t(seq)
            q, k, v = block.attn_t.qkv(h).chunk(3, dim=-1)
            heads = []
            for i in range(4):
                sl = slice(4 * i, 4 * i + 4)
                a = (q[:, sl] @ k[:, sl].T / 2.0).softmax(-1)
                heads.append(a @ v[:, sl])
            ref.append(seq + block.attn_t.proj(torch.cat(heads, -1)))
        ref = torch.stack(ref)
        ours = xt + block.attn_t(block.norm_t(xt))
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (TWBertConfig, {"cross_attention": "both"}, "cross_attention"),
        (TWBertConfig, {"temperature": 0.0}, "temperature"),
        (TWBertConfig, {"text_layers": 0}, "text_layers"),
        (VideoEncoderConfig, {"image_size": 30}, "image_size"),
        (VideoEncoderConfig, {"width": 30, "num_heads": 4}, "width"),
    ],
)
def test_config_errors_name_the_field(cls, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        cls(**kwargs)


def test_too_many_layers_for_minilm_is_a_clear_error():
    from mugv.retrieval import TWBert

    with pytest.raises(ConfigError, match="text_layers"):
        TWBert(TWBertConfig(text_layers=4, cross_layers=3))
