"""Approximate ``recommend`` and ``similar_items`` for a fitted model: implicit's ``implicit.ann``.

``FaissModel``, ``NMSLibModel`` and ``AnnoyModel`` wrap an ``als.AlternatingLeastSquares``
(``model``) and answer its two catalogue-wide queries from a nearest neighbour index: maximum
inner product for ``recommend``, cosine for ``similar_items``. The answers keep the exact
queries' contract: scores computed from the factors, best first, filtered and already-liked
items never returned (the index is asked for more and again; rows it cannot fill are
answered exactly), -1 / -inf padding in batches. Everything else (``similar_users``,
``items=`` lists, ``explain``, the factors and parameters) is the wrapped model's.

Indexes are built on the first approximate query and dropped whenever the factors change
through the wrapper (``fit``, ``partial_fit_*``, setting ``user_factors`` or
``item_factors``); after changing the wrapped model's factors directly, call
``invalidate_indexes``. Files (``save`` / ``load``) and pickles hold the model and the index
settings, never an index: it is rebuilt on first use. Queries are safe from many threads;
an index is built once, by the first query that needs it.
"""

from __future__ import annotations

import copy
import functools
import json
import threading

import numpy as np
import scipy.sparse

from .ann_indexes import AnnoyIndex, FaissIndex, NMSLibIndex, import_library
from .ann_search import COSINE, INNER_PRODUCT, Exclusions, FactorIndex
from .errors import InvalidValueError, ModelFileError
from .model import AlternatingLeastSquares
from .validation import check_ids, check_positive_int, check_user_items, is_scalar

__all__ = [
    "ApproximateModel",
    "FaissModel",
    "NMSLibModel",
    "AnnoyModel",
    "SETTINGS_KEY",
]

#: the ``extra`` entry of a model file that holds the index settings (JSON)
SETTINGS_KEY = "approximate_index"


def _model_factors(name):
    """A property for the wrapped model's ``name`` factors; setting them rebuilds the indexes."""

    def get(self):
        return getattr(self.model, name)

    def set_(self, value):
        setattr(self.model, name, value)
        self.invalidate_indexes()

    return property(
        get, set_, doc=f"The model's {name} (NumPy); setting them rebuilds the indexes."
    )


