"""Filtered top-k from an approximate index, scored and ranked as the exact queries rank.

``FactorIndex`` holds one library index (``als.ann_indexes``) and the factors it was built
from. Its ``top_k`` asks the index for more candidates than wanted (the wanted count plus
everything the row excludes, as implicit does), drops excluded items, scores the rest from
the factors (so scores are the exact queries' scores, not the index's distances) and ranks
them best first, ties by id. A row that still has fewer than it needs asks again for four
times as many, up to the whole index; what the index cannot supply even then (rows the
index cannot reach, items it does not hold) is reported to the caller, which answers those
rows by the exact path. ``top_k_one`` does the same for one query without a batch's
bookkeeping (a served query pays microseconds of Python, not tens of them); both hand the
candidates to one Numba kernel, ``rank_candidates``, so one query and its row of a batch
agree exactly.
"""

from __future__ import annotations

import numba
import numpy as np

from .ann_indexes import augment_for_inner_product, unit_rows

__all__ = ["INNER_PRODUCT", "COSINE", "FactorIndex", "Exclusions", "contains", "rank_candidates"]

#: the two questions an index answers
INNER_PRODUCT = "inner_product"
COSINE = "cosine"

#: queries searched at a time: bounds the (rows x candidates) arrays of one search
CHUNK_ROWS = 512

#: how much more a short row asks for on its next try
GROWTH = 4


class Exclusions:
    """Items a query must never return: ``filter_ids`` for every row, ``liked`` per row.

    Both are kept as sorted ids and looked up by binary search, so the cost follows the
    number of candidates, not the size of the catalogue.

    Parameters
    ----------
    n_items : int
        Items in the catalogue.
    filter_ids : numpy.ndarray of int64, optional
        Checked ids excluded from every row (any order, repeats allowed).
    liked : scipy.sparse.csr_matrix, optional
        Canonical CSR (sorted indices, no duplicates), one row per query: that row's
        excluded items.
    """

    def __init__(self, n_items, filter_ids=None, liked=None):
        self.n_items = n_items
        self.filter_ids = None
        if filter_ids is not None and len(filter_ids):
            self.filter_ids = np.unique(filter_ids)
        self.liked = liked if liked is not None and liked.nnz else None
        self.liked_keys = None
        if self.liked is not None:
            # (row, item) pairs as sorted keys: one binary search for a whole block
            row_of_entry = np.repeat(np.arange(liked.shape[0]), np.diff(liked.indptr))
            self.liked_keys = row_of_entry.astype(np.int64) * n_items + liked.indices

    def counts(self, rows):
        """How many distinct items each of ``rows`` (query row numbers) excludes."""
        counts = np.zeros(len(rows), dtype=np.int64)
        if self.filter_ids is not None:
            counts += len(self.filter_ids)
        if self.liked is not None:
            starts, ends = self.liked.indptr[rows], self.liked.indptr[rows + 1]
            counts += ends - starts
            if self.filter_ids is not None:
                # liked items that are filtered too count once
                hits = contains(self.filter_ids, self.liked.indices).astype(np.int64)
                cumulative = np.concatenate([[0], np.cumsum(hits)])
                counts -= cumulative[ends] - cumulative[starts]
        return counts

    def allowed(self, rows, candidates):
        """Boolean mask of ``candidates`` (item ids, -1 for none) that ``rows`` may return."""
        allowed = candidates >= 0
        if self.filter_ids is not None:
            allowed &= ~contains(self.filter_ids, candidates)
        if self.liked_keys is not None:
            wanted = rows[:, None].astype(np.int64) * self.n_items + candidates
            allowed &= ~contains(self.liked_keys, wanted)
        return allowed


def contains(sorted_ids, values):
    """Boolean array: which of ``values`` are in ``sorted_ids`` (sorted, not empty)."""
    position = np.searchsorted(sorted_ids, values)
    np.minimum(position, len(sorted_ids) - 1, out=position)
    return sorted_ids[position] == values


