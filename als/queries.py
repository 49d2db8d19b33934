"""The queries of a factor model: recommend, similar items and users, explain, and their caches.

``MatrixFactorizationBase`` answers from learned factors, as implicit's class of that name
does, and knows nothing of how they were learned or where they live. A model derives from it
and provides:

- ``backend_``: the ``als.backends.base.Backend`` holding the factors (resolved on first use);
- ``_factors(side)``: the factors of ``side`` (``als.fitting.USERS`` or ``ITEMS``) in that
  backend's memory, None before a fit;
- ``_recalculate(ids, matrix, side)``: factors (in backend memory) of rows solved from their
  interactions in ``matrix``, against the other side's factors;
- ``solver_settings()``: the checked fit parameters (``als.fitting.SolverSettings``): the
  confidence transform and the regularization the Gram matrix carries;
- ``_dtype()``: the factor dtype.

The Gram matrices, norms and unit-norm factors are cached here on first use; the model calls
``_clear_caches()`` whenever its factors change. Every computation is a backend call: the
queries never ask which backend they hold.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse

from als.backends.base import check_int32_ids

from .errors import InvalidValueError, ModelFitError
from .fitting import ITEMS, USERS
from .validation import check_ids, check_positive_int, check_user_items, is_scalar

__all__ = ["MatrixFactorizationBase"]


class MatrixFactorizationBase:
    """Queries on user and item factors: the base of ``AlternatingLeastSquares``.

    See the module's description for what a subclass provides.
    """

    # -- cached Gram matrices, norms and unit factors ----------------------------------------

    def _clear_caches(self):
        """Forget what was computed from the factors: called whenever they change."""
        self._gram_cache = {}
        self._norm_cache = {}
        self._unit_cache = {}

    def _gram(self, side):
        """``F^T F + lambda I`` of ``side``'s factors, cached (lambda as the model options
        scale it: ``lambda / alpha0``, or 0 when lambda is per row)."""
        settings = self.solver_settings()
        regularization = 0.0 if settings.nu else settings.regularization / settings.alpha0
        key = (side.name, regularization)
        if key not in self._gram_cache:
            self._gram_cache[key] = self.backend_.gram(self._factors(side), regularization)
        return self._gram_cache[key]

    def _norms(self, side):
        if side.name not in self._norm_cache:
            self._norm_cache[side.name] = self.backend_.norms(self._factors(side))
        return self._norm_cache[side.name]

    def _unit_factors(self, side):
        """``side``'s factors divided by their norms, cached: cosine similarity is then a
        plain top-k of dot products, with no division per score (implicit divides each score
        by the candidate's norm and then by the query's)."""
        if side.name not in self._unit_cache:
            self._unit_cache[side.name] = self._unit(self._factors(side), self._norms(side))
        return self._unit_cache[side.name]

    def _unit(self, factors, norms):
        """``factors / norms``, row by row; refused when a norm overflowed the dtype."""
        if not self.backend_.all_finite(norms):
            raise ModelFitError(
                "a norm is NaN or infinite: the factors are too large for "
                f"{factors.dtype.name} (refit with more regularization, or use float64)"
            )
        return factors / norms[:, None]

    @property
    def YtY(self):
        """``Y^T Y`` of the item factors, as NumPy (implicit's attribute of that name)."""
        self._require_fit()
        return self.backend_.to_host(self.backend_.gram(self._factors(ITEMS), 0.0))

    @property
    def XtX(self):
        """``X^T X`` of the user factors, as NumPy (implicit's attribute of that name)."""
        self._require_fit()
        return self.backend_.to_host(self.backend_.gram(self._factors(USERS), 0.0))

    @property
    def user_norms(self):
        """Norms of the user factors (zero norms replaced by 1e-10)."""
        return self._require_fit().to_host(self._norms(USERS))

    @property
    def item_norms(self):
        """Norms of the item factors (zero norms replaced by 1e-10)."""
        return self._require_fit().to_host(self._norms(ITEMS))

    # -- queries ------------------------------------------------------------------------------

    def _require_fit(self):
        """Refuse a model without factors; otherwise make sure they are on the backend."""
        if self._factors(USERS) is None or self._factors(ITEMS) is None:
            raise InvalidValueError("the model has no factors yet: call fit (or load) first")
        return self.backend_

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        """Recommend items for one user or a batch of users.

        Parameters
        ----------
        userid : int or array_like of int
            The user(s) to recommend for.
        user_items : csr_matrix, shape (n_users_in_userid, n_items)
            Each user's interactions, one row per user in ``userid``: their liked items are
            filtered out and, with ``recalculate_user``, their factors computed from it.
            May be None when neither is asked for, and may have fewer columns than the model
            has items (items added later by ``partial_fit_items``).
        N : int
            Number of recommendations per user.
        filter_already_liked_items : bool
            Never recommend an item the user has in ``user_items``.
        filter_items : array_like of int, optional
            Items never to recommend.
        recalculate_user : bool
            Compute the users' factors from ``user_items`` instead of the stored ones.
        items : array_like of int, optional
            Rank only these items, as implicit does: every one of them is returned (up to
            ``N``; an id given twice once), best first, and the user's liked items, when
            filtered, come last with score -inf. Cannot be combined with a non-empty
            ``filter_items``.

        Returns
        -------
        ids, scores : numpy.ndarray
            For a scalar ``userid``, 1-D arrays of at most ``N`` items, best first: filtered
            and liked items are left out, never returned with a sentinel score (except
            liked items of an ``items`` list, see above). For a batch, 2-D arrays of
            ``min(N, candidates)`` columns; a user with fewer candidates than that gets id
            -1 and score -inf in the remaining places.

        Raises
        ------
        IdOutOfRangeError
            (a ValueError and an IndexError) for a user or item id the model does not have.
        """
        self._require_fit()
        N = check_positive_int(N, "N")
        n_users, n_items = len(self._factors(USERS)), len(self._factors(ITEMS))
        scalar = is_scalar(userid)
        count = 1 if scalar else len(np.atleast_1d(userid))
        liked = None
        rows = getattr(user_items, "shape", (count,))[0]
        if scalar and rows > 1 and (filter_already_liked_items or recalculate_user):
            raise InvalidValueError(
                f"user_items has {rows} rows but userid is one user: pass that user's row, "
                "recommend(userid, user_items[userid]), not the whole matrix (implicit 0.4 style)."
            )
        if filter_already_liked_items or recalculate_user:
            liked = check_user_items(
                user_items, "user_items", rows=count, columns=n_items, widen=True
            )
        if recalculate_user:
            queries = self._recalculate(userid, user_items, USERS)
        else:
            ids = check_ids(userid, "userid", n_users)
            queries = self._factors(USERS)[self.backend_.to_device(np.atleast_1d(ids))]
        exclude = liked if filter_already_liked_items else None
        ids, scores = self._rank(queries, ITEMS, N, exclude, filter_items, items, "items")
        return (ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]) if scalar else (ids, scores)

    def _rank(self, queries, side, N, exclude, filter_ids, subset, subset_name, factors=None):
        """Top ``N`` of ``side``'s ``factors`` (by default its factors) for ``queries``,
        restricted and filtered."""
        factors = self._factors(side) if factors is None else factors
        total = len(factors)
        filter_name = f"filter_{side.name}"
        if subset is not None and filter_ids is not None:
            if len(np.atleast_1d(filter_ids)):
                raise InvalidValueError(
                    f"{subset_name} and {filter_name} cannot be combined: pick one"
                )
            filter_ids = None
        exclude_all = None
        liked_last = None
        if filter_ids is not None:
            exclude_all = self.backend_.to_device(
                check_ids(filter_ids, filter_name, total, allow_scalar=False)
            )
        if subset is not None:
            subset = np.unique(check_ids(subset, subset_name, total, allow_scalar=False))
            device_subset = self.backend_.to_device(subset)
            factors = factors[device_subset]
            if exclude is not None:
                exclude = liked_last = _restrict_columns(exclude, subset)
        candidates = len(factors)
        k = min(N, candidates)
        if k == 0:
            empty = np.empty((len(queries), 0))
            return empty.astype(np.int32), empty.astype(self._dtype())
        if exclude is not None:
            exclude = self.backend_.to_device(exclude)
        with self.backend_.threads():
            ids, scores = self.backend_.topk(queries, factors, k, exclude, exclude_all)
        _check_scores(scores, ids)
        if liked_last is not None:
            ids, scores = _liked_last(ids, scores, liked_last)
        if subset is not None:
            check_int32_ids(total, filter_name[7:])
            ids = np.where(ids >= 0, subset[np.maximum(ids, 0)], -1).astype(np.int32)
        return ids, scores

    def similar_items(
        self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None
    ):
        """Items most similar to ``itemid`` by cosine similarity of their factors.

        Parameters
        ----------
        itemid : int or array_like of int
            The item(s) to find neighbours of (the item itself is included, as in implicit).
        N : int
            Number of similar items.
        recalculate_item : bool
            Compute the query items' factors from ``item_users`` instead.
        item_users : csr_matrix, optional
            One row of user interactions per query item, with ``recalculate_item``.
        filter_items : array_like of int, optional
            Items never to return.
        items : array_like of int, optional
            Only rank these items.

        Returns
        -------
        ids, scores : numpy.ndarray
            As ``recommend``: best first, cosine similarities as scores.
        """
        return self._similar(itemid, N, recalculate_item, item_users, filter_items, items, ITEMS)

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        """Users most similar to ``userid`` by cosine similarity (as ``similar_items``)."""
        return self._similar(userid, N, False, None, filter_users, users, USERS)

    def _similar(self, queryid, N, recalculate, matrix, filter_ids, subset, side):
        self._require_fit()
        N = check_positive_int(N, "N")
        scalar = is_scalar(queryid)
        if recalculate:
            queries = self._recalculate(queryid, matrix, side)
            queries = self._unit(queries, self.backend_.norms(queries))
            unit = self._unit_factors(side)
        else:
            ids = check_ids(queryid, f"{side.singular}id", len(self._factors(side)))
            unit = self._unit_factors(side)
            queries = unit[self.backend_.to_device(np.atleast_1d(ids))]
        ids, scores = self._rank(queries, side, N, None, filter_ids, subset, side.name, unit)
        return (ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]) if scalar else (ids, scores)

    def explain(self, userid, user_items, itemid, user_weights=None, N=10):
        """Explain a user's score for an item as contributions of the items they liked.

        Follows section 5 of Hu, Koren, Volinsky (2008), as implicit does.

        Parameters
        ----------
        userid : int
            The user; their row of ``user_items`` is used.
        user_items : csr_matrix
            Either the full users x items matrix, or a single row for this user.
        itemid : int
            The item whose score is explained.
        user_weights : tuple, optional
            The Cholesky factor returned by an earlier call for the same user.
        N : int
            Number of top contributions to return.

        Returns
        -------
        total_score : float
            The user's predicted score for ``itemid``.
        top_contributions : list of (itemid, score)
            The ``N`` liked items contributing most, largest first.
        user_weights : tuple
            The user's Cholesky factor, to pass to later calls.
        """
        self._require_fit()
        N = check_positive_int(N, "N")
        item_factors = self.backend_.to_host(self._factors(ITEMS))
        itemid = check_ids(itemid, "itemid", len(item_factors))
        shape = getattr(user_items, "shape", None)
        if shape is not None and len(shape) == 2 and shape[0] == len(item_factors) != shape[1]:
            raise InvalidValueError(
                f"user_items has shape {shape}, items x users: explain takes users x items, "
                "explain(userid, user_items, itemid), not item_users (implicit 0.4 style)."
            )
        user_items = check_user_items(
            user_items, "user_items", columns=len(item_factors), widen=True
        )
        row = 0 if user_items.shape[0] == 1 else check_ids(userid, "userid", user_items.shape[0])
        settings = self.solver_settings()
        row = settings.confidences(user_items[row])
        # implicit skips disliked (negative) entries; a stored zero contributes zero
        liked = row.indices[row.data >= 0]
        liked_confidence = row.data[row.data >= 0].astype(np.float64)
        if user_weights is None:
            Y = item_factors[row.indices].astype(np.float64)
            A = self.backend_.to_host(self._gram(ITEMS)).astype(np.float64)
            A += (Y.T * (np.abs(row.data) - 1)) @ Y
            lambdas = settings.row_regularization(row)
            if lambdas is not None:
                A += np.float64(lambdas[0]) * np.eye(len(A))
            user_weights = scipy.linalg.cho_factor(A)
        weighted_item = scipy.linalg.cho_solve(user_weights, item_factors[itemid])
        scores = (item_factors[liked] @ weighted_item) * liked_confidence
        with np.errstate(over="ignore"):
            total = float(scores.sum())
        if not (np.isfinite(total) and np.isfinite(scores).all()):
            raise ModelFitError(
                "the explanation's scores are NaN or infinite: the weights in user_items are "
                "too large for the factors (lower alpha or the weights)"
            )
        order = np.lexsort((liked, -scores))[:N]
        contributions = [(int(liked[i]), float(scores[i])) for i in order]
        return total, contributions, user_weights

    def rank_items(self, userid, user_items, selected_items, recalculate_user=False):
        """Deprecated in implicit: ``recommend(..., items=selected_items)`` without filtering."""
        warnings.warn(
            "rank_items is deprecated. Use recommend with the 'items' parameter instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.recommend(
            userid,
            user_items,
            recalculate_user=recalculate_user,
            items=selected_items,
            filter_already_liked_items=False,
        )

    def recommend_all(
        self,
        user_items,
        N=10,
        recalculate_user=False,
        filter_already_liked_items=True,
        filter_items=None,
        users_items_offset=0,
    ):
        """Deprecated in implicit: ids of ``recommend`` for every row of ``user_items``.

        Row ``r`` of ``user_items`` is user ``r + users_items_offset``.
        """
        warnings.warn(
            "recommend_all is deprecated. Use recommend with an array of userids instead",
            DeprecationWarning,
            stacklevel=2,
        )
        offset = check_positive_int(users_items_offset, "users_items_offset", minimum=0)
        userids = np.arange(user_items.shape[0]) + offset
        ids, _ = self.recommend(
            userids,
            user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
        )
        return ids