class ApproximateModel:
    """Approximate queries over a fitted model; the base of the three library wrappers.

    Parameters
    ----------
    model : AlternatingLeastSquares
        The model whose factors are indexed.
    approximate_similar_items : bool
        Answer ``similar_items`` from an index (False: the model answers exactly).
    approximate_recommend : bool
        Answer ``recommend`` from an index (False: the model answers exactly).
    **index_settings
        The library's settings, named in the subclass's ``INDEX_DEFAULTS``.
    """

    #: the extra (and library) this wrapper needs
    LIBRARY = None
    #: the library settings and their defaults (implicit's)
    INDEX_DEFAULTS = {}
    #: the settings a search reads: changing one retunes the built indexes, where changing
    #: any other setting drops them (rebuilt on the next query)
    QUERY_SETTINGS = ()

    def __init__(
        self, model, approximate_similar_items=True, approximate_recommend=True, **index_settings
    ):
        unknown = set(index_settings) - set(self.INDEX_DEFAULTS)
        if unknown:
            raise InvalidValueError(
                f"{type(self).__name__} has no setting {', '.join(sorted(unknown))}; "
                f"its settings are {', '.join(self.INDEX_DEFAULTS)}"
            )
        if not isinstance(model, AlternatingLeastSquares):
            raise InvalidValueError(
                f"model must be an als.AlternatingLeastSquares, not {type(model).__name__}"
            )
        import_library(self.LIBRARY)
        self.model = model
        self.approximate_similar_items = approximate_similar_items
        self.approximate_recommend = approximate_recommend
        for name, default in self.INDEX_DEFAULTS.items():
            value = index_settings.get(name)
            # None stands for the default, as in implicit's signatures (dicts copied)
            setattr(self, name, copy.deepcopy(default) if value is None else value)
        self._cache = {}
        self._build_lock = threading.Lock()

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.INDEX_DEFAULTS)
        return f"{type(self).__name__}({self.model!r}, {settings})"

    def __getattr__(self, name):
        # reached only when ordinary lookup fails: the model's parameters, factors, explain...
        if name.startswith("_") or "model" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.model, name)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name not in self.INDEX_DEFAULTS or "_cache" not in self.__dict__:
            return  # not a setting, or still being constructed
        if name not in self.QUERY_SETTINGS:
            self.invalidate_indexes()
            return
        settings = self.query_settings()
        with self._build_lock:  # an index being built is retuned once it is done
            for built in list(self._cache.values()):
                if isinstance(built, FactorIndex) and built.library_index is not None:
                    built.library_index.tune(**settings)

    def new_library_index(self):
        """An unbuilt ``als.ann_indexes`` index with this wrapper's settings."""
        raise NotImplementedError

    def query_settings(self):
        """The checked ``QUERY_SETTINGS``, as the library index's ``tune`` takes them."""
        raise NotImplementedError

    # -- the indexes ----------------------------------------------------------------------

    def invalidate_indexes(self):
        """Drop the indexes; the next approximate query builds them from the current factors.

        Needed only after changing the wrapped model's factors other than through this object.
        """
        self._cache = {}

    def _cached(self, key, build):
        cache = self._cache
        if key not in cache:
            with self._build_lock:
                if key not in cache:
                    # a build racing an invalidation lands in the dropped cache, not the new one
                    cache[key] = build()
        return cache[key]

    def _host_factors(self, name):
        """The model's factors as host arrays, read once per state (a copy on the GPU)."""

        def read():
            factors = getattr(self.model, name)
            if factors is None:
                raise InvalidValueError("the model has no factors yet: call fit (or load) first")
            return factors

        return self._cached(name, read)

    def _index(self, kind):
        def build():
            factors = self._host_factors("item_factors")
            return FactorIndex(self.new_library_index(), factors, kind)

        return self._cached(kind, build)

    # -- what changes the factors -----------------------------------------------------------

    def fit(self, user_items, show_progress=True, callback=None):
        """Fit the model (``AlternatingLeastSquares.fit``); the indexes follow on first use."""
        self.invalidate_indexes()
        self.model.fit(user_items, show_progress=show_progress, callback=callback)
        self.invalidate_indexes()
        return self

    def partial_fit_users(self, userids, user_items):
        """``AlternatingLeastSquares.partial_fit_users``, then the indexes are rebuilt."""
        self.model.partial_fit_users(userids, user_items)
        self.invalidate_indexes()

    def partial_fit_items(self, itemids, item_users):
        """``AlternatingLeastSquares.partial_fit_items``, then the indexes are rebuilt."""
        self.model.partial_fit_items(itemids, item_users)
        self.invalidate_indexes()

    user_factors = _model_factors("user_factors")
    item_factors = _model_factors("item_factors")

    # -- queries -----------------------------------------------------------------------------

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
        """``AlternatingLeastSquares.recommend``, the top items found through the index.

        Same arguments, results and errors. An ``items`` list is ranked exactly (it needs no
        index), as is everything when ``approximate_recommend`` is False.
        """
        arguments = dict(
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
        )
        if not self.approximate_recommend or items is not None:
            return self.model.recommend(userid, user_items, items=items, **arguments)
        N = check_positive_int(N, "N")
        item_factors = self._host_factors("item_factors")
        n_items = len(item_factors)
        scalar = is_scalar(userid)
        if scalar and not recalculate_user:
            liked = _one_row_of_ids(user_items, n_items) if filter_already_liked_items else _NONE
            if liked is not None:  # else the general path below checks (and refuses) it
                users = self._host_factors("user_factors")
                query = users[check_ids(userid, "userid", len(users))]
                excluded = _excluded_ids(filter_items, liked, n_items)
                exact = functools.partial(self.model.recommend, userid, user_items, **arguments)
                return self._answer_one(INNER_PRODUCT, query, N, excluded, exact)
        count = 1 if scalar else len(np.atleast_1d(userid))
        rows = getattr(user_items, "shape", (count,))[0]
        if scalar and rows > 1 and (filter_already_liked_items or recalculate_user):
            raise InvalidValueError(
                f"user_items has {rows} rows but userid is one user: pass that user's row, "
                "recommend(userid, user_items[userid]), not the whole matrix (implicit 0.4 style)."
            )
        liked = None
        if filter_already_liked_items or recalculate_user:
            liked = check_user_items(
                user_items, "user_items", rows=count, columns=n_items, widen=True
            )
        if recalculate_user:
            queries = np.atleast_2d(self.model.recalculate_user(userid, liked))
        else:
            users = self._host_factors("user_factors")
            queries = users[np.atleast_1d(check_ids(userid, "userid", len(users)))]
        filter_ids = _checked_filter(filter_items, "filter_items", n_items)
        exclusions = Exclusions(n_items, filter_ids, liked if filter_already_liked_items else None)

        def exact(short):
            ids = np.atleast_1d(userid)[short]
            return self.model.recommend(ids, None if liked is None else liked[short], **arguments)

        answer = self._answer(INNER_PRODUCT, queries, N, exclusions, exact)
        return _unbatched(answer) if scalar else answer

    def similar_items(
        self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None
    ):
        """``AlternatingLeastSquares.similar_items``, the neighbours found through the index.

        Same arguments, results and errors. An ``items`` list is ranked exactly, as is
        everything when ``approximate_similar_items`` is False.
        """
        arguments = dict(N=N, recalculate_item=recalculate_item, filter_items=filter_items)
        if not self.approximate_similar_items or items is not None:
            return self.model.similar_items(itemid, item_users=item_users, items=items, **arguments)
        N = check_positive_int(N, "N")
        item_factors = self._host_factors("item_factors")
        n_items = len(item_factors)
        scalar = is_scalar(itemid)
        if scalar and not recalculate_item:
            query = item_factors[check_ids(itemid, "itemid", n_items)]
            excluded = _excluded_ids(filter_items, _NONE, n_items)
            exact = functools.partial(self.model.similar_items, itemid, **arguments)
            return self._answer_one(COSINE, query, N, excluded, exact)
        if recalculate_item:
            queries = np.atleast_2d(self.model.recalculate_item(itemid, item_users))
            item_users = scipy.sparse.csr_matrix(item_users)  # checked by recalculate_item
        else:
            queries = item_factors[np.atleast_1d(check_ids(itemid, "itemid", n_items))]
        exclusions = Exclusions(n_items, _checked_filter(filter_items, "filter_items", n_items))

        def exact(short):
            ids = np.atleast_1d(itemid)[short]
            matrix = item_users[short] if recalculate_item else None
            return self.model.similar_items(ids, item_users=matrix, **arguments)

        answer = self._answer(COSINE, queries, N, exclusions, exact)
        return _unbatched(answer) if scalar else answer

    def _answer_one(self, kind, query, N, excluded, exact):
        """One query's top ``N`` from the index, unpadded; ``exact()`` where it falls short."""
        index = self._index(kind)
        answer = index.top_k_one(query, min(N, len(index.factors)), excluded)
        return exact() if answer is None else answer

    def _answer(self, kind, queries, N, exclusions, exact):
        """The index's top ``N`` for ``queries``; rows it cannot fill from ``exact(rows)``."""
        index = self._index(kind)
        ids, scores, short = index.top_k(queries, min(N, exclusions.n_items), exclusions)
        if short.any():
            exact_ids, exact_scores = exact(np.flatnonzero(short))
            ids[short], scores[short] = exact_ids, exact_scores
        return ids, scores

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        """``AlternatingLeastSquares.similar_users``, answered exactly by the model."""
        return self.model.similar_users(userid, N=N, filter_users=filter_users, users=users)

    # -- copies, pickles and files ------------------------------------------------------------

    def settings(self):
        """The index settings: what ``save`` stores beside the model, and pickles keep."""
        settings = {
            "library": self.LIBRARY,
            "approximate_similar_items": bool(self.approximate_similar_items),
            "approximate_recommend": bool(self.approximate_recommend),
        }
        settings.update({name: getattr(self, name) for name in self.INDEX_DEFAULTS})
        return settings

    @classmethod
    def around(cls, model, settings):
        """An instance of this class over ``model`` with ``settings`` (as ``settings()``)."""
        settings = dict(settings)
        library = settings.pop("library", cls.LIBRARY)
        if library != cls.LIBRARY:
            raise ModelFileError(
                f"these settings are for a {library} index, not {cls.LIBRARY}: use the "
                f"{library} class"
            )
        wrapper = cls.__new__(cls)
        ApproximateModel.__init__(wrapper, model, **settings)
        return wrapper

    def __getstate__(self):
        return {"model": self.model, "settings": self.settings()}

    def __setstate__(self, state):
        settings = dict(state["settings"])
        settings.pop("library")
        ApproximateModel.__init__(self, state["model"], **settings)

    def to_cpu(self):
        """A copy over ``model.to_cpu()``, with the same index settings."""
        return self.around(self.model.to_cpu(), self.settings())

    def to_gpu(self):
        """A copy over ``model.to_gpu()``, with the same index settings."""
        return self.around(self.model.to_gpu(), self.settings())

    def save(self, fileobj_or_path, extra=None):
        """``AlternatingLeastSquares.save``, with the index settings in the file's extras.

        The file is an ordinary model file: ``AlternatingLeastSquares.load`` reads the
        model from it, and ``load`` of this class the model and the settings.
        """
        if extra and SETTINGS_KEY in extra:
            raise InvalidValueError(f"extra[{SETTINGS_KEY!r}] is where the index settings go")
        extra = {**(extra or {}), SETTINGS_KEY: json.dumps(self.settings())}
        self.model.save(fileobj_or_path, extra=extra)

    @classmethod
    def load(cls, fileobj_or_path, backend=None, return_extra=False):
        """Load a file written by ``save`` (or any model file: default index settings).

        Arguments as ``AlternatingLeastSquares.load``; the index is built on first use.
        """
        model, extra = AlternatingLeastSquares.load(
            fileobj_or_path, backend=backend, return_extra=True
        )
        settings = {"library": cls.LIBRARY}
        if SETTINGS_KEY in extra:
            try:
                settings = json.loads(str(extra.pop(SETTINGS_KEY)))
            except ValueError as exc:
                raise ModelFileError(f"{fileobj_or_path} is corrupted: {exc}") from exc
        wrapper = cls.around(model, settings)
        return (wrapper, extra) if return_extra else wrapper


