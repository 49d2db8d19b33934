"""The approximate nearest neighbour libraries behind ``als.ann``: Faiss, NMSLib and Annoy.

Each adapter builds one kind of index, a *cosine* index over rows of equal length, and
answers "the ``counts[i]`` rows nearest query ``i``" with row numbers, -1 where it found
fewer. Both of the model's questions reduce to that: ``similar_items`` asks it of unit item
factors, and ``recommend`` (maximum inner product) asks it of the item factors after the
norm augmentation of Bachrach et al. (RecSys 2014), which gives every item the same length
(``augment_for_inner_product``). Scores are never read from an index: ``als.ann_search``
computes them from the factors, as the exact queries do.

The libraries are optional (the ``faiss``, ``nmslib`` and ``annoy`` extras, or ``ann`` for all
three) and imported on first use; a missing one raises ``IndexUnavailable`` (an
``ImportError``) naming the extra.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np

from .errors import IndexUnavailable

__all__ = [
    "DISTRIBUTION",
    "import_library",
    "augment_for_inner_product",
    "unit_rows",
    "FaissIndex",
    "NMSLibIndex",
    "AnnoyIndex",
]

#: the distribution whose extras install the libraries
DISTRIBUTION = "als-recommender"

#: the module each adapter imports, by extra name
_MODULES = {"faiss": "faiss", "nmslib": "nmslib", "annoy": "annoy"}

#: annoy's trees are random; a fixed seed builds the same index from the same factors
ANNOY_SEED = 42


def import_library(extra):
    """Import the library of ``extra`` ("faiss", "nmslib" or "annoy"), or say how to install it.

    Raises
    ------
    IndexUnavailable
        One line naming the extra that installs the library (an ``ImportError``).
    """
    module = _MODULES[extra]
    try:
        library = importlib.import_module(module)
    except ImportError as exc:
        raise IndexUnavailable(
            f"{module} is not installed: pip install '{DISTRIBUTION}[{extra}]' "
            f"(or '{DISTRIBUTION}[ann]' for Faiss, NMSLib and Annoy)",
            name=module,
        ) from exc
    if extra == "nmslib":
        # nmslib logs every index build at INFO level through the root handlers
        logging.getLogger("nmslib").setLevel(logging.WARNING)
    return library


def unit_rows(factors):
    """``factors`` scaled to unit length as float32, zero rows left zero.

    A zero norm counts as 1e-10, as the backends' ``norms`` do, so a zero row stays zero and
    is similar to nothing (cosine 0).
    """
    factors = np.asarray(factors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", factors, factors))
    return factors / np.where(norms == 0, 1e-10, norms)[:, None]


def augment_for_inner_product(factors):
    """Rows of equal length whose cosine with ``(query, 0)`` ranks as ``query . factor``.

    Each row ``y`` becomes ``(y, sqrt(M^2 - |y|^2)) / M`` with ``M`` the largest norm: every
    row then has length 1 and its dot product with ``(q, 0)`` is ``q . y / M``, so the
    nearest rows by cosine (or by Euclidean distance) are the largest inner products.

    Returns
    -------
    numpy.ndarray
        float32, shape (n, factors + 1).
    """
    factors = np.asarray(factors)
    squares = np.einsum("ij,ij->i", factors, factors, dtype=np.float64)
    largest = float(np.sqrt(squares.max())) if len(squares) else 0.0
    # an all-zero catalogue: every item scores 0, any unit length will do
    largest = largest or 1.0
    # built in float32 directly: a million rows of float64 would double the memory and time
    rows = np.empty((len(factors), factors.shape[1] + 1), dtype=np.float32)
    np.divide(factors, largest, out=rows[:, :-1], casting="unsafe")
    rows[:, -1] = np.sqrt(np.maximum(largest**2 - squares, 0.0)) / largest
    return rows


class FaissIndex:
    """An inverted-file index (``IndexIVFFlat``) on Euclidean distances of rows of one length.

    Rows of equal length are nearest by distance exactly when they are nearest by cosine;
    clustering them by distance (k-means) suits the augmented rows better than clustering
    by inner product does (recall@10 0.93 against 0.86 at the same ``nprobe``, on factors
    of a power-law matrix).

    Parameters
    ----------
    nlist : int
        Cells the rows are clustered into (at most one per row).
    nprobe : int
        Cells visited per query (at most ``nlist``).
    use_gpu : bool
        Search on the GPU; needs a Faiss built with GPU support (``faiss-gpu``).
    """

    #: the most results the GPU index returns per query; larger queries go the exact way
    GPU_MAX_K = 1024
    #: Euclidean distances rank by cosine only between rows of one length: queries too
    needs_unit_queries = True

    def __init__(self, nlist, nprobe, use_gpu=False):
        self.nlist = nlist
        self.nprobe = nprobe
        self.use_gpu = use_gpu
        self.max_k = self.GPU_MAX_K if use_gpu else None
        self.cells = None  # nlist, or fewer for a catalogue of fewer rows
        self.index = None

    def build(self, rows, unit_queries=False):
        """Index ``rows`` (float32, all of one length); returns ``self``.

        Parameters
        ----------
        rows : numpy.ndarray
            The rows to index.
        unit_queries : bool
            The queries will be unit rows too (``similar_items``), not ``(user, 0)``.
        """
        faiss = import_library("faiss")
        dimensions = rows.shape[1]
        nlist = self.cells = max(1, min(self.nlist, len(rows)))
        quantizer = faiss.IndexFlatL2(dimensions)
        index = faiss.IndexIVFFlat(quantizer, dimensions, nlist, faiss.METRIC_L2)
        # a small catalogue clusters fine with few rows per cell: no warning about it
        index.cp.min_points_per_centroid = 1
        # unit queries among unit rows: cells on the sphere find more of the true neighbours
        # (lastfm-2k similar_items recall@10 at nprobe 20: 0.956 against 0.951 at 64
        # factors, 0.968 against 0.959 at 128); the augmented rows of inner-product search,
        # asked with queries of any length, lose by it (0.867 against 0.887)
        index.cp.spherical = unit_queries
        index.train(rows)
        index.add(rows)
        if self.use_gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        # the IVF index refers to its quantizer without owning it: keep both alive together
        self.index = (index, quantizer)
        self.tune(self.nprobe)
        return self

    def tune(self, nprobe):
        """Search ``nprobe`` cells per query from now on."""
        self.nprobe = nprobe
        if self.index is not None:
            self.index[0].nprobe = max(1, min(nprobe, self.cells))

    def search(self, queries, counts):
        """Row numbers of each query's ``counts[query]`` nearest rows (more where others
        ask for more; the caller keeps its own), -1 where there are fewer (or fewer
        columns)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index[0].search(queries, int(max(counts)))[1]


