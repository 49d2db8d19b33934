"""One persistent pool of threads per process that runs Numba task ranges in guided chunks.

A launch calls ``function(start, stop, *args)`` (a ``@njit(nogil=True)`` function that
runs tasks ``start..stop``) until every task of ``range(n_tasks)`` has run once. Chunks
are handed out under a lock, each a share of what is left (guided scheduling), so a
launch costs O(threads * log(tasks)) Python calls while uneven tasks, such as rows of
power-law data, still even out across the threads. Which thread runs a task never changes
what the task computes, so results do not depend on the thread count.

The calling thread works too and waits only for chunks that were handed out: launches from
many user threads at once share the pool without deadlock (a helper that starts after the
work is gone returns at once). An exception in a task stops the handing out, and the
launch raises it in the calling thread once the running chunks have finished.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

__all__ = ["machine_threads", "run"]

#: a chunk is at most this share of the tasks left per thread (2: halve what is left)
GUIDED_SHARE = 2

_executor = None
_executor_lock = threading.Lock()


def machine_threads():
    """The threads the kernels may use in all: Numba's ``NUMBA_NUM_THREADS`` (the cores)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool():
    global _executor
    with _executor_lock:
        if _executor is None and machine_threads() > 1:
            _executor = ThreadPoolExecutor(machine_threads() - 1, thread_name_prefix="als-cpu")
        return _executor


def _forget_pool():
    """In a forked child the pool's threads are gone: start a new pool when first needed."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


class _Launch:
    """The shared state of one launch: the next task, the chunks running, the first error."""

    def __init__(self, function, n_tasks, threads, args):
        self.function, self.n_tasks, self.threads, self.args = function, n_tasks, threads, args
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)
        self.next = 0
        self.running = 0
        self.error = None

    def work(self):
        while True:
            with self.lock:
                if self.error is not None or self.next >= self.n_tasks:
                    return
                start = self.next
                left = self.n_tasks - start
                stop = start + max(1, left // (GUIDED_SHARE * self.threads))
                self.next = stop
                self.running += 1
            try:
                self.function(start, stop, *self.args)
            except BaseException as exc:  # noqa: BLE001  (raised again by the caller)
                with self.lock:
                    if self.error is None:
                        self.error = exc
            finally:
                with self.lock:
                    self.running -= 1
                    if self.running == 0:
                        self.finished.notify_all()

    def wait(self):
        with self.lock:
            while self.running:
                self.finished.wait()
        if self.error is not None:
            raise self.error


def run(function, n_tasks, threads, *args):
    """Run ``function(start, stop, *args)`` over ``range(n_tasks)`` on up to ``threads`` threads.

    Parameters
    ----------
    function : callable
        Runs tasks ``start..stop``; a ``nogil`` Numba function, so that threads overlap.
    n_tasks : int
        Tasks in all.
    threads : int
        Threads to use, the calling thread among them; 0 or more than the machine's
        (``machine_threads``) uses the machine's.
    *args
        Passed to every call after ``start, stop``.
    """
    n_tasks = int(n_tasks)
    if n_tasks <= 0:
        return
    threads = min(int(threads) or machine_threads(), machine_threads(), n_tasks)
    launch = _Launch(function, n_tasks, max(1, threads), args)
    if threads > 1:
        pool = _pool()
        for _ in range(threads - 1):
            pool.submit(launch.work)
    launch.work()
    launch.wait()
