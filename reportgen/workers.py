"""Worker processes for the per-layer stage and the charts.

Numpy's element-wise work and Pillow's encoders run on one core per process, so the layers are
spread over processes, not threads. The pool is started at the beginning of a build, so its
workers start up while the main process imports TensorFlow, and it is kept for later builds in
the same process (the test suite builds many sites). Workers are spawned, not forked: a fork of a
process running TensorFlow's threads is not safe.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor

log = logging.getLogger(__name__)

SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _start_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the main process handles it and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A main process killed outright (kill -9) cannot end its workers, which would hold its standard
    # output open (`reportgen build | tee` would never end): they end when they see it gone.
    threading.Thread(target=_end_with, args=(parent,), daemon=True, name="end-with-parent").start()


def _end_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


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
                                    initializer=_start_worker, initargs=(os.getpid(),))
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


def discard(wait: bool = False, terminate: bool = False) -> None:
    """Stop the shared pool (after an interruption or a dead worker, or at exit); the next build
    starts a new one. `wait` joins the workers: idle ones exit at once; `terminate` ends busy ones."""
    global _pool
    if _pool is not None:
        processes = _pool_processes() if terminate else []
        _pool.shutdown(wait=wait, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=5)
        _pool = None


def pool_pids() -> set[int]:
    """The process ids of the shared pool's workers (none when there is no pool)."""
    return {process.pid for process in _pool_processes()}


def _pool_processes() -> list:
    return list(getattr(_pool, "_processes", {}).values()) if _pool is not None else []


def descendants() -> set[int]:
    """The ids of this process's descendants (Beam's workers are its children's children): from /proc
    where there is one, else the children that multiprocessing started."""
    try:
        parents = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as stat:
                        fields = stat.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] != b"Z":
                    parents[int(entry.name)] = int(fields[1])
    except OSError:
        return {child.pid for child in multiprocessing.active_children()}
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def end_processes(pids: set[int], grace: float = 3.0) -> None:
    """SIGTERM to each, then SIGKILL to those still alive after `grace` seconds. Multiprocessing's
    resource tracker is spared: it is this process's for good, and ends with it."""
    from multiprocessing import resource_tracker

    pids = pids - {getattr(resource_tracker._resource_tracker, "_pid", None)}
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        multiprocessing.active_children()  # reaps the ended children that multiprocessing started
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


class Interruption:
    """How a build was interrupted: the exit code its message goes out with."""

    exit_code = 130


@contextlib.contextmanager
def interruptible() -> Iterator[Interruption]:
    """SIGTERM (a CI cancel, `docker stop`) interrupts like Ctrl-C: a KeyboardInterrupt in the main
    thread, so the same clean-up runs, and exit 143 instead of 130."""
    interruption = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield interruption
        return

    def on_term(signum, frame):
        interruption.exit_code = 128 + signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield interruption
    finally:
        signal.signal(signal.SIGTERM, previous)


# Seconds a job's worker processes get to stop after its result is in, before they are ended.
SHUTDOWN_GRACE = 10.0
# After Ctrl-C or SIGTERM: the user asked to stop now, and no result is coming.
INTERRUPT_GRACE = 3.0


class BoundedShutdown:
    """Whether the watch ended processes that outlived their job (then a failure of the job's own
    shutdown is theirs, not the job's), and whether the job was interrupted by a signal."""

    fired = False
    interrupted = False


@contextlib.contextmanager
def _noting_interrupts(watch: BoundedShutdown, noted: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM are noted for the watch, then handled as they were (KeyboardInterrupt):
    the job's own clean-up, which may wait forever, runs before our code sees the interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum, frame):
        handler = previous[signum]
        if handler == signal.SIG_IGN:
            return
        watch.interrupted = True
        noted.set()
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def bounded_shutdown(finished: Callable[[], bool], grace: float = SHUTDOWN_GRACE,
                     poll: float = 0.5, interrupt_grace: float = INTERRUPT_GRACE) -> Iterator[BoundedShutdown]:
    """Run a job whose shutdown may wait forever: `grace` seconds after `finished()` first says its
    result is in, or `interrupt_grace` seconds after a Ctrl-C or SIGTERM, the processes started inside
    the block that are still alive are ended. A Beam DirectRunner job once stayed 27 minutes in its
    shutdown, its main thread joining a worker that waited on a control stream nobody would write to
    again; a Ctrl-C in its pass led to the same join. Ending the workers ends that wait."""
    watch = BoundedShutdown()
    before = descendants()
    stop, interrupted = threading.Event(), threading.Event()

    def watch_job() -> None:
        ends_at = None
        while not stop.wait(poll):
            if ends_at is None or (interrupted.is_set() and ends_at - time.monotonic() > interrupt_grace):
                if interrupted.is_set():
                    ends_at = time.monotonic() + interrupt_grace
                elif finished():
                    ends_at = time.monotonic() + grace
            elif time.monotonic() >= ends_at:
                left = descendants() - before - pool_pids()
                if left:
                    watch.fired = True
                    if interrupted.is_set():  # what the user asked for: nothing to warn about
                        log.info("ended %d worker processes %.0f s after the interrupt", len(left), interrupt_grace)
                    else:
                        log.warning("%d worker processes had not stopped %.0f s after the job's end; ended them",
                                    len(left), grace)
                    end_processes(left)
                return

    thread = threading.Thread(target=watch_job, daemon=True, name="bounded-shutdown")
    thread.start()
    try:
        with _noting_interrupts(watch, interrupted):
            yield watch
    finally:
        stop.set()
        thread.join()


atexit.register(discard)
