"""Train/test splits and ranking metrics, with ``implicit.evaluation``'s definitions.

A drop-in replacement for ``implicit.evaluation`` (0.7): ``train_test_split``,
``leave_k_out_split``, ``precision_at_k``, ``mean_average_precision_at_k``, ``ndcg_at_k``,
``AUC_at_k`` and ``ranking_metrics_at_k`` take the same arguments and compute the same numbers.
The metrics work with any model that has implicit's batch ``recommend(userids, user_items,
N=...)``; users are scored a batch at a time, so no dense users x items matrix is ever built,
and each batch is scored with NumPy over the returned ``ids`` matrix instead of a per-user loop.

Where implicit misbehaves we do not copy it: an int64-indexed matrix works, a
``np.random.RandomState`` seeds the split instead of crashing, leave-k-out is reproducible
from ``random_state`` alone (implicit draws its held-out items from NumPy's global generator),
and the cases implicit answers with a bare ``ZeroDivisionError`` raise a ``ValueError`` saying
why.
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from als.backends.base import as_int32

from .errors import InvalidTypeError, InvalidValueError
from .validation import (
    check_finite_real,
    check_positive_int,
    check_random_state,
    check_user_items,
)

__all__ = [
    "train_test_split",
    "leave_k_out_split",
    "precision_at_k",
    "mean_average_precision_at_k",
    "ndcg_at_k",
    "AUC_at_k",
    "ranking_metrics_at_k",
]

#: users scored per ``model.recommend`` call (implicit uses the same number)
DEFAULT_BATCH_SIZE = 1000


def train_test_split(ratings, train_percentage=0.8, random_state=None):
    """Randomly split the interactions of a ratings matrix into train and test matrices.

    Each stored interaction goes to the training matrix with probability
    ``train_percentage`` and to the test matrix otherwise, independently of the others.
    As in implicit, the test matrix keeps only positive interactions: entries whose value is
    zero or negative are dropped from it (they stay in the training matrix if drawn there).

    For a CSR matrix in canonical form (sorted indices, no duplicates) and an integer or
    ``None``-derived seed, the split is identical to ``implicit.evaluation.train_test_split``
    with the same ``random_state``.

    Parameters
    ----------
    ratings : scipy.sparse matrix
        Users x items interactions, CSR preferred (any sparse format is accepted).
        Duplicate entries are summed before splitting.
    train_percentage : float
        Probability that an interaction goes to the training matrix, in ``(0, 1]``.
    random_state : int, None, numpy.random.Generator or numpy.random.RandomState
        Seed or generator for the split; ``None`` draws fresh entropy.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix
        Two matrices of the same shape and dtype as ``ratings``.

    Raises
    ------
    TypeError
        If ``ratings`` is not a sparse matrix, ``train_percentage`` is not a real number or
        ``random_state`` is not a seed or generator.
    ValueError
        If ``train_percentage`` is outside ``(0, 1]``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> ratings = sp.csr_matrix(np.ones((4, 5), dtype=np.float32))
    >>> train, test = train_test_split(ratings, train_percentage=0.75, random_state=0)
    >>> train.shape == test.shape == ratings.shape, train.nnz + test.nnz
    (True, 20)
    """
    ratings = _check_ratings(ratings)
    train_percentage = check_finite_real(
        train_percentage, "train_percentage", exclusive_minimum=0, maximum=1
    )
    rng = check_random_state(random_state)

    # One uniform draw per stored entry, in row-major order: implicit draws the same numbers
    # over ``ratings.tocoo()``, which for canonical CSR input is this order.
    draws = rng.random(ratings.nnz)
    in_train = draws < train_percentage
    # implicit sets negative test values to zero and then drops explicit zeros; "not <= 0"
    # rather than "> 0" keeps NaN where implicit keeps it.
    in_test = ~in_train & ~(ratings.data <= 0)
    return _entries_where(ratings, in_train), _entries_where(ratings, in_test)


def leave_k_out_split(ratings, K=1, train_only_size=0.0, random_state=None):
    """Hold out ``K`` random interactions of every eligible user as the test matrix.

    A user is eligible when they have more than ``K + 1`` interactions (implicit's rule) and
    are not among the train-only users. ``train_only_size`` is the fraction of the users with
    any interaction that are kept entirely in the training matrix; they are drawn first, with
    ``random_state.choice`` exactly as implicit draws them. Every other interaction goes to
    the training matrix. Default arguments give a leave-one-out split.

    Parameters
    ----------
    ratings : scipy.sparse matrix
        As in :func:`train_test_split`.
    K : int
        Interactions held out per eligible user, at least 1.
    train_only_size : float
        Fraction of the users to keep only in the training matrix, in ``[0, 1)``. When it
        is positive, at least one user is kept.
    random_state : int, None, numpy.random.Generator or numpy.random.RandomState
        Seed or generator for both draws; ``None`` draws fresh entropy.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix
        Two matrices of the same shape and dtype as ``ratings``; ``test`` has exactly ``K``
        entries in each eligible user's row and none elsewhere.

    Raises
    ------
    TypeError
        If ``ratings`` is not a sparse matrix, ``K`` is not an integer, ``train_only_size``
        is not a real number or ``random_state`` is not a seed or generator.
    ValueError
        If ``K < 1`` or ``train_only_size`` is outside ``[0, 1)``.

    Notes
    -----
    implicit chooses the held-out interactions with NumPy's global generator, ignoring
    ``random_state``, so its test matrix cannot be reproduced; here ``random_state`` decides
    everything. Which users are eligible and which are train-only is the same as implicit's
    for the same integer seed whenever every user has at least one interaction. (When some
    have none, implicit compares positions among the users that have interactions with user
    ids; here the positions are mapped to those users' ids, as intended.)

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> ratings = sp.csr_matrix(np.ones((3, 6), dtype=np.float32))
    >>> train, test = leave_k_out_split(ratings, K=2, random_state=0)
    >>> np.diff(test.indptr).tolist(), np.diff(train.indptr).tolist()
    ([2, 2, 2], [4, 4, 4])
    """
    ratings = _check_ratings(ratings)
    K = check_positive_int(K, "K")
    train_only_size = check_finite_real(
        train_only_size, "train_only_size", minimum=0, exclusive_maximum=1
    )
    rng = check_random_state(random_state)

    counts = np.diff(ratings.indptr)
    eligible = counts > K + 1
    if train_only_size > 0.0:
        users_with_items = np.flatnonzero(counts)
        size = max(1, int(len(users_with_items) * train_only_size))
        chosen = rng.choice(len(users_with_items), size=size, replace=False)
        eligible[users_with_items[chosen]] = False

    # Shuffle each eligible user's entries by sorting on (user, uniform draw) and hold out
    # the first K of each user's run.
    entry_user = np.repeat(np.arange(ratings.shape[0]), counts)
    candidates = np.flatnonzero(eligible[entry_user])
    order = np.lexsort((rng.random(len(candidates)), entry_user[candidates]))
    shuffled = candidates[order]
    run_start = np.cumsum(counts[eligible]) - counts[eligible]
    rank = np.arange(len(shuffled)) - np.repeat(run_start, counts[eligible])
    in_test = np.zeros(ratings.nnz, dtype=bool)
    in_test[shuffled[rank < K]] = True
    return _entries_where(ratings, ~in_test), _entries_where(ratings, in_test)


def ranking_metrics_at_k(
    model,
    train_user_items,
    test_user_items,
    K=10,
    show_progress=True,
    num_threads=1,
    *,
    batch_size=DEFAULT_BATCH_SIZE,
):
    """Precision, MAP, NDCG and AUC at ``K`` of a fitted model, as implicit defines them.

    Every user with at least one test item gets ``model.recommend(userids,
    train_user_items[userids], N=K)`` (so items seen in training are filtered out, as the
    model's ``filter_already_liked_items=True`` default does); users without test items are
    skipped. A recommended id below 0 (padding in a row with fewer than ``K`` candidates) or
    a row shorter than ``K`` counts as a miss. For a user with ``P`` test items among
    ``n_items`` items, hits at 0-based ranks ``i`` and ``m = min(K, P)``:

    - precision: total hits over the sum of ``m`` over users (pooled, not a mean of ratios);
    - map: mean over users of ``sum(hits_so_far / (i + 1) at each hit) / m``;
    - ndcg: mean over users of ``sum(1 / log2(i + 2) at each hit) / sum(1 / log2(j + 2),
      j < m)``;
    - auc: mean over users of ``(sum over the misses among the top K of the hits ranked
      above them + (hits + P) / 2 * (n_items - P - misses)) / (P * (n_items - P))``,
      with ``misses = K - hits``.

    Parameters
    ----------
    model : object
        A fitted recommender with implicit's batch ``recommend(userids, user_items, N=...)``
        returning ``(ids, scores)`` arrays of shape ``(len(userids), N)``.
    train_user_items : scipy.sparse matrix
        Users x items interactions the model was trained on (filtered from the rankings).
    test_user_items : scipy.sparse matrix
        Users x items held-out interactions; only which entries are stored matters.
    K : int
        Length of the ranking evaluated, at least 1.
    show_progress : bool
        Show a tqdm progress bar over users.
    num_threads : int
        Accepted for compatibility with implicit, whose batched evaluation also ignores it:
        the work is in ``model.recommend``, whose threads are the model's ``num_threads``.
    batch_size : int
        Users per ``model.recommend`` call; memory grows as ``batch_size * n_items`` inside
        the model.

    Returns
    -------
    dict
        ``{"precision": float, "map": float, "ndcg": float, "auc": float}``.

    Raises
    ------
    TypeError
        If a matrix is not sparse or dense 2-D, ``K``, ``num_threads`` or ``batch_size`` is
        not an integer, or ``model`` has no ``recommend`` method.
    ValueError
        If the two matrices differ in shape or from the model's item count, ``K`` or
        ``batch_size`` is below 1, no user has a test item, or a user's test items cover
        every item (AUC is undefined; implicit raises ``ZeroDivisionError`` in both cases).

    Warns
    -----
    ParameterWarning
        When a matrix is not CSR and is converted.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> class Fixed:  # ranks items 0, 1, 2, ... for every user
    ...     def recommend(self, userids, user_items, N=10, filter_already_liked_items=True):
    ...         ids = np.tile(np.arange(N), (len(userids), 1))
    ...         return ids, -ids.astype(np.float32)
    >>> train = sp.csr_matrix((2, 5), dtype=np.float32)
    >>> test = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]], dtype=np.float32))
    >>> metrics = ranking_metrics_at_k(Fixed(), train, test, K=2, show_progress=False)
    >>> metrics["precision"], metrics["map"], metrics["auc"]
    (0.5, 0.5, 0.625)
    """
    if not callable(getattr(model, "recommend", None)):
        raise InvalidTypeError(
            f"model must have a recommend method; {type(model).__name__} has none"
        )
    K = check_positive_int(K, "K")
    check_positive_int(num_threads, "num_threads", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    train_user_items = check_user_items(train_user_items, "train_user_items")
    test_user_items = check_user_items(
        test_user_items, "test_user_items", shape=train_user_items.shape
    )
    n_items = test_user_items.shape[1]
    _check_model_shape(model, n_items)

    test_counts = np.diff(test_user_items.indptr)
    to_generate = as_int32(np.flatnonzero(test_counts), "test_user_items rows")
    if not len(to_generate):
        raise InvalidValueError("test_user_items has no interactions: no user can be evaluated")
    if np.any(test_counts >= n_items):
        user = int(np.flatnonzero(test_counts >= n_items)[0])
        raise InvalidValueError(
            f"test_user_items holds every item for user {user}: AUC is undefined for a user "
            "with no negative items"
        )

    discount = 1.0 / np.log2(np.arange(2, K + 2))
    ideal_dcg = np.cumsum(discount)
    hits_total = precision_denominator = ap_total = ndcg_total = auc_total = 0.0

    with tqdm(total=len(to_generate), disable=not show_progress) as progress:
        for start in range(0, len(to_generate), batch_size):
            batch = to_generate[start : start + batch_size]
            ids = _recommend_ids(model, batch, train_user_items[batch], K)
            hits = _find_hits(ids, test_user_items[batch], n_items)

            positives = test_counts[batch].astype(np.float64)
            negatives = n_items - positives
            relevant_at_k = np.minimum(K, positives)
            hits_so_far = np.cumsum(hits, axis=1)
            n_hits = hits_so_far[:, -1]
            n_misses = K - n_hits

            hits_total += n_hits.sum()
            precision_denominator += relevant_at_k.sum()
            ap = (hits * hits_so_far / np.arange(1, K + 1)).sum(axis=1) / relevant_at_k
            ap_total += ap.sum()
            dcg = (hits * discount).sum(axis=1)
            ndcg_total += (dcg / ideal_dcg[relevant_at_k.astype(np.intp) - 1]).sum()
            # each miss in the top K ranks below the hits before it; the negatives never
            # recommended are credited half of the positives not ranked above them.
            auc = (~hits * hits_so_far).sum(axis=1) + (n_hits + positives) / 2.0 * (
                negatives - n_misses
            )
            auc_total += (auc / (positives * negatives)).sum()
            progress.update(len(batch))

    n_evaluated = len(to_generate)
    return {
        "precision": float(hits_total / precision_denominator),
        "map": float(ap_total / n_evaluated),
        "ndcg": float(ndcg_total / n_evaluated),
        "auc": float(auc_total / n_evaluated),
    }


def _one_metric(key, name, summary, returns):
    """One of ``ranking_metrics_at_k``'s results as a function of its own, as implicit has.

    It takes exactly ``ranking_metrics_at_k``'s arguments (the signature is that function's)
    and returns ``ranking_metrics_at_k(...)[key]``.
    """

    def metric(*args, **kwargs):
        return ranking_metrics_at_k(*args, **kwargs)[key]

    metric.__name__ = metric.__qualname__ = name
    metric.__signature__ = inspect.signature(ranking_metrics_at_k)
    metric.__doc__ = (
        f"{summary}\n\n    See ``ranking_metrics_at_k`` for the parameters and errors.\n\n"
        f"    Returns\n    -------\n    float\n        {returns}\n    "
    )
    return metric


precision_at_k = _one_metric(
    "precision",
    "precision_at_k",
    "Precision at ``K``: hits over ``sum(min(K, n_relevant))``, pooled over users.",
    "The pooled precision at ``K``.",
)
mean_average_precision_at_k = _one_metric(
    "map",
    "mean_average_precision_at_k",
    "Mean average precision at ``K``, averaged over users with test items.",
    "MAP at ``K``.",
)
ndcg_at_k = _one_metric(
    "ndcg",
    "ndcg_at_k",
    "Normalised discounted cumulative gain at ``K``, averaged over users with test items.",
    "NDCG at ``K``.",
)
AUC_at_k = _one_metric(  # noqa: N816 - implicit's name
    "auc",
    "AUC_at_k",
    "Area under the ROC curve limited to the top ``K``, averaged over users with test items.",
    "AUC at ``K``.",
)


def _recommend_ids(model, batch, user_items, K):
    """Return the model's top ``K`` item ids for ``batch`` as a ``(len(batch), K)`` array.

    Missing ranks (a model returning fewer than ``K`` columns) are padded with -1. Ids left
    on a GPU (a CuPy array) are copied to the host.
    """
    ids, _ = model.recommend(batch, user_items, N=K)
    if not isinstance(ids, np.ndarray) and hasattr(ids, "get"):
        ids = ids.get()
    ids = np.asarray(ids)
    if ids.ndim == 1 and len(batch) == 1:
        ids = ids[np.newaxis, :]
    if ids.ndim != 2 or ids.shape[0] != len(batch):
        raise InvalidValueError(
            f"model.recommend returned ids of shape {ids.shape} for {len(batch)} users; "
            f"expected ({len(batch)}, {K})"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidTypeError(f"model.recommend returned ids of dtype {ids.dtype}, not integers")
    padded = np.full((len(batch), K), -1, dtype=np.int64)
    width = min(K, ids.shape[1])
    padded[:, :width] = ids[:, :width]
    return padded


def _find_hits(ids, batch_test_items, n_items):
    """Return a boolean ``ids.shape`` array: is ``ids[r, i]`` one of row ``r``'s test items.

    Each (row, item) pair becomes the key ``row * n_items + item``; the test keys are sorted
    because the CSR rows are taken in order with sorted indices, so one ``searchsorted`` over
    them answers every query. Ids outside ``[0, n_items)`` are never hits.
    """
    rows = np.repeat(
        np.arange(batch_test_items.shape[0], dtype=np.int64), np.diff(batch_test_items.indptr)
    )
    test_keys = rows * n_items + batch_test_items.indices
    valid = (ids >= 0) & (ids < n_items)
    query = np.arange(ids.shape[0], dtype=np.int64)[:, np.newaxis] * n_items + ids
    position = np.searchsorted(test_keys, query)
    found = np.zeros(ids.shape, dtype=bool)
    inside = position < len(test_keys)
    found[inside] = test_keys[position[inside]] == query[inside]
    return found & valid


def _check_model_shape(model, n_items):
    """Raise if the model's ``item_factors`` (when it has them) disagree with ``n_items``."""
    shape = getattr(getattr(model, "item_factors", None), "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] != n_items:
        raise InvalidValueError(
            f"test_user_items has {n_items} items but the model has {shape[0]} item factors"
        )


def _check_ratings(ratings):
    """Return ``ratings`` as a canonical CSR matrix, keeping its dtype (and any NaN, as
    implicit does); the input is not modified. Any sparse format is accepted silently: a
    split needs every entry, not fast rows."""
    return check_user_items(
        ratings, "ratings", dtype=None, allow_dense=False, warn=False, finite=False
    )


def _entries_where(ratings, keep):
    """Return the CSR matrix of the entries of canonical ``ratings`` where ``keep`` is true."""
    counts = np.bincount(
        np.repeat(np.arange(ratings.shape[0]), np.diff(ratings.indptr))[keep],
        minlength=ratings.shape[0],
    )
    indptr = np.zeros(ratings.shape[0] + 1, dtype=ratings.indptr.dtype)
    np.cumsum(counts, out=indptr[1:])
    return scipy.sparse.csr_matrix(
        (ratings.data[keep], ratings.indices[keep], indptr), shape=ratings.shape
    )
