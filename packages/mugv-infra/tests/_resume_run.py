"""A training run for the resume tests, launched as its own process (python _resume_run.py).

Appends `{"step", "loss"}` (loss as float.hex, bitwise) per step to --log. Fault injection:
MUGV_TEST_KILL_AT=N  SIGKILLs itself right after step N; MUGV_TEST_KILL_IN_SAVE=N SIGKILLs
itself while saving checkpoint N, after its files are written and before it is committed;
MUGV_TEST_TERM_AT=N sends itself SIGTERM after step N (graceful stop).
"""

import argparse
import json
import os
import signal

from _infra_models import TinyRegressor, regression_data, regression_step, tiny_config

from mugv.infra import (
    ParallelConfig,
    ShuffledBatches,
    Trainer,
    TrainerConfig,
    init_distributed,
    manual_seed,
)
from mugv.infra.checkpoint import CheckpointManager


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--export", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--async-save", action="store_true")
    args = parser.parse_args()
    kill_at = int(os.environ.get("MUGV_TEST_KILL_AT", -1))
    kill_in_save = int(os.environ.get("MUGV_TEST_KILL_IN_SAVE", -1))
    term_at = int(os.environ.get("MUGV_TEST_TERM_AT", -1))

    commit = CheckpointManager._commit

    def commit_or_die(self, step, partial, meta):
        if step == kill_in_save:
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self, step, partial, meta)

    CheckpointManager._commit = commit_or_die

    info = init_distributed(ParallelConfig())
    manual_seed(0)
    model = TinyRegressor(tiny_config(hidden_dropout=0.1))
    x, y = regression_data(40)
    data = ShuffledBatches(40, 8, lambda idx: (x[idx], y[idx]), seed=5)  # 5 batches an epoch
    config = TrainerConfig(
        steps=args.steps,
        micro_batches=2,
        lr=3e-3,
        warmup_steps=3,
        ema_decay=0.9,
        checkpoint_dir=args.ckpt,
        checkpoint_every=args.every,
        async_checkpoint=args.async_save,
        log_every=5,
    )
    trainer = Trainer(model, regression_step, data, config, info=info)

    def on_step(out):
        with open(args.log, "a") as f:
            f.write(json.dumps({"step": out.step, "loss": out.loss.item().hex()}) + "\n")
        if out.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if out.step == term_at:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.fit(on_step)
    if trainer.step == args.steps:
        trainer.export(args.export)


if __name__ == "__main__":
    main()
