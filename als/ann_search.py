"""Filtered top-k from an approximate index, scored and ranked as the exact queries rank.

``FactorIndex`` holds one library index (``als.ann_indexes``) and the factors it was built
from. Its ``top_k`` asks the index for more candidates than wanted (the wanted count plus
everything the row excludes, as implicit does), drops excluded items, scores the rest from
the factors (so scores are the exact queries' scores, not the index's distances) and ranks
them best first, ties by id. A row that still has fewer than it needs asks again for four
times as many, up to the whole index; what the index cannot supply even then (rows the
index cannot reach, items it does not hold) is reported to the caller, which answers those
rows by the exact path.
"""

from __future__ import annotations

import numpy as np

from .ann_indexes import augment_for_inner_product, unit_rows

__all__ = ["INNER_PRODUCT", "COSINE", "FactorIndex", "Exclusions"]

#: the two questions an index answers
INNER_PRODUCT = "inner_product"
COSINE = "cosine"

#: queries scored at a time: bounds the (rows x candidates x factors) scratch array
CHUNK_ROWS = 512

#: how much more a short row asks for on its next try
GROWTH = 4


class Exclusions:
    """Items a query must never return: ``filter_ids`` for every row, ``liked`` per row.

    Parameters
    ----------
    n_items : int
        Items in the catalogue.
    filter_ids : numpy.ndarray of int64, optional
        Checked ids excluded from every row.
    liked : scipy.sparse.csr_matrix, optional
        Canonical CSR (sorted indices, no duplicates), one row per query: that row's
        excluded items.
    """

    def __init__(self, n_items, filter_ids=None, liked=None):
        self.n_items = n_items
        self.mask = None
        if filter_ids is not None and len(filter_ids):
            self.mask = np.zeros(n_items, dtype=bool)
            self.mask[filter_ids] = True
        self.liked = liked

    def counts(self, rows):
        """How many distinct items each of ``rows`` (query row numbers) excludes."""
        counts = np.zeros(len(rows), dtype=np.int64)
        if self.mask is not None:
            counts += int(self.mask.sum())
        if self.liked is not None:
            starts, ends = self.liked.indptr[rows], self.liked.indptr[rows + 1]
            counts += ends - starts
            if self.mask is not None:
                # liked items that are filtered too count once
                hits = self.mask[self.liked.indices].astype(np.int64)
                cumulative = np.concatenate([[0], np.cumsum(hits)])
                counts -= cumulative[ends] - cumulative[starts]
        return counts

    def allowed(self, rows, candidates):
        """Boolean mask of ``candidates`` (item ids, -1 for none) that ``rows`` may return."""
        allowed = candidates >= 0
        safe = np.where(allowed, candidates, 0)
        if self.mask is not None:
            allowed &= ~self.mask[safe]
        if self.liked is not None and self.liked.nnz:
            # (row, item) pairs as sorted keys: one binary search for the whole block
            row_of_entry = np.repeat(np.arange(self.liked.shape[0]), np.diff(self.liked.indptr))
            keys = row_of_entry.astype(np.int64) * self.n_items + self.liked.indices
            wanted = rows[:, None].astype(np.int64) * self.n_items + safe
            position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            allowed &= keys[position] != wanted
        return allowed


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
        self.norms = None
        if kind == COSINE:
            norms = np.linalg.norm(factors.astype(np.float64), axis=1)
            # zero rows (items without users) are similar to nothing: left out of the index
            self.rows = np.flatnonzero(norms > 0)
            norms[norms == 0] = 1e-10
            self.norms = norms.astype(self.score_dtype)
            vectors = unit_rows(factors[self.rows])
        else:
            self.rows = np.arange(len(factors))
            vectors = augment_for_inner_product(factors)
        self.library_index = library_index.build(vectors) if len(vectors) else None

    @property
    def score_dtype(self):
        """Scores are computed in the factors' dtype, at least float32."""
        return np.result_type(self.factors.dtype, np.float32)

    def _query_vectors(self, queries):
        if self.kind == COSINE:
            return unit_rows(queries)
        padding = np.zeros((len(queries), 1), dtype=np.float32)
        return np.hstack([np.asarray(queries, dtype=np.float32), padding])

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
        held = len(self.rows)
        limit = held if self.library_index is None else min(held, self.library_index.max_k or held)
        ids = np.full((len(rows), k), -1, dtype=np.int32)
        scores = np.full((len(rows), k), -np.inf, dtype=self.score_dtype)
        counts = np.zeros(len(rows), dtype=np.int64)
        # each row asks for what it needs plus what it excludes, as a single query would
        fetch = np.minimum(k + excluded, limit)
        pending = np.flatnonzero(needed > 0) if limit else np.empty(0, dtype=np.int64)
        vectors = self._query_vectors(queries)
        while len(pending):
            found = self._search(vectors[pending], fetch[pending])
            answer = self._rank(queries[pending], found, rows[pending], k, exclusions)
            ids[pending], scores[pending], counts[pending] = answer
            # a row that asked for every row the index can give is as full as it gets
            pending = pending[(counts[pending] < needed[pending]) & (fetch[pending] < limit)]
            fetch[pending] = np.minimum(fetch[pending] * GROWTH, limit)
        return ids, scores, counts < needed

    def _search(self, vectors, fetch):
        """Item ids of each row's first ``fetch[row]`` neighbours, -1 past them."""
        width = int(fetch.max())
        found = self.library_index.search(vectors, width)
        if found.shape[1] < width:  # the index held fewer rows than asked for
            found = np.pad(found, ((0, 0), (0, width - found.shape[1])), constant_values=-1)
        found = np.where(np.arange(width) < fetch[:, None], found, -1)
        return np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)

    def _rank(self, queries, found, rows, k, exclusions):
        """Allowed distinct candidates of each row, scored, best ``k`` first (ties by id)."""
        allowed = exclusions.allowed(rows, found)
        # sorted by id, so a repeated id is next to itself and ties keep id order below
        candidates = np.sort(np.where(allowed, found, np.iinfo(np.int64).max), axis=1)
        allowed = candidates < np.iinfo(np.int64).max
        allowed[:, 1:] &= candidates[:, 1:] != candidates[:, :-1]
        candidates = np.where(allowed, candidates, 0)
        scores = self._scores(queries, candidates)
        scores[~allowed] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        counts = np.minimum(allowed.sum(axis=1), k)
        ids = np.take_along_axis(candidates, order, axis=1).astype(np.int32)
        scores = np.take_along_axis(scores, order, axis=1)
        if ids.shape[1] < k:
            ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        missing = np.arange(k) >= counts[:, None]
        ids[missing], scores[missing] = -1, -np.inf
        return ids, scores, counts

    def _scores(self, queries, candidates):
        """``query . factor`` (or the cosine) of every candidate, row by row.

        A product and a sum along the factors: each row's scores come out the same whatever
        else is in the batch, so one query and a batch agree.
        """
        dtype = self.score_dtype
        queries = np.asarray(queries, dtype=dtype)
        scores = (self.factors[candidates].astype(dtype, copy=False) * queries[:, None, :]).sum(2)
        if self.kind == COSINE:
            query_norms = np.linalg.norm(queries, axis=1)
            query_norms[query_norms == 0] = 1e-10
            scores /= self.norms[candidates] * query_norms[:, None]
        return scores
