"""Training-step throughput of MUGDiT (Megatron, local spec) vs a plain-PyTorch DiT, on CPU.

Both models hold the same weights (converted with `mugv.dit.to_reference`) and are checked
to agree before timing; a third, MUGDiT with Megatron's own parallel linears (the path TP > 1
takes), shows what the local spec's single-rank linears save; a fourth, MUGDiT given an
image-to-video conditioning mask (frame 0 of `--i2v-share` of the samples is clean and takes the
t = 0 modulation), shows what the per-token modulation costs. A step is forward, MSE loss,
backward and AdamW. The models alternate round by round and each ratio is the median of the
per-round ratios, in wall time and in process CPU time (the latter ignores time the shared
machine's other processes take). The attention share is the time inside
scaled-dot-product attention (forward and backward) over the step's time (profiler, 10 steps,
through the SDPA kernel: see `attention_share`).
A `mugdit_bf16` row runs MUGDiT under bf16 autocast (faster than fp32 only on CPUs with AMX or a
fast AVX512-BF16, `mugv.infra.fast_bf16`), and with `--compile` a `mugdit_bf16_compiled` row
under torch.compile.

    python bench_step.py --out result.json [--config tiny --batch 8 --frames 3 --size 8 --compile]
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
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

sys.path.insert(0, os.path.dirname(__file__))
from _plain_dit import PlainDiT

from mugv.dit import MUGDiT, dit_config, local_spec, to_reference
from mugv.dit.pretrained import full_state_dict
from mugv.infra import fast_bf16, single_process


def megatron_path_spec():
    """The local spec with Megatron's own parallel linears, whose autograd function
    (`LinearWithGradAccumulationAndAsyncCommunication`) the local spec's `ColumnLinear` and
    `RowLinear` skip on one TP rank: what that choice buys."""
    spec = local_spec()
    for attn in (spec.submodules.self_attention, spec.submodules.cross_attention):
        attn.linear_in, attn.linear_proj = ColumnParallelLinear, RowParallelLinear
    spec.submodules.cross_attention.linear_kv = ColumnParallelLinear
    spec.submodules.linear_fc1, spec.submodules.linear_fc2 = ColumnParallelLinear, RowParallelLinear
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


def i2v_mask(args) -> torch.Tensor:
    """(B, T) conditioning frames: frame 0 of the first `i2v_share` of the samples."""
    mask = torch.zeros(args.batch, args.frames, dtype=torch.bool)
    mask[: round(args.i2v_share * args.batch), 0] = True
    return mask


def step_fn(model, batch, target, *, bf16=False, **extra):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch, **extra)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    return step


def time_interleaved(steps: dict, rounds: int, per_round: int, warmup: int) -> dict:
    """Seconds per step of each model, alternating the models round by round (ABAB...) so that
    load changes on a shared machine hit both alike: {name: {"wall": [...], "cpu": [...]}}, one
    value per round. "cpu" is this process's CPU time, which does not count the time the OS
    gave the core to other processes (the benchmark runs on one thread)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: {"wall": [], "cpu": []} for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                step()
            samples[name]["wall"].append((time.perf_counter() - wall) / per_round)
            samples[name]["cpu"].append((time.process_time() - cpu) / per_round)
    return samples


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a / b, each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(a, b))


