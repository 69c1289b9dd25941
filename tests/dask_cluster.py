"""A local Dask cluster (one scheduler, N worker processes on 127.0.0.1) for the tests and the
benchmarks: started with the `dask` command line as a user would, stopped by process id."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")

# What the README asks of a cluster's workers (a file in ~/.config/dask/ or $DASK_CONFIG): Dask's nanny
# starts each worker with MALLOC_TRIM_THRESHOLD_=65536, and glibc then maps and unmaps every array
# over 128 kB afresh. The statistics' accumulators make and drop large arrays on every batch: with
# it, the pass over 240 images took 1.35x as long (75 against 55 s, bench_stats' cluster).
WORKER_CONFIG = """\
distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_workers(address: str, count: int, timeout: float) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    host, port = address.split(":")
    while time.monotonic() < deadline:  # the scheduler listens first: no client retries to log
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)

    async def wait() -> None:  # on a loop of our own: a synchronous client gives its loop thread 10 s to start
        async with Client(address, asynchronous=True, timeout=max(1.0, deadline - time.monotonic())) as client:
            await client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))

    asyncio.run(wait())


@contextlib.contextmanager
def local_cluster(workers: int, logs: Path, timeout: float = 90.0, dask_defaults: bool = False):
    """Yields the scheduler's HOST:PORT and the process ids, one thread a worker; every process is
    stopped (SIGTERM, then SIGKILL) on the way out. The workers are configured as the README asks
    (`WORKER_CONFIG`), or with `dask_defaults` as Dask starts them unconfigured."""
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    config = logs / "dask-config"  # $DASK_CONFIG replaces ~/.config/dask: the user's own files stay out
    config.mkdir(parents=True, exist_ok=True)
    if not dask_defaults:
        (config / "reportgen.yaml").write_text(WORKER_CONFIG)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "DASK_CONFIG": str(config)}
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)  # the nanny would take it over its configuration
    commands = [[str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", f"127.0.0.1:{dashboard}"]]
    commands += [[str(DASK), "worker", f"tcp://{address}", "--host", "127.0.0.1", "--nworkers", "1",
                  "--nthreads", "1", "--no-dashboard", "--name", f"worker-{k}"] for k in range(workers)]
    processes = []
    try:
        for k, command in enumerate(commands):
            with open(logs / f"dask-{k}.log", "wb") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=logs,
                                                  env=environment, start_new_session=True))
        _wait_for_workers(address, workers, timeout)
        yield address, [process.pid for process in processes]
    finally:
        for process in reversed(processes):  # workers first, then the scheduler
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