class FactorIndex:
    """A library index over one side's factors, and those factors.

    Parameters
    ----------
    library_index : FaissIndex, NMSLibIndex or AnnoyIndex
        Unbuilt; built here.
    factors : numpy.ndarray
        The factors indexed, kept to score candidates (host memory, the model's dtype).
    kind : {"inner_product", "cosine"}
        Rank by ``query . factor`` (``recommend``) or by cosine similarity
        (``similar_items``).
    """

    def __init__(self, library_index, factors, kind):
        self.factors = factors
        self.kind = kind
        # scores are computed in the factors' dtype, at least float32
        self.score_dtype = np.result_type(factors.dtype, np.float32)
        norms = np.empty(0, dtype=self.score_dtype)  # none: inner products are not divided
        if kind == COSINE:
            norms = np.sqrt(np.einsum("ij,ij->i", factors, factors, dtype=np.float64))
            # zero rows (items without users) are similar to nothing: left out of the index
            self.rows = np.flatnonzero(norms > 0)
            norms[norms == 0] = 1e-10
            norms = norms.astype(self.score_dtype)
            vectors = unit_rows(factors[self.rows])
        else:
            self.rows = np.arange(len(factors))
            vectors = augment_for_inner_product(factors)
        # what the ranking kernel scores candidates with
        self._scoring = (factors, norms)
        self.unit_queries = kind == COSINE and library_index.needs_unit_queries
        self.library_index = None
        if len(vectors):
            self.library_index = library_index.build(vectors, unit_queries=kind == COSINE)
        held = len(self.rows)
        # the most neighbours one search can return
        self.limit = min(held, library_index.max_k or held) if len(vectors) else 0

    def _query_vectors(self, queries):
        if self.kind == COSINE:
            return unit_rows(queries) if self.unit_queries else queries
        padding = np.zeros((len(queries), 1), dtype=np.float32)
        return np.hstack([queries.astype(np.float32, copy=False), padding])

    def top_k(self, queries, k, exclusions):
        """The ``k`` best items for each query the index can answer.

        Parameters
        ----------
        queries : numpy.ndarray, shape (n_queries, factors)
            User factors (inner product) or item factors (cosine, normalised here).
        k : int
            Columns of the answer (at most the number of items).
        exclusions : Exclusions
            Items each row must not return.

        Returns
        -------
        ids : numpy.ndarray of int32, shape (n_queries, k)
            Best first, -1 where a row has fewer candidates than ``k``.
        scores : numpy.ndarray, shape (n_queries, k)
            Inner products or cosines, -inf where ``ids`` is -1.
        short : numpy.ndarray of bool, shape (n_queries,)
            Rows the index could not fill: the caller answers them exactly.
        """
        queries = np.asarray(queries, dtype=self.score_dtype)
        ids = np.full((len(queries), k), -1, dtype=np.int32)
        scores = np.full((len(queries), k), -np.inf, dtype=self.score_dtype)
        short = np.zeros(len(queries), dtype=bool)
        for start in range(0, len(queries), CHUNK_ROWS):
            rows = np.arange(start, min(start + CHUNK_ROWS, len(queries)))
            block = slice(rows[0], rows[-1] + 1)
            ids[block], scores[block], short[block] = self._top_k_rows(
                queries[block], rows, k, exclusions
            )
        return ids, scores, short

    def _top_k_rows(self, queries, rows, k, exclusions):
        excluded = exclusions.counts(rows)
        needed = np.minimum(k, len(self.factors) - excluded)
        limit = self.limit
        ids = np.full((len(rows), k), -1, dtype=np.int32)
        scores = np.full((len(rows), k), -np.inf, dtype=self.score_dtype)
        counts = np.zeros(len(rows), dtype=np.int64)
        # each row asks for what it needs plus what it excludes, as a single query would
        fetch = np.minimum(k + excluded, limit)
        pending = np.flatnonzero(needed > 0) if limit else np.empty(0, dtype=np.int64)
        vectors = self._query_vectors(queries)
        while len(pending):
            found = self._search(vectors[pending], fetch[pending])
            items = np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)
            found[~exclusions.allowed(rows[pending], items)] = -1
            answer = rank_candidates(found, self.rows, NO_IDS, queries[pending], *self._scoring, k)
            ids[pending], scores[pending], counts[pending] = answer
            # a row that asked for every row the index can give is as full as it gets
            pending = pending[(counts[pending] < needed[pending]) & (fetch[pending] < limit)]
            fetch[pending] = np.minimum(fetch[pending] * GROWTH, limit)
        return ids, scores, counts < needed

    def top_k_one(self, query, k, excluded):
        """The ``k`` best items for one query, or None where the index cannot supply them.

        The single-query form of ``top_k``, without a batch's bookkeeping: the same
        candidates, scores and order as that query's row of a batch, unpadded.

        Parameters
        ----------
        query : numpy.ndarray, shape (factors,)
            A user's factors (inner product) or an item's (cosine).
        k : int
            Items wanted (at most the number of items).
        excluded : numpy.ndarray of int64
            Sorted distinct ids the answer must not hold.

        Returns
        -------
        (ids, scores) or None
            int32 ids best first and their scores; None when the index found too few
            (the caller answers exactly).
        """
        needed = min(k, len(self.factors) - len(excluded))
        if needed <= 0:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=self.score_dtype)
        queries = query.astype(self.score_dtype, copy=False)[None, :]
        vectors = self._query_vectors(queries)
        fetch = min(k + len(excluded), self.limit)
        while fetch:
            found = self.library_index.search(vectors, (fetch,))
            ids, scores, counts = rank_candidates(
                found, self.rows, excluded, queries, *self._scoring, k
            )
            if counts[0] >= needed:
                return ids[0, : counts[0]], scores[0, : counts[0]]
            if fetch >= self.limit:
                break
            fetch = min(fetch * GROWTH, self.limit)
        return None

    def _search(self, vectors, fetch):
        """Row numbers of each query's first ``fetch[row]`` neighbours, -1 past them."""
        width = int(fetch.max())
        found = self.library_index.search(vectors, fetch)
        if found.shape[1] < width:  # the index held fewer rows than asked for
            found = np.pad(found, ((0, 0), (0, width - found.shape[1])), constant_values=-1)
        return np.where(np.arange(width) < fetch[:, None], found, -1)


