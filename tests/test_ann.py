"""``als.ann``: approximate answers checked against the model's exact ones (and implicit's).

One model fitted with a fixed seed on a 2,000 x 1,000 power-law matrix. An exhaustive index
(Faiss with one cell) must give the exact queries' scores; the default-ish settings must find
most of the exact top 10; no setting may ever return a filtered or liked item, whatever the
index returns, and rows the index cannot fill are answered exactly.
"""

from __future__ import annotations

import inspect
import sys
import threading

import numpy as np
import pytest
import scipy.sparse

from als import AlternatingLeastSquares
from als.ann import AnnoyModel, FaissModel, NMSLibModel
from als.ann_indexes import augment_for_inner_product
from als.ann_search import Exclusions
from als.errors import IndexUnavailable, ParameterWarning

#: settings that find most of the true neighbours on this small catalogue (the factors of a
#: random power-law matrix have little structure: a hard case for an index)
APPROXIMATE = {
    "faiss": (FaissModel, dict(nlist=32, nprobe=16)),
    "nmslib": (NMSLibModel, dict(query_params={"ef": 400})),
    "annoy": (AnnoyModel, dict()),
}


@pytest.fixture(scope="module")
def fitted(medium_matrix):
    model = AlternatingLeastSquares(factors=32, iterations=5, random_state=7, backend="cpu")
    return model.fit(medium_matrix, show_progress=False), medium_matrix


@pytest.fixture(params=sorted(APPROXIMATE))
def wrapped(request, fitted):
    pytest.importorskip(request.param)
    model, user_items = fitted
    cls, settings = APPROXIMATE[request.param]
    return cls(model, **settings), user_items


def recall(found, exact):
    return np.mean(
        [
            len(set(a) & set(b) - {-1}) / len(set(b) - {-1})
            for a, b in zip(found, exact, strict=True)
        ]
    )


def test_an_exhaustive_index_gives_the_exact_scores(fitted):
    pytest.importorskip("faiss")
    model, user_items = fitted
    exhaustive = FaissModel(model, nlist=1, nprobe=1)
    users = np.arange(0, 2000, 7)
    ids, scores = exhaustive.recommend(users, user_items[users], N=10)
    exact_ids, exact_scores = model.recommend(users, user_items[users], N=10)
    # float32 products summed in another order (BLAS against a row-wise sum); ids may differ
    # only among tied scores, so the scores are compared rank by rank
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)
    assert recall(ids, exact_ids) > 0.99
    items = np.arange(0, 1000, 11)
    ids, scores = exhaustive.similar_items(items, N=10)
    exact_ids, exact_scores = model.similar_items(items, N=10)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)


def test_recall_against_the_exact_top_10(wrapped):
    model, user_items = wrapped
    users = np.arange(0, 2000, 5)
    ids, _ = model.recommend(users, user_items[users], N=10)
    exact_ids, _ = model.model.recommend(users, user_items[users], N=10)
    # measured with these seeds: Faiss 0.947, NMSLib 0.928, Annoy 1.0
    assert recall(ids, exact_ids) >= 0.9
    items = np.arange(0, 1000, 3)
    ids, _ = model.similar_items(items, N=10)
    exact_ids, _ = model.model.similar_items(items, N=10)
    # measured: Faiss 0.953, NMSLib 1.0, Annoy 0.953
    assert recall(ids, exact_ids) >= 0.9