class FaissModel(ApproximateModel):
    """Faiss inverted-file indexes (``IndexIVFFlat``) over a fitted model.

    Parameters
    ----------
    model : AlternatingLeastSquares
        The fitted (or to be fitted) model.
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    nlist : int
        Cells the items are clustered into (at most one per item).
    nprobe : int
        Cells searched per query: more is slower and finds more of the true top items.
    use_gpu : bool or None
        Search on the GPU. Needs a Faiss built for GPUs; otherwise the index stays on the CPU.
        None (default): the GPU when Faiss sees one.
    """

    LIBRARY = "faiss"
    INDEX_DEFAULTS = {"nlist": 400, "nprobe": 20, "use_gpu": None}

    def __init__(
        self,
        model,
        approximate_similar_items=True,
        approximate_recommend=True,
        nlist=400,
        nprobe=20,
        use_gpu=None,
    ):
        super().__init__(
            model,
            approximate_similar_items,
            approximate_recommend,
            nlist=nlist,
            nprobe=nprobe,
            use_gpu=use_gpu,
        )

    QUERY_SETTINGS = ("nprobe",)

    def new_library_index(self):
        nlist = check_positive_int(self.nlist, "nlist")
        faiss = import_library("faiss")
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        use_gpu = self.use_gpu is not False and gpus > 0
        return FaissIndex(nlist, **self.query_settings(), use_gpu=use_gpu)

    def query_settings(self):
        return {"nprobe": check_positive_int(self.nprobe, "nprobe")}


