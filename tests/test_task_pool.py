"""``backends.task_pool``: every task runs once, on any thread count, from many threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numba import njit

from als import AlternatingLeastSquares
from als.backends import task_pool
from tests.conftest import power_law_matrix


@njit(nogil=True)
def count_tasks(start, stop, counts):
    for task in range(start, stop):
        counts[task] += 1


@njit(nogil=True)
def fail_at(start, stop, bad, counts):
    for task in range(start, stop):
        if task == bad:
            raise ValueError("task failed on purpose")
        counts[task] += 1


def run_with_deadline(function, *args, seconds=60):
    """Run ``function(*args)`` in a thread; fail (instead of hanging) if it does not return."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} did not return within {seconds} s"
    return outcome


@pytest.mark.parametrize("threads", [1, 2, 0, 64])
@pytest.mark.parametrize("n_tasks", [0, 1, 3, 1000])
def test_every_task_runs_exactly_once(threads, n_tasks):
    counts = np.zeros(n_tasks, np.int64)
    task_pool.run(count_tasks, n_tasks, threads, counts)
    np.testing.assert_array_equal(counts, 1)


def test_an_exception_in_a_task_is_raised_by_the_launch():
    counts = np.zeros(500, np.int64)
    outcome = run_with_deadline(task_pool.run, fail_at, 500, 0, 321, counts)
    assert isinstance(outcome.get("error"), ValueError)
    assert "task failed on purpose" in str(outcome["error"])
    assert counts[321] == 0 and counts.max() <= 1
    # the pool is still usable afterwards
    counts[:] = 0
    task_pool.run(count_tasks, 500, 0, counts)
    np.testing.assert_array_equal(counts, 1)


def test_launches_from_many_threads_at_once():
    results = [np.zeros(2000, np.int64) for _ in range(8)]
    threads = [
        threading.Thread(target=task_pool.run, args=(count_tasks, 2000, 0, counts))
        for counts in results
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    for counts in results:
        np.testing.assert_array_equal(counts, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factors_do_not_depend_on_the_thread_count(dtype):
    user_items = power_law_matrix(300, 200, 5000, seed=4, negative_fraction=0.1)
    fitted = []
    for threads in (1, 2, 0):
        model = AlternatingLeastSquares(
            factors=12, iterations=3, random_state=5, num_threads=threads, dtype=dtype,
            calculate_training_loss=True,
        )  # fmt: skip
        losses = []
        model.fit(
            user_items, show_progress=False, callback=lambda i, t, loss, to=losses: to.append(loss)
        )
        fitted.append((model.user_factors, model.item_factors, losses))
    # every row is computed by one call from the same inputs, summing in the same order
    # whatever the thread count, and the loss adds the tasks' sums in task order: equal bits
    for user_factors, item_factors, losses in fitted[1:]:
        np.testing.assert_array_equal(user_factors, fitted[0][0])
        np.testing.assert_array_equal(item_factors, fitted[0][1])
        assert losses == fitted[0][2]
