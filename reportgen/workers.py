"""Worker processes for the per-layer stage and the charts.

Numpy's element-wise work and Pillow's encoders run on one core per process, so the layers are
spread over processes, not threads. The pool is started at the beginning of a build, so its
workers start up while the main process imports TensorFlow, and it is kept for later builds in
the same process (the test suite builds many sites). Workers are spawned, not forked: a fork of a
process running TensorFlow's threads is not safe.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from concurrent.futures import Executor, Future, ProcessPoolExecutor

SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the main process handles it and cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm_up() -> None:
    """Import what the jobs need while the main process is still loading the model."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reportgen import layer_stage, render  # noqa: F401  (the layer jobs)

    render.colormap_lut(render.DEFAULT_CMAP)
    figure, axes = plt.subplots(figsize=(1, 1))  # loads the fonts the charts job will draw with
    axes.set_title("reportgen")
    figure.savefig(io.BytesIO(), format="svg")
    plt.close(figure)


class InProcess(Executor):
    """Runs each job at once in this process: for --workers 1, and where processes are not wanted."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001  (delivered through the future, as a pool would)
            future.set_exception(error)
        return future


def pool(workers: int) -> Executor:
    """The shared process pool with `workers` processes, started now; one worker runs jobs in-process."""
    global _pool, _pool_size
    if workers <= 1:
        return InProcess()
    if _pool is not None and (_pool_size != workers or _broken(_pool)):
        discard()
    if _pool is None:
        _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_ignore_interrupts)
        _pool_size = workers
        # One BLAS thread per worker: the workers already fill the cores, and idle BLAS threads
        # spin-wait, taking the cores from the other workers. Spawned children read these at start.
        saved = {name: os.environ.get(name) for name in SINGLE_THREADED}
        os.environ.update(SINGLE_THREADED)
        try:
            for _ in range(workers):
                _pool.submit(_warm_up)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name)
                else:
                    os.environ[name] = value
    return _pool


def _broken(executor: ProcessPoolExecutor) -> bool:
    return bool(getattr(executor, "_broken", False))


def discard(wait: bool = False) -> None:
    """Stop the shared pool (after an interruption or a dead worker, or at exit); the next build
    starts a new one. `wait` joins the workers: idle ones exit at once."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=wait, cancel_futures=True)
        _pool = None


atexit.register(discard)
