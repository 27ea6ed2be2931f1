"""Executors run the per-input phase: in this process, a local process pool, or Ray Data.

Each maps the same top-level function, `process_input`, so the stage code is identical on every
executor; records are stored by the workers themselves, so the executor only schedules.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator, Sequence

from mugv.data.curation.config import CurationConfig, CurationError
from mugv.data.curation.pipeline import process_input
from mugv.data.curation.records import InputRecord


class LocalExecutor:
    """``workers=1`` runs in this process; more uses a spawn-based process pool."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise CurationError(f"LocalExecutor: workers must be >= 1; got {workers}")
        self.workers = workers

    def map_inputs(
        self, sources: Sequence[str], config: CurationConfig, work_dir: str
    ) -> Iterator[InputRecord]:
        fn = functools.partial(process_input, config=config, work_dir=work_dir)
        if self.workers == 1:
            yield from map(fn, sources)
            return
        with multiprocessing.get_context("spawn").Pool(self.workers) as pool:
            yield from pool.imap_unordered(fn, sources)


def _process_row(row: dict, config: CurationConfig, work_dir: str) -> dict:
    return {"record": process_input(row["source"], config, work_dir).to_json()}


class RayExecutor:
    """Ray Data over a cluster (`address`) or a local instance; needs ``mugv-data[ray]``."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise CurationError(
                "RayExecutor needs Ray: `pip install 'mugv-data[ray]'`, or use LocalExecutor"
            ) from exc
        self._ray = ray
        self.address = address
        self.num_cpus = num_cpus

    def map_inputs(
        self, sources: Sequence[str], config: CurationConfig, work_dir: str
    ) -> Iterator[InputRecord]:
        ray = self._ray
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
            )
        dataset = ray.data.from_items([{"source": s} for s in sources]).map(
            _process_row, fn_kwargs={"config": config, "work_dir": work_dir}
        )
        for row in dataset.iter_rows():
            yield InputRecord.from_json(row["record"])
