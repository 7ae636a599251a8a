"""Native thread pools (OpenMP, BLAS): one thread per process unless OMP_NUM_THREADS says
otherwise. The image's rule (function/Dockerfile sets OMP_NUM_THREADS=1) and training's, here once.

The service's parallelism is its own: a worker process per usable CPU (config.usable_cpus), each
with THREADS request threads, so a model's OpenMP team per request only oversubscribes the cores
(docs/PERFORMANCE.md). Training is one process on a machine that is often doing other work, where
an OpenMP team spins at every barrier waiting for a thread that lost its core: HistGradientBoosting
training on 398 rows (report included) took 67 s with two threads beside two busy processes on two
cores, 15 s with one (3.5 s and 3.3 s on idle cores).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

NATIVE_THREADS = 1  # function/Dockerfile's OMP_NUM_THREADS (tests/test_workers.py checks both)


def native_threads(environ: Mapping[str, str]) -> int:
    """OMP_NUM_THREADS when it is a whole number of at least 1 (the first level of a nested list,
    as OpenMP reads it), else NATIVE_THREADS."""
    first = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) >= 1 else NATIVE_THREADS


def limit_native_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """Size this process's pools: OMP_NUM_THREADS (unless set) for the runtimes loaded from now on
    and for child processes, threadpoolctl for those already loaded (numpy's BLAS)."""
    count = native_threads(environ)
    environ.setdefault("OMP_NUM_THREADS", str(count))
    from threadpoolctl import threadpool_limits

    threadpool_limits(count)
    return count


def native_threads_limited(environ: Mapping[str, str] = os.environ) -> Any:
    """The same limit for a `with` block only, restored after (a notebook's process is the
    user's); it reaches the libraries loaded when it starts."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(native_threads(environ))