#: an empty id list (no exclusions beyond those already applied)
NO_IDS = np.empty(0, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def rank_candidates(found, rows, excluded, queries, factors, norms, k):
    """Score each query's candidates from the factors and keep the best ``k``, ties by id.

    Parameters
    ----------
    found : int64 array, shape (n_queries, width)
        Row numbers of the index (``rows`` maps them to item ids), -1 for none.
    rows : int64 array
        The item id of each row of the index.
    excluded : int64 array
        Sorted item ids no query may return (empty: none).
    queries : float array, shape (n_queries, factors)
        In the scores' dtype.
    factors : float array, shape (n_items, factors)
        The indexed side's factors.
    norms : float array
        The items' norms (zero ones as 1e-10) for cosines; empty for inner products.
    k : int
        Items kept per query.

    Returns
    -------
    ids, scores, counts
        int32 ids best first (-1 past ``counts``), their scores in ``queries``' dtype
        (-inf past ``counts``), and how many each row holds.
    """
    n_queries, width = found.shape
    ids = np.full((n_queries, k), -1, dtype=np.int32)
    scores = np.full((n_queries, k), -np.inf, dtype=queries.dtype)
    counts = np.zeros(n_queries, dtype=np.int64)
    candidates = np.empty(width, dtype=np.int64)
    negated = np.empty(width, dtype=queries.dtype)
    for row in range(n_queries):
        held = 0
        for column in range(width):
            if found[row, column] >= 0:
                item = rows[found[row, column]]
                if not (len(excluded) and sorted_contains(excluded, item)):
                    candidates[held] = item
                    held += 1
        # sorted by id, so a repeated id is next to itself and ties keep id order below
        distinct = sorted_distinct(candidates[:held])
        query_norm = 1.0
        if len(norms):
            query_norm = np.sqrt(np.sum(queries[row].astype(np.float64) ** 2))
            if query_norm == 0:  # an item without factors: similar to nothing
                query_norm = 1e-10
        for position in range(len(distinct)):
            item = distinct[position]
            total = 0.0
            for column in range(queries.shape[1]):
                total += factors[item, column] * queries[row, column]
            if len(norms):
                total /= norms[item] * query_norm
            negated[position] = -total
        order = np.argsort(negated[: len(distinct)], kind="mergesort")
        counts[row] = min(len(distinct), k)
        for position in range(counts[row]):
            ids[row, position] = distinct[order[position]]
            scores[row, position] = -negated[order[position]]
    return ids, scores, counts


@numba.njit(cache=True, nogil=True)
def sorted_contains(sorted_ids, value):
    """Whether ``value`` is among ``sorted_ids`` (binary search)."""
    position = np.searchsorted(sorted_ids, value)
    return position < len(sorted_ids) and sorted_ids[position] == value


@numba.njit(cache=True, nogil=True)
def sorted_distinct(values):
    """``values`` sorted, each once."""
    values = np.sort(values)
    kept = 0
    for position in range(len(values)):
        if position == 0 or values[position] != values[kept - 1]:
            values[kept] = values[position]
            kept += 1
    return values[:kept]
