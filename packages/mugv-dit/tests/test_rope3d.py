"""3D RoPE maths: SPEC frequencies, (h, w, t) order, interleaved pairs, relative positions."""

import torch

from mugv.dit.rope3d import (
    apply_rope,
    rope_angles,
    rope_frequencies,
    rope_rotation,
    video_positions,
)


def test_frequencies_follow_spec():
    f = rope_frequencies(72)
    assert f.shape == (12,)
    torch.testing.assert_close(
        f, torch.tensor([10000.0 ** (-6 * j / 72) for j in range(12)], dtype=torch.float64)
    )


def test_positions_bracket_video_with_start_and_end_tokens():
    pos = video_positions(torch.tensor([[5, 6, 700]]), height=2, width=3, max_frames=480)
    assert pos.shape == (1, 2 + 3 * 2 * 3, 3)
    assert pos[0, 0].tolist() == [0, 0, 5]  # start: (first frame, 0, 0) as (h, w, t)
    assert pos[0, -1].tolist() == [1, 2, 479]  # end: (H-1, W-1, last frame clamped)
    assert pos[0, 1].tolist() == [0, 0, 5] and pos[0, 2].tolist() == [0, 1, 5]
    assert pos[0, 1 + 6].tolist() == [0, 0, 6]  # tokens run t, then h, then w


def test_rotation_is_complex_multiplication_of_adjacent_pairs():
    x = torch.randn(5, 12, dtype=torch.float64)
    pos = torch.randint(0, 50, (5, 3))
    angles = rope_angles(pos, 12)  # (5, 6): h | w | t
    assert torch.equal(angles[:, :2], pos[:, :1] * rope_frequencies(12))
    assert torch.equal(angles[:, 4:], pos[:, 2:] * rope_frequencies(12))
    z = torch.view_as_complex(x.view(5, 6, 2)) * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(apply_rope(x, angles), torch.view_as_real(z).flatten(-2))


def test_scores_depend_on_relative_position_only():
    q, k = torch.randn(2, 24, dtype=torch.float64)
    p, r = torch.tensor([3, 4, 5]), torch.tensor([1, 7, 2])
    shift = torch.tensor([10, 20, 30])
    score = apply_rope(q, rope_angles(p, 24)) @ apply_rope(k, rope_angles(r, 24))
    moved = apply_rope(q, rope_angles(p + shift, 24)) @ apply_rope(k, rope_angles(r + shift, 24))
    torch.testing.assert_close(score, moved)


def test_precomputed_rotation_strided_and_half_precision_inputs():
    """The model's path (precomputed `rope_rotation`, q/k as strided views, bf16 rotated in
    float32) equals rotating by the angles."""
    angles = rope_angles(torch.randint(0, 50, (4, 3, 1, 1, 3)), 12)  # (4, 3, 1, 1, 6)
    qkv = torch.randn(4, 3, 2, 3, 12, dtype=torch.float64)
    qk = qkv[:, :, :, :2]  # not contiguous
    expected = apply_rope(qk.contiguous(), angles)
    torch.testing.assert_close(apply_rope(qk, rope_rotation(angles, torch.float64)), expected)
    half = apply_rope(qk.bfloat16(), rope_rotation(angles, torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half, expected.bfloat16(), rtol=1e-2, atol=1e-2)
