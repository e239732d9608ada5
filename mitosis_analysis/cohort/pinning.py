"""Which GPU or CPU cores a local Dask worker uses (imported only where Dask is)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from distributed import WorkerPlugin


class PinWorker(WorkerPlugin):
    """Dask worker plugin for local workers: worker ``i`` sees GPU ``gpus[i % len]`` only, or,
    without GPUs, its share of the CPU cores. Set before the worker loads any model."""

    def __init__(self, gpus: Sequence[str], cores: Sequence[int], workers: int):
        self.gpus, self.cores, self.workers = list(gpus), sorted(cores), workers

    def setup(self, worker) -> None:
        index = int(worker.name) if str(worker.name).isdigit() else 0
        if self.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        elif len(self.cores) >= self.workers > 1:
            share = len(self.cores) // self.workers
            mine = self.cores[index * share:(index + 1) * share] if index < self.workers else self.cores
            for tid in os.listdir("/proc/self/task"):  # every thread: threads started later inherit it
                try:
                    os.sched_setaffinity(int(tid), mine)
                except OSError:  # a thread that ended meanwhile
                    pass

    def teardown(self, worker) -> None:
        pass