def test_scores_are_the_models_and_ranked(wrapped):
    model, user_items = wrapped
    users = np.arange(0, 2000, 13)
    ids, scores = model.recommend(users, user_items[users], N=20)
    expected = np.einsum("ij,ikj->ik", model.user_factors[users], model.item_factors[ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_filtered_and_liked_items_are_never_returned(wrapped):
    model, user_items = wrapped
    users = np.arange(0, 2000, 9)
    # filter what the index finds first for every user: it must look further
    exact_top, _ = model.model.recommend(users, user_items[users], N=30)
    banned = np.unique(exact_top[:, :5])
    ids, scores = model.recommend(users, user_items[users], N=10, filter_items=banned)
    assert ids.shape == (len(users), 10) and (ids >= 0).all() and np.isfinite(scores).all()
    assert not np.isin(ids, banned).any()
    for row, user in enumerate(users):
        assert not set(ids[row]) & set(user_items[user].indices)
        single_ids, _ = model.recommend(user, user_items[user], N=10, filter_items=banned)
        assert not set(single_ids) & (set(user_items[user].indices) | set(banned))
    ids, _ = model.similar_items(np.arange(50), N=10, filter_items=banned)
    assert not np.isin(ids, banned).any() and (ids >= 0).all()


def test_one_query_is_its_row_of_the_batch(wrapped):
    model, user_items = wrapped
    users = np.arange(0, 2000, 37)
    banned = np.array([3, 17, 17, 400])  # repeats and any order are allowed
    ids, scores = model.recommend(users, user_items[users], N=10, filter_items=banned)
    for row, user in enumerate(users):
        one_ids, one_scores = model.recommend(user, user_items[user], N=10, filter_items=banned)
        np.testing.assert_array_equal(one_ids, ids[row])
        np.testing.assert_array_equal(one_scores, scores[row])
    items = np.arange(0, 1000, 41)
    ids, scores = model.similar_items(items, N=10, filter_items=banned)
    for row, item in enumerate(items):
        one_ids, one_scores = model.similar_items(item, N=10, filter_items=banned)
        np.testing.assert_array_equal(one_ids, ids[row])
        np.testing.assert_array_equal(one_scores, scores[row])


def test_one_row_that_needs_checking_is_checked(fitted):
    pytest.importorskip("faiss")
    model, user_items = fitted
    wrapper = FaissModel(model, nlist=8, nprobe=8)
    row = user_items[4]
    expected = wrapper.recommend(4, row, N=10)
    # duplicate entries: summed with a warning, then the same liked items
    doubled = scipy.sparse.csr_matrix(
        (np.r_[row.data, row.data[:1]], np.r_[row.indices, row.indices[:1]], [0, row.nnz + 1]),
        shape=row.shape,
    )
    with pytest.warns(ParameterWarning, match="duplicate"):
        np.testing.assert_array_equal(wrapper.recommend(4, doubled, N=10)[0], expected[0])
    with pytest.warns(ParameterWarning, match="CSR"):
        np.testing.assert_array_equal(wrapper.recommend(4, row.tocoo(), N=10)[0], expected[0])
    broken = row.copy()
    broken.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        wrapper.recommend(4, broken)
    with pytest.raises(ValueError, match="overflow"):
        wrapper.recommend(4, row.astype(np.float64) * 1e300)
    with pytest.raises(ValueError, match="columns"):
        wrapper.recommend(4, scipy.sparse.csr_matrix((1, 1001)))


def test_rows_the_index_cannot_fill_are_padded_as_the_exact_answers(wrapped):
    model, user_items = wrapped
    n_items = user_items.shape[1]
    # user 0 likes all but three items; user 1 nothing
    likes = scipy.sparse.csr_matrix(
        (np.ones(n_items - 3), (np.zeros(n_items - 3, dtype=int), np.arange(3, n_items))),
        shape=(2, n_items),
    )
    ids, scores = model.recommend([0, 1], likes, N=10)
    exact_ids, exact_scores = model.model.recommend([0, 1], likes, N=10)
    assert sorted(ids[0][:3]) == [0, 1, 2] and (ids[0][3:] == -1).all()
    assert np.isneginf(scores[0][3:]).all() and (ids[1] >= 0).all()
    np.testing.assert_array_equal(ids[0] == -1, exact_ids[0] == -1)
    single_ids, single_scores = model.recommend(0, likes[0], N=10)
    assert sorted(single_ids) == [0, 1, 2] and np.isfinite(single_scores).all()
    # more than the catalogue: every item, as the exact path answers
    ids, _ = model.similar_items(5, N=5000)
    assert sorted(ids) == list(range(n_items))


def test_items_without_factors_come_from_the_exact_path(fitted):
    pytest.importorskip("annoy")
    model, user_items = fitted
    items = model.item_factors.copy()
    items[:10] = 0  # never indexed for cosine: similar to nothing, reachable only exactly
    copy = AlternatingLeastSquares(factors=32, backend="cpu")
    copy.user_factors, copy.item_factors = model.user_factors, items
    ids, scores = AnnoyModel(copy).similar_items(20, N=1000)
    exact_ids, exact_scores = copy.similar_items(20, N=1000)
    assert sorted(ids) == list(range(1000))
    assert (scores[np.isin(ids, np.arange(10))] == 0).all()
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)
    # no item has factors: no cosine index at all, every answer exact
    copy.item_factors = np.zeros_like(items)
    for wrapper in (AnnoyModel(copy), FaissModel(copy, nlist=4)):
        np.testing.assert_array_equal(
            wrapper.similar_items(3, N=5)[0], copy.similar_items(3, N=5)[0]
        )
        np.testing.assert_array_equal(
            wrapper.similar_items([3], N=5)[0], copy.similar_items([3], N=5)[0]
        )


def test_queries_from_many_threads(wrapped):
    model, user_items = wrapped
    model.invalidate_indexes()
    users = np.arange(0, 2000, 3)
    answers = {}
    failures = []

    def worker(offset):
        try:
            for user in users[offset::8]:
                answers[user] = model.recommend(user, user_items[user], N=10)[0]
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    built = model._cache["inner_product"]
    for user in users:
        np.testing.assert_array_equal(answers[user], model.recommend(user, user_items[user])[0])
    assert model._cache["inner_product"] is built  # built once, by the first query


def test_the_index_is_built_once_under_concurrent_first_queries(fitted):
    pytest.importorskip("faiss")
    model, user_items = fitted
    builds = []

    class Counting(FaissModel):
        def new_library_index(self):
            builds.append(1)
            return super().new_library_index()

    wrapper = Counting(model, nlist=8)
    barrier = threading.Barrier(6)

    def first_query():
        barrier.wait()
        wrapper.recommend(1, user_items[1])

    threads = [threading.Thread(target=first_query) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1


def test_query_settings_apply_at_once_and_index_settings_rebuild(fitted):
    pytest.importorskip("faiss")
    model, user_items = fitted
    users = np.arange(0, 2000, 11)
    exact_ids, _ = model.recommend(users, user_items[users], N=10)
    wrapper = FaissModel(model, nlist=16, nprobe=1)
    narrow = recall(wrapper.recommend(users, user_items[users], N=10)[0], exact_ids)
    built = wrapper._cache["inner_product"]
    wrapper.nprobe = 16  # every cell: the exact top 10, from the same index
    assert recall(wrapper.recommend(users, user_items[users], N=10)[0], exact_ids) > 0.99 > narrow
    assert wrapper._cache["inner_product"] is built
    wrapper.nlist = 4  # a build setting: the next query builds again
    wrapper.recommend(users[:1], user_items[users[:1]])
    assert wrapper._cache["inner_product"] is not built
    assert wrapper._cache["inner_product"].library_index.cells == 4
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        wrapper.nprobe = 0


def test_a_missing_library_names_its_extra(fitted, monkeypatch):
    model, _ = fitted
    for cls, library in ((FaissModel, "faiss"), (NMSLibModel, "nmslib"), (AnnoyModel, "annoy")):
        monkeypatch.setitem(sys.modules, library, None)  # what an absent package looks like
        advice = rf"pip install 'als-recommender\[{library}\]'"
        with pytest.raises(ImportError, match=advice) as got:
            cls(model)
        assert isinstance(got.value, IndexUnavailable)  # a UserError: the CLI says it in one line


def test_bad_settings_are_refused(fitted):
    pytest.importorskip("faiss")
    model, user_items = fitted
    with pytest.raises(ValueError, match="nlist must be >= 1"):
        FaissModel(model, nlist=0).recommend(0, user_items[0])
    with pytest.raises(ValueError, match="has no setting n_trees"):
        FaissModel.around(model, {"n_trees": 3})
    with pytest.raises(ValueError, match="must be an als.AlternatingLeastSquares"):
        FaissModel(object())
    with pytest.raises(ValueError, match="no factors yet"):
        FaissModel(AlternatingLeastSquares()).recommend(0, user_items[0])
    with pytest.raises(IndexError):
        FaissModel(model).recommend(0, user_items[0], filter_items=[5000])


def test_implicit_wrappers_agree_on_the_same_factors(fitted):
    """implicit's own FaissModel with one cell (exhaustive) on our factors: the same answers."""
    pytest.importorskip("faiss")
    from implicit.ann.faiss import FaissModel as ImplicitFaissModel
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS

    model, user_items = fitted
    theirs_model = ImplicitALS(factors=32)
    theirs_model.user_factors, theirs_model.item_factors = model.user_factors, model.item_factors
    theirs_model.fit = lambda *args, **kwargs: None  # keep these factors: index them only
    theirs = ImplicitFaissModel(theirs_model, nlist=1, nprobe=1, use_gpu=False)
    theirs.fit(user_items)
    ours = FaissModel(model, nlist=1, nprobe=1)
    for user in range(0, 2000, 97):
        their_ids, their_scores = theirs.recommend(user, user_items[user], N=10)
        our_ids, our_scores = ours.recommend(user, user_items[user], N=10)
        # Faiss's inner products against our row-wise sums: float32 rounding
        np.testing.assert_allclose(our_scores, their_scores, rtol=1e-5, atol=1e-6)
    their_ids, their_scores = theirs.similar_items(np.arange(20), N=10)
    our_ids, our_scores = ours.similar_items(np.arange(20), N=10)
    np.testing.assert_allclose(our_scores, their_scores, rtol=1e-5, atol=1e-5)


def test_augmentation_ranks_by_inner_product():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(200, 8)) * rng.uniform(0.1, 3, size=(200, 1))
    query = rng.normal(size=8)
    rows = augment_for_inner_product(items)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    largest = np.linalg.norm(items, axis=1).max()
    # the cosine with (query, 0), scaled back, is the inner product
    cosine = rows[:, :-1] @ query / np.linalg.norm(query)
    np.testing.assert_allclose(cosine * largest * np.linalg.norm(query), items @ query, rtol=1e-4)


def test_exclusions_count_an_item_once():
    liked = scipy.sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]]))
    exclusions = Exclusions(4, filter_ids=np.array([1, 3]), liked=liked)
    assert exclusions.counts(np.arange(3)).tolist() == [3, 2, 3]
    allowed = exclusions.allowed(np.array([0, 2]), np.array([[0, 1, 2, -1], [0, 2, 3, 1]]))
    assert allowed.tolist() == [[False, False, True, False], [True, False, False, False]]


@pytest.mark.parametrize("cls", [FaissModel, NMSLibModel, AnnoyModel])
def test_signature_defaults_are_the_index_defaults(cls):
    """Each wrapper states its settings twice: in implicit's explicit signature (for the
    drop-in and its docs) and in ``INDEX_DEFAULTS`` (what None stands for): they agree."""
    parameters = inspect.signature(cls.__init__).parameters
    settings = [name for name in parameters if name not in ("self", "model")][2:]
    assert settings == list(cls.INDEX_DEFAULTS)
    for name in settings:
        default = parameters[name].default
        assert default is None or default == cls.INDEX_DEFAULTS[name], name
