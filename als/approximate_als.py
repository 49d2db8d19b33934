"""Models that answer queries from an approximate index: implicit's ``implicit.approximate_als``.

``FaissAlternatingLeastSquares``, ``NMSLibAlternatingLeastSquares`` and
``AnnoyAlternatingLeastSquares`` take implicit's arguments: every
``AlternatingLeastSquares`` parameter (positional ones too) plus the index's, with implicit's
defaults. Each is the matching ``als.ann`` wrapper around a new ``AlternatingLeastSquares``:
real classes (``isinstance`` and ``load`` work) where implicit has factory functions.

Examples
--------
>>> import numpy as np, scipy.sparse as sp
>>> from als.approximate_als import FaissAlternatingLeastSquares
>>> user_items = sp.csr_matrix(np.kron(np.eye(2), np.ones((3, 3))) - np.eye(6), dtype=np.float32)
>>> model = FaissAlternatingLeastSquares(factors=4, nlist=1, random_state=0, backend="numpy")
>>> model = model.fit(user_items, show_progress=False)
>>> ids, scores = model.recommend(0, user_items[0], N=1)
>>> ids.tolist()
[0]
"""

from __future__ import annotations

from .ann import AnnoyModel, FaissModel, NMSLibModel
from .model import AlternatingLeastSquares

__all__ = [
    "FaissAlternatingLeastSquares",
    "NMSLibAlternatingLeastSquares",
    "AnnoyAlternatingLeastSquares",
]


class FaissAlternatingLeastSquares(FaissModel):
    """``AlternatingLeastSquares`` answering queries from Faiss indexes.

    Parameters
    ----------
    *args, **kwargs
        ``AlternatingLeastSquares``'s parameters.
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    nlist, nprobe : int
        The Faiss inverted-file settings (see ``als.ann.FaissModel``).
    use_gpu : bool or None
        For the model and the index (None: the GPU where there is one).
    """

    def __init__(
        self,
        *args,
        approximate_similar_items=True,
        approximate_recommend=True,
        nlist=400,
        nprobe=20,
        use_gpu=None,
        **kwargs,
    ):
        model = AlternatingLeastSquares(*args, use_gpu=use_gpu, **kwargs)
        super().__init__(
            model,
            approximate_similar_items,
            approximate_recommend,
            nlist=nlist,
            nprobe=nprobe,
            use_gpu=use_gpu,
        )


class NMSLibAlternatingLeastSquares(NMSLibModel):
    """``AlternatingLeastSquares`` answering queries from NMSLib indexes.

    Parameters
    ----------
    *args, **kwargs
        ``AlternatingLeastSquares``'s parameters (``use_gpu`` among them).
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    method, index_params, query_params
        The NMSLib settings (see ``als.ann.NMSLibModel``).
    """

    def __init__(
        self,
        *args,
        approximate_similar_items=True,
        approximate_recommend=True,
        method="hnsw",
        index_params=None,
        query_params=None,
        **kwargs,
    ):
        super().__init__(
            AlternatingLeastSquares(*args, **kwargs),
            approximate_similar_items,
            approximate_recommend,
            method=method,
            index_params=index_params,
            query_params=query_params,
        )


class AnnoyAlternatingLeastSquares(AnnoyModel):
    """``AlternatingLeastSquares`` answering queries from Annoy indexes.

    Parameters
    ----------
    *args, **kwargs
        ``AlternatingLeastSquares``'s parameters (``use_gpu`` among them).
    approximate_similar_items, approximate_recommend : bool
        Which queries go through an index.
    n_trees, search_k : int
        The Annoy settings (see ``als.ann.AnnoyModel``).
    """

    def __init__(
        self,
        *args,
        approximate_similar_items=True,
        approximate_recommend=True,
        n_trees=50,
        search_k=-1,
        **kwargs,
    ):
        super().__init__(
            AlternatingLeastSquares(*args, **kwargs),
            approximate_similar_items,
            approximate_recommend,
            n_trees=n_trees,
            search_k=search_k,
        )