def attention_share(step, steps: int = 10):
    """Time in the SDPA kernels over the step's time. MUGDiT on CPU multiplies the scores out
    for short key sequences (`mugv.dit.attention.SHORT_KEYS`), which the profiler cannot tell
    from the other matrix products, so this runs its steps through the kernel instead: the
    share of the kernel path, which the explicit one undercuts (1.6-2x at <= 128 keys)."""
    from mugv.dit import attention

    short_keys, attention.SHORT_KEYS = attention.SHORT_KEYS, 0
    acts = [torch.profiler.ProfilerActivity.CPU]
    try:
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(steps):
                step()
    finally:
        attention.SHORT_KEYS = short_keys
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
    parser.add_argument("--depth", type=int, help="override the config's depth")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=8, help="latent height = width")
    parser.add_argument("--text-len", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--i2v-share",
        type=float,
        default=0.3,
        help="share of samples with a conditioning frame 0 in the mugdit_i2v row (the flow's "
        "default i2v probability)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add a row for MUGDiT under torch.compile in bf16 (compiling took ~50 s on two cores)",
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    overrides = {
        "hidden_size": args.hidden_size,
        "num_heads": args.num_heads,
        "depth": args.depth,
    }
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
        megatron = MUGDiT(cfg, spec=megatron_path_spec())
        megatron.load_state_dict(ours.state_dict())
        steps = {
            "mugdit": step_fn(ours, batch, target),
            "plain": step_fn(plain, batch, target),
            "mugdit_megatron_path": step_fn(megatron, batch, target),
            "mugdit_i2v": step_fn(ours, batch, target, cond_mask=i2v_mask(args)),
            # bf16 autocast (fp32 attention on CPU): faster only on CPUs with AMX
            "mugdit_bf16": step_fn(ours, batch, target, bf16=True),
        }
        compile_s = None
        if args.compile:
            compiled = MUGDiT(cfg)
            compiled.load_state_dict(ours.state_dict())
            compiled.compile(dynamic=False)
            steps["mugdit_bf16_compiled"] = step_fn(compiled, batch, target, bf16=True)
            start = time.perf_counter()
            steps["mugdit_bf16_compiled"]()
            compile_s = time.perf_counter() - start
        rounds = time_interleaved(steps, args.rounds, args.per_round, args.warmup)
        rows = {}
        for name, step in steps.items():
            wall, cpu = (statistics.median(rounds[name][k]) for k in ("wall", "cpu"))
            rows[name] = {
                "step_ms": 1000 * wall,
                "cpu_step_ms": 1000 * cpu,
                "samples_per_s": args.batch / wall,
                "tokens_per_s": args.batch * tokens / wall,
                "ratio_wall": paired_ratio(rounds[name]["wall"], rounds["plain"]["wall"]),
                "ratio_cpu": paired_ratio(rounds[name]["cpu"], rounds["plain"]["cpu"]),
                "attention_share": attention_share(step),
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
        "rounds": args.rounds,
        "steps_per_round": args.per_round,
        "max_abs_output_diff": diff,
        "results": rows,
        "ratio_definition": (
            "median over rounds of (model / plain) step time, the two measured back to back; "
            "wall: elapsed time, cpu: this process's CPU time (robust to other processes)"
        ),
        "ratio_wall": rows["mugdit"]["ratio_wall"],
        "ratio_cpu": rows["mugdit"]["ratio_cpu"],
        "fast_bf16": fast_bf16("cpu"),
        "compile_seconds": compile_s,
        "bf16_over_fp32_wall": paired_ratio(
            rounds["mugdit_bf16"]["wall"], rounds["mugdit"]["wall"]
        ),
        "i2v_share": args.i2v_share,
        "i2v_over_t2v_wall": paired_ratio(rounds["mugdit_i2v"]["wall"], rounds["mugdit"]["wall"]),
        "target_ratio": 1.1,
    }
    print(
        f"{'model':<21} {'step ms':>8} {'cpu ms':>8} {'samples/s':>10} {'tokens/s':>9} "
        f"{'/plain wall':>11} {'/plain cpu':>10} {'attn':>6}"
    )
    for name, row in rows.items():
        print(
            f"{name:<21} {row['step_ms']:>8.2f} {row['cpu_step_ms']:>8.2f} "
            f"{row['samples_per_s']:>10.1f} {row['tokens_per_s']:>9.0f} "
            f"{row['ratio_wall']:>11.3f} {row['ratio_cpu']:>10.3f} {row['attention_share']:>6.1%}"
        )
    print(
        f"mugdit / plain step time: wall {result['ratio_wall']:.3f}, cpu {result['ratio_cpu']:.3f} "
        f"(median of {args.rounds} paired rounds; target <= 1.1); max |output diff| = {diff:.2e}; "
        f"load average {result['load_average_1min']:.1f}"
    )
    print(
        f"mugdit with a conditioning frame in {args.i2v_share:.0%} of the samples / without: "
        f"wall {result['i2v_over_t2v_wall']:.3f}"
    )
    print(
        f"mugdit bf16 / fp32: wall {result['bf16_over_fp32_wall']:.3f} "
        f"(fast bf16: {result['fast_bf16']})"
        + (f"; compiling took {compile_s:.0f} s" if compile_s is not None else "")
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
