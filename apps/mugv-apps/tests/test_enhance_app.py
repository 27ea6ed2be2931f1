"""`mugv enhance` through the command line on real (tiny) checkpoints."""

import numpy as np
import pytest

from mugv.apps.cli import main
from mugv.data.video import probe, read_video, write_video


def _clip(path, frames=9, size=32, fps=12.0):
    rng = np.random.default_rng(0)
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    video[:, 8:24, 8:24] = rng.integers(0, 255, 3, dtype=np.uint8)
    return write_video(path, video, fps=fps)


def test_enhance_writes_each_video_at_its_fps(tmp_path, tiny_checkpoints, capsys):
    dit, vae = tiny_checkpoints
    inputs = [_clip(tmp_path / "a.mp4"), _clip(tmp_path / "b.mp4", fps=8.0)]
    out = tmp_path / "out"
    args = ["enhance", *map(str, inputs), "--dit", str(dit), "--vae", str(vae), "-o", str(out)]
    assert main(args, commands=("enhance",)) == 0
    for src in inputs:
        info, source = probe(out / src.name), probe(src)
        assert (info.num_frames, info.height, info.width) == (9, 32, 32)
        assert info.fps == pytest.approx(source.fps)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].endswith("a.mp4")


def test_enhance_with_lora_adapters_and_a_prompt(tmp_path, tiny_checkpoints):
    from mugv.dit import MUGDiT
    from mugv.dit.lora import LoRAConfig, apply_lora, save_adapters
    from mugv.infra import single_process

    dit, vae = tiny_checkpoints
    with single_process(seed=0):
        model = MUGDiT.from_pretrained(dit)
        apply_lora(model, LoRAConfig(rank=2))
        save_adapters(model, tmp_path / "adapter")
    src = _clip(tmp_path / "in.mp4")
    out = tmp_path / "x.mp4"
    args = ["enhance", str(src), "--dit", str(dit), "--vae", str(vae), "-o", str(out)]
    args += ["--adapter", str(tmp_path / "adapter"), "--prompt", "a red square", "--sigma", "0.2"]
    assert main(args, commands=("enhance",)) == 0
    assert read_video(out).frames.shape == (9, 32, 32, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sigma", "0"], "sigma"),
        (["--adapter", "MISSING"], "no such checkpoint folder"),
        (["--prompt", " "], "--prompt is empty"),
        (["BADSIZE"], "multiples of 16"),
    ],
)
def test_enhance_bad_requests_fail_in_one_line(tmp_path, tiny_checkpoints, capsys, extra, message):
    dit, vae = tiny_checkpoints
    src = _clip(tmp_path / "in.mp4")
    if extra == ["BADSIZE"]:
        src, extra = _clip(tmp_path / "odd.mp4", size=40), []
    args = ["enhance", str(src), "--dit", str(dit), "--vae", str(vae), "-o", str(tmp_path / "o")]
    args += [str(tmp_path / a) if a == "MISSING" else a for a in extra]
    assert main(args, commands=("enhance",)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
