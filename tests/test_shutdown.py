"""The bounded shutdown of a job: processes that outlive their job's result are ended, so a join on them
returns; a job that ends on its own has nothing ended. No statistics job is needed to show it."""

import subprocess
import sys
import threading

from reportgen import workers


def _lingering_child() -> subprocess.Popen:
    """A child that would never end on its own, as a Beam worker waiting on a dead control stream."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])


def test_a_child_that_outlives_the_jobs_result_is_ended_and_the_join_returns():
    with workers.bounded_shutdown(lambda: True, grace=0.5, poll=0.1) as watch:
        child = _lingering_child()
        joined = threading.Thread(target=child.wait, daemon=True)
        joined.start()
        joined.join(timeout=120)  # a hang guard only: the watch ends the child within about a second
        assert not joined.is_alive()
    assert watch.fired
    assert child.returncode is not None and child.returncode < 0  # ended by a signal, not by itself


def test_nothing_is_ended_while_the_result_is_not_in_or_when_the_job_ends_by_itself():
    child = _lingering_child()  # started before the block: never the block's to end
    try:
        with workers.bounded_shutdown(lambda: False, grace=0.1, poll=0.05) as watch:
            inner = subprocess.Popen([sys.executable, "-c", "pass"])
            inner.wait(timeout=120)
            threading.Event().wait(0.5)
        assert not watch.fired and inner.returncode == 0
        with workers.bounded_shutdown(lambda: True, grace=0.1, poll=0.05) as watch:
            threading.Event().wait(0.5)  # the result is in and nothing of the block's is left
        assert not watch.fired
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_ctrl_c_whose_clean_up_waits_on_a_child_ends_the_child_and_stays_an_interrupt():
    """Beam's DirectRunner answers a Ctrl-C with its own clean-up, which joined a worker waiting on a
    control stream: the watch notes the signal, ends what the job started, and the interrupt goes on."""
    import os
    import signal

    import pytest

    with pytest.raises(KeyboardInterrupt):
        with workers.bounded_shutdown(lambda: False, grace=3600, poll=0.1, interrupt_grace=0.5) as watch:
            child = _lingering_child()
            try:
                threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
                threading.Event().wait(120)  # the job, until the interrupt
            finally:  # as Beam's run_stages: close_all() joins its workers before the interrupt goes on
                child.wait(timeout=120)
    assert watch.interrupted and watch.fired
    assert child.returncode is not None and child.returncode < 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