class NMSLibModel(ApproximateModel):
    """NMSLib indexes (HNSW by default) over a fitted model.

    Parameters
    ----------
    model : AlternatingLeastSquares
        The fitted (or to be fitted) model.
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    method : str
        The NMSLib method.
    index_params : dict, optional
        For ``createIndex``; default ``{"M": 16, "post": 0, "efConstruction": 400}``.
    query_params : dict, optional
        For ``setQueryTimeParams``; default ``{"ef": 90}``.
    """

    LIBRARY = "nmslib"
    INDEX_DEFAULTS = {
        "method": "hnsw",
        "index_params": {"M": 16, "post": 0, "efConstruction": 400},
        "query_params": {"ef": 90},
    }

    def __init__(
        self,
        model,
        approximate_similar_items=True,
        approximate_recommend=True,
        method="hnsw",
        index_params=None,
        query_params=None,
    ):
        super().__init__(
            model,
            approximate_similar_items,
            approximate_recommend,
            method=method,
            index_params=index_params,
            query_params=query_params,
        )

    QUERY_SETTINGS = ("query_params",)

    def new_library_index(self):
        return NMSLibIndex(self.method, self.index_params, **self.query_settings())

    def query_settings(self):
        return {"query_params": self.query_params}


class AnnoyModel(ApproximateModel):
    """Annoy forests over a fitted model.

    Parameters
    ----------
    model : AlternatingLeastSquares
        The fitted (or to be fitted) model.
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    n_trees : int
        Trees per index: more find more of the true top items, at a larger index.
    search_k : int
        Nodes inspected per query; -1 (default) means ``n_trees * N``.
    """

    LIBRARY = "annoy"
    INDEX_DEFAULTS = {"n_trees": 50, "search_k": -1}

    def __init__(
        self,
        model,
        approximate_similar_items=True,
        approximate_recommend=True,
        n_trees=50,
        search_k=-1,
    ):
        super().__init__(
            model,
            approximate_similar_items,
            approximate_recommend,
            n_trees=n_trees,
            search_k=search_k,
        )

    QUERY_SETTINGS = ("search_k",)

    def new_library_index(self):
        return AnnoyIndex(check_positive_int(self.n_trees, "n_trees"), **self.query_settings())

    def query_settings(self):
        return {"search_k": check_positive_int(self.search_k, "search_k", minimum=-1)}