def _check_scores(scores, ids):
    """Refuse to answer with a score that is not finite (the places padded with -1 aside)."""
    if not np.isfinite(scores[ids >= 0]).all():
        raise ModelFitError(
            "a score is NaN or infinite: the factors are too large for "
            f"{scores.dtype.name} (refit with more regularization, or use float64)"
        )


def _liked_last(ids, scores, liked):
    """Fill the places ``topk`` left empty (id -1) with each row's liked items, score -inf.

    implicit ranks an ``items=`` list whole, the liked (filtered) ones last. Empty places
    are at the end of a row, and a row has at least as many liked candidates as empty
    places (candidates = unliked + liked >= k). Liked items come in id order.
    """
    empty = ids < 0
    counts = empty.sum(axis=1)
    if not counts.any():
        return ids, scores
    ids, scores = ids.copy(), scores.copy()
    liked = liked.tocsr()
    liked.sort_indices()
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ids[empty] = liked.indices[np.repeat(liked.indptr[:-1], counts) + offsets]
    scores[empty] = -np.inf
    return ids, scores


def _restrict_columns(matrix, subset):
    """Keep the entries of ``matrix`` whose column is in sorted ``subset``, renumbered."""
    coo = matrix.tocoo()
    position = np.clip(np.searchsorted(subset, coo.col), 0, len(subset) - 1)
    keep = subset[position] == coo.col
    return scipy.sparse.csr_matrix(
        (coo.data[keep], (coo.row[keep], position[keep])), shape=(matrix.shape[0], len(subset))
    )
