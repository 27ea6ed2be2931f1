"""TW-BERT's asymmetric cross-modal encoder (Sec. 3.2).

Words see *trajectories*: per layer, each word's query attends within every frame over that
frame's patches (one soft "where is this word" vector per frame), the T vectors go through
Linear + LayerNorm to become the word's trajectory tokens, and T2W attention lets the word
attend over all text tokens plus its own T trajectory tokens. Patches see words and their
own frame only: W2P attention runs per frame with the patch queries (plus the video CLS)
attending over [text tokens; that frame's patches; CLS]. The ablation baseline ("p2w")
replaces T2W by plain attention of words over [text; all patches; CLS].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from mugv.retrieval.frame_selector import FrameSelector
from mugv.retrieval.text_encoder import BertLayer, masked_mean


@dataclass
class CrossOutput:
    text: torch.Tensor  # (B, L, C)
    mask: torch.Tensor  # (B, L) bool, the valid text tokens
    video_cls: torch.Tensor  # (B, C)
    patches: torch.Tensor  # (B, T', N, C), T' <= T when frames were selected


class TrajectoryTokens(nn.Module):
    """Soft per-word trajectories: (B, L, C) words x (B, T, N, C) patches -> (B, L, T, C)."""

    def __init__(self, hidden: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        q = rearrange(self.query(words), "b l (h d) -> b h l d", h=h)
        k = rearrange(self.key(patches), "b t n (h d) -> b h t n d", h=h)
        v = rearrange(patches, "b t n (h d) -> b h t n d", h=h)
        attn = torch.einsum("bhld,bhtnd->bhltn", q, k) * q.shape[-1] ** -0.5
        attn = attn.softmax(dim=-1)  # within each frame, over its N patches
        traj = torch.einsum("bhltn,bhtnd->bhltd", attn, v)  # (B, h, L, T, d)
        return self.norm(self.proj(rearrange(traj, "b h l t d -> b l t (h d)")))


class CrossModalLayer(nn.Module):
    """One asymmetric layer: T2W (or P2W) for the text stream, W2P for the video stream."""

    def __init__(self, bert_config: dict, cross_attention: str) -> None:
        super().__init__()
        c, heads = bert_config["hidden_size"], bert_config["num_attention_heads"]
        ffn, eps = bert_config["intermediate_size"], bert_config["layer_norm_eps"]
        self.cross_attention = cross_attention
        self.text = BertLayer(c, heads, ffn, eps)
        self.video = BertLayer(c, heads, ffn, eps)
        self.trajectory = TrajectoryTokens(c, heads, eps) if cross_attention == "t2w" else None

    def t2w(self, text: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        attn = self.text.attention
        traj = self.trajectory(text, patches)  # (B, L, T, C)
        q = attn.split(attn.query(text))  # (B, h, L, d)
        k_text, v_text = attn.split(attn.key(text)), attn.split(attn.value(text))
        k_traj = rearrange(attn.key(traj), "b l t (h d) -> b h l t d", h=attn.num_heads)
        v_traj = rearrange(attn.value(traj), "b l t (h d) -> b h l t d", h=attn.num_heads)
        scale = q.shape[-1] ** -0.5
        s_text = (q @ k_text.transpose(-1, -2)) * scale  # (B, h, L, L)
        s_text = s_text.masked_fill(~mask[:, None, None, :], float("-inf"))
        s_traj = torch.einsum("bhld,bhltd->bhlt", q, k_traj) * scale  # own trajectory only
        p = torch.cat([s_text, s_traj], dim=-1).softmax(dim=-1)
        n = text.shape[1]
        out = p[..., :n] @ v_text + torch.einsum("bhlt,bhltd->bhld", p[..., n:], v_traj)
        return attn.output(text, attn.merge(out))

    def p2w(
        self, text: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, cls: torch.Tensor
    ) -> torch.Tensor:
        context = torch.cat([text, rearrange(patches, "b t n c -> b (t n) c"), cls[:, None]], 1)
        pad = torch.ones(context.shape[:2], dtype=torch.bool, device=mask.device)
        pad[:, : mask.shape[1]] = mask
        return self.text.attention(text, context, pad)

    def w2p(
        self, text: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, frame_cls: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _b, t = patches.shape[:2]
        queries = torch.cat([frame_cls[:, :, None], patches], dim=2)  # (B, T, 1+N, C)
        context = torch.cat([repeat(text, "b l c -> b t l c", t=t), queries], dim=2)
        keep = torch.ones(context.shape[:3], dtype=torch.bool, device=mask.device)
        keep[:, :, : mask.shape[1]] = mask[:, None, :]
        out = self.video.attention(queries, context, keep)  # (B, T, 1+N, C)
        out = self.video.feed_forward(out)
        return out[:, :, 1:], out[:, :, 0]

    def forward(
        self, text: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, frame_cls: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # text (B, L, C), mask (B, L) bool, patches (B, T, N, C), frame_cls (B, T, C): the
        # video CLS as seen by each frame's W2P attention
        if self.cross_attention == "t2w":
            new_text = self.t2w(text, mask, patches)
        else:
            new_text = self.p2w(text, mask, patches, frame_cls.mean(dim=1))
        new_text = self.text.feed_forward(new_text)
        new_patches, new_frame_cls = self.w2p(text, mask, patches, frame_cls)
        return new_text, new_patches, new_frame_cls


class CrossModalEncoder(nn.Module):
    """A stack of `CrossModalLayer`s with an optional two-stage frame selector."""

    def __init__(
        self, bert_config: dict, num_layers: int, cross_attention: str, frame_keep: float | None
    ) -> None:
        super().__init__()
        hidden = bert_config["hidden_size"]
        self.layers = nn.ModuleList(
            CrossModalLayer(bert_config, cross_attention) for _ in range(num_layers)
        )
        stages = [0, num_layers // 2] if num_layers > 1 else [0]
        self.selector_at = stages if frame_keep is not None else []
        self.selectors = nn.ModuleList(FrameSelector(hidden, frame_keep) for _ in self.selector_at)

    def load_hf(self, state: dict[str, torch.Tensor], first_layer: int) -> None:
        """Initialise both streams of layer i from BERT layer `first_layer + i` (Sec. 3.1)."""
        for i, layer in enumerate(self.layers):
            layer.text.load_hf(state, f"encoder.layer.{first_layer + i}.")
            layer.video.load_hf(state, f"encoder.layer.{first_layer + i}.")

    def forward(
        self,
        text: torch.Tensor,
        mask: torch.Tensor,
        patches: torch.Tensor,
        frame_cls: torch.Tensor,
    ) -> CrossOutput:
        # text (B, L, C), mask (B, L), patches (B, T, N, C), frame_cls (B, T, C)
        mask = mask.bool()
        video_cls = repeat(frame_cls.mean(dim=1), "b c -> b t c", t=frame_cls.shape[1])
        for i, layer in enumerate(self.layers):
            if i in self.selector_at:
                selector = self.selectors[self.selector_at.index(i)]
                sentence = masked_mean(text, mask)  # (B, C)
                frame_cls, patches, video_cls = selector(frame_cls, sentence, patches, video_cls)
            text, patches, video_cls = layer(text, mask, patches, video_cls)
            frame_cls = video_cls
        return CrossOutput(text=text, mask=mask, video_cls=video_cls.mean(dim=1), patches=patches)