#: no ids: the excluded items of a query that excludes nothing
_NONE = np.empty(0, dtype=np.int64)

#: the largest float32: heavier weights overflow when the model reads them
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _one_row_of_ids(user_items, columns):
    """The sorted column ids of a one-row CSR matrix that needs no conversion, else None.

    A shortcut for one query: a CSR row in canonical form (sorted distinct indices in range,
    finite weights that fit float32, at most ``columns`` columns) is exactly what
    ``check_user_items`` would return, so its indices are the liked items. Anything else
    gives None, and the caller goes the checked way (converting, warning or refusing).
    """
    if not scipy.sparse.issparse(user_items) or user_items.format != "csr":
        return None
    rows, width = user_items.shape
    indices, indptr, data = user_items.indices, user_items.indptr, user_items.data
    if rows != 1 or width > columns or data.dtype.kind not in "biuf":
        return None
    if len(indptr) != 2 or indptr[0] != 0 or not indptr[1] == len(indices) == len(data):
        return None
    if len(indices) and not (
        user_items.has_canonical_format and indices[0] >= 0 and indices[-1] < width
    ):
        return None
    if data.dtype.kind == "f" and len(data) and not np.abs(data).max() <= _FLOAT32_MAX:
        return None  # NaN, infinite or overflowing weights: refused the checked way
    return indices


def _excluded_ids(filter_items, liked, n_items):
    """Sorted distinct ids one query excludes: ``filter_items`` (checked) and ``liked``."""
    if filter_items is None:
        return liked.astype(np.int64, copy=False)  # the one id type the ranking compiles for
    filter_ids = _checked_filter(filter_items, "filter_items", n_items)
    return np.union1d(filter_ids, liked) if len(liked) else np.unique(filter_ids)


def _checked_filter(filter_ids, name, upper):
    return None if filter_ids is None else check_ids(filter_ids, name, upper, allow_scalar=False)


def _unbatched(answer):
    """One query's row of a batch answer, without the padding."""
    ids, scores = answer
    return ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]
