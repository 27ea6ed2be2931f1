"""Training-step throughput of MUGDiT (Megatron, local spec) vs a plain-PyTorch DiT, on CPU.

Both models hold the same weights (converted with `mugv.dit.to_reference`) and are checked
to agree before timing. A step is forward, MSE loss, backward and AdamW. The attention share
is the time inside scaled-dot-product attention (forward and backward) over the step's time,
from the PyTorch profiler.

    python bench_step.py --out result.json [--config tiny --batch 8 --frames 3 --size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _plain_dit import PlainDiT

from mugv.dit import MUGDiT, dit_config, local_spec, to_reference
from mugv.dit.pretrained import full_state_dict
from mugv.infra import single_process


class TorchLinear(torch.nn.Linear):
    """nn.Linear with Megatron's linear interface, to measure what Megatron's linear costs."""

    def __init__(self, n_in, n_out, *, config, init_method, bias=True, **_):
        super().__init__(n_in, n_out, bias=bias)

    def forward(self, x):
        return super().forward(x), None


def torch_linear_spec():
    """The local spec with every Megatron parallel linear swapped for `TorchLinear` (TP=1)."""
    spec = local_spec()
    for attn in (spec.submodules.self_attention, spec.submodules.cross_attention):
        attn.linear_in = attn.linear_proj = TorchLinear
    spec.submodules.cross_attention.linear_kv = TorchLinear
    spec.submodules.linear_fc1 = spec.submodules.linear_fc2 = TorchLinear
    return spec


def make_batch(args, text_dim):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(args.batch, args.text_len, dtype=torch.bool)
    mask[: args.batch // 2, args.text_len // 2 :] = False
    return dict(
        x=torch.randn(args.batch, 24, args.frames, args.size, args.size, generator=g),
        timestep=torch.rand(args.batch, generator=g),
        text=torch.randn(args.batch, args.text_len, text_dim, generator=g),
        text_mask=mask,
        fps=torch.full((args.batch,), 8.0),
    )


def step_fn(model, batch, target):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(**batch), target)
        loss.backward()
        opt.step()

    return step


def time_interleaved(steps: dict, rounds: int, per_round: int, warmup: int) -> dict:
    """Seconds per step of each model, alternating the models round by round so that load
    changes on a shared machine hit both alike: {name: [one value per round]}."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            samples[name].append((time.perf_counter() - start) / per_round)
    return samples


def attention_share(step):
    acts = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    attn = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    return attn / max(total, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_step.json")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--hidden-size", type=int, help="override the config's width")
    parser.add_argument("--num-heads", type=int, help="override the config's heads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=8, help="latent height = width")
    parser.add_argument("--text-len", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    overrides = {"hidden_size": args.hidden_size, "num_heads": args.num_heads}
    cfg = dit_config(args.config, **{k: v for k, v in overrides.items() if v is not None})
    batch = make_batch(args, cfg.text_dim)
    target = torch.randn_like(batch["x"])
    tokens = args.frames * (args.size // 2) ** 2 + 2
    with single_process(seed=0):
        ours = MUGDiT(cfg)
        with torch.no_grad():  # non-zero final layer so both models do real work
            ours.final_layer.linear.weight.normal_(std=0.02)
        plain = PlainDiT(cfg.hidden_size, cfg.num_heads, cfg.depth, cfg.text_dim, cfg.text_len)
        plain.load_state_dict(to_reference(full_state_dict(ours), cfg))
        with torch.no_grad():
            diff = (ours(**batch) - plain(**batch)).abs().max().item()
        ours_torch = MUGDiT(cfg, spec=torch_linear_spec())
        ours_torch.load_state_dict(ours.state_dict(), strict=False)
        steps = {
            "mugdit": step_fn(ours, batch, target),
            "plain": step_fn(plain, batch, target),
            "mugdit_nn_linear": step_fn(ours_torch, batch, target),
        }
        rounds = time_interleaved(steps, args.rounds, args.per_round, args.warmup)
        paired = [a / b for a, b in zip(rounds["mugdit"], rounds["plain"])]
        seconds = {name: statistics.median(values) for name, values in rounds.items()}
        rows = {
            name: {
                "step_ms": 1000 * seconds[name],
                "best_step_ms": 1000 * min(rounds[name]),
                "samples_per_s": args.batch / seconds[name],
                "tokens_per_s": args.batch * tokens / seconds[name],
                "attention_share": attention_share(step),
            }
            for name, step in steps.items()
        }
    result = {
        "benchmark": "mugv-dit training step (fwd + bwd + AdamW), CPU",
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "load_average_1min": os.getloadavg()[0],
        "config": args.config,
        "hidden_size": cfg.hidden_size,
        "num_heads": cfg.num_heads,
        "batch": args.batch,
        "latent": [24, args.frames, args.size, args.size],
        "tokens_per_sample": tokens,
        "text_len": args.text_len,
        "max_abs_output_diff": diff,
        "results": rows,
        "ratio_step_time_mugdit_over_plain": statistics.median(paired),
        "ratio_best_step_time": min(rounds["mugdit"]) / min(rounds["plain"]),
        "ratio_definition": "median over rounds of (MUGDiT / plain) step time, back to back",
        "ratio_nn_linear_spec": statistics.median(
            a / b for a, b in zip(rounds["mugdit_nn_linear"], rounds["plain"])
        ),
        "target_ratio": 1.1,
    }
    print(
        f"{'model':<16} {'step ms':>9} {'best ms':>9} {'samples/s':>10} {'tokens/s':>10} {'attn':>7}"
    )
    for name, row in rows.items():
        print(
            f"{name:<16} {row['step_ms']:>9.2f} {row['best_step_ms']:>9.2f} "
            f"{row['samples_per_s']:>10.1f} {row['tokens_per_s']:>10.0f} "
            f"{row['attention_share']:>7.1%}"
        )
    print(
        f"step-time ratio mugdit/plain = {result['ratio_step_time_mugdit_over_plain']:.3f} "
        f"(median of paired rounds; best-vs-best {result['ratio_best_step_time']:.3f}; "
        f"target <= 1.1); max |output diff| = {diff:.2e}"
    )
    print(
        f"with torch.nn.Linear in the spec instead of Megatron's linears: "
        f"{result['ratio_nn_linear_spec']:.3f}"
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