class NMSLibIndex:
    """An NMSLib index (HNSW by default) in the ``cosinesimil`` space.

    Parameters
    ----------
    method : str
        The NMSLib method.
    index_params, query_params : dict
        Passed to ``createIndex`` and ``setQueryTimeParams``.
    """

    max_k = None
    #: the cosine of ``cosinesimil`` ignores the query's length
    needs_unit_queries = False

    def __init__(self, method, index_params, query_params):
        self.method = method
        self.index_params = index_params
        self.query_params = query_params
        self.index = None

    def build(self, rows, unit_queries=False):
        """As ``FaissIndex.build``; the kind of query changes nothing here."""
        nmslib = import_library("nmslib")
        index = nmslib.init(method=self.method, space="cosinesimil")
        index.addDataPointBatch(rows)
        index.createIndex(self.index_params, print_progress=False)
        self.index = index
        self.tune(self.query_params)
        return self

    def tune(self, query_params):
        """Search with ``query_params`` (``setQueryTimeParams``) from now on."""
        self.query_params = query_params
        if self.index is not None:
            self.index.setQueryTimeParams(query_params)

    def search(self, queries, counts):
        """As ``FaissIndex.search``."""
        k = int(max(counts))
        found = np.full((len(queries), k), -1, dtype=np.int64)
        queries = np.asarray(queries, dtype=np.float32)
        # a thread pool per call is dear for one query (31 us against 135 on 17,632 rows)
        threads = 1 if len(queries) == 1 else 0
        results = self.index.knnQueryBatch(queries, k=k, num_threads=threads)
        for row, (ids, _) in enumerate(results):
            found[row, : len(ids)] = ids
        return found


class AnnoyIndex:
    """An Annoy forest in the ``angular`` metric.

    Parameters
    ----------
    n_trees : int
        Trees built; more give better recall and a larger index.
    search_k : int
        Nodes inspected per query; -1 means ``n_trees * k``.
    """

    max_k = None
    #: the ``angular`` distance and the trees' sides ignore the query's length
    needs_unit_queries = False

    def __init__(self, n_trees, search_k):
        self.n_trees = n_trees
        self.search_k = search_k
        self.index = None

    def tune(self, search_k):
        """Inspect ``search_k`` nodes per query from now on."""
        self.search_k = search_k

    def build(self, rows, unit_queries=False):
        """As ``FaissIndex.build``; the kind of query changes nothing here."""
        annoy = import_library("annoy")
        index = annoy.AnnoyIndex(rows.shape[1], "angular")
        index.set_seed(ANNOY_SEED)
        for number, row in enumerate(rows):
            index.add_item(number, row)
        index.build(self.n_trees)
        self.index = index
        return self

    def search(self, queries, counts):
        """As ``FaissIndex.search``; each query asks for its own count, so that its
        ``search_k`` (``n_trees`` times the count) and answer do not depend on the others."""
        if len(queries) == 1:  # one query: its answer as it comes (fewer columns allowed)
            ids = self.index.get_nns_by_vector(queries[0], int(counts[0]), search_k=self.search_k)
            return np.array(ids, dtype=np.int64).reshape(1, -1)
        found = np.full((len(queries), int(max(counts))), -1, dtype=np.int64)
        for row, query in enumerate(np.asarray(queries, dtype=np.float32)):
            ids = self.index.get_nns_by_vector(query, int(counts[row]), search_k=self.search_k)
            found[row, : len(ids)] = ids
        return found
