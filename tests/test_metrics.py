"""evaluate_rank / cosine_distance against independent, loop-based reference implementations.

Tie order: evaluate_rank sorts with ``np.argsort(kind="stable")``; the reference below sorts
with Python's ``sorted`` (stable too), so equal distances keep gallery index order in both.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from osnet_edge.metrics import cosine_distance, evaluate_rank, rank_metrics


def reference_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, order_fn=None):
    """Market-1501 protocol with plain per-query Python loops (no vectorisation)."""
    num_q, num_g = len(distmat), len(distmat[0])
    max_rank = min(max_rank, num_g)
    cmcs, aps = [], []
    for q in range(num_q):
        if order_fn is None:
            order = sorted(range(num_g), key=lambda j: distmat[q][j])  # stable
        else:
            order = list(order_fn(distmat[q]))
        hits = []
        for j in order:
            if g_pids[j] == q_pids[q] and g_camids[j] == q_camids[q]:
                continue  # same person seen by the same camera: removed
            hits.append(1 if g_pids[j] == q_pids[q] else 0)
        if sum(hits) == 0:
            continue
        first = hits.index(1)
        cmcs.append([1.0 if k >= first else 0.0 for k in range(max_rank)])
        found, precisions = 0, []
        for k, h in enumerate(hits):
            if h:
                found += 1
                precisions.append(found / (k + 1))
        aps.append(sum(precisions) / len(precisions))
    if not cmcs:
        raise ValueError("no valid query")
    cmc = [sum(c[k] for c in cmcs) / len(cmcs) for k in range(max_rank)]
    return np.array(cmc), sum(aps) / len(aps)


def _check(distmat, qp, gp, qc, gc, max_rank=50, **kw):
    cmc, mAP = evaluate_rank(np.asarray(distmat), np.asarray(qp), np.asarray(gp),
                             np.asarray(qc), np.asarray(gc), max_rank=max_rank, **kw)
    ref_cmc, ref_map = reference_market1501(distmat, qp, gp, qc, gc, max_rank)
    assert cmc.dtype == np.float32
    assert cmc.shape == ref_cmc.shape
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mAP == pytest.approx(ref_map, abs=1e-6)
    return cmc, mAP


# ----------------------------------------------------------------------------- evaluate_rank

def test_hand_computed_ap_hits_at_ranks_1_and_3():
    # gallery sorted by distance: g0 (match), g1 (other id), g2 (match)
    distmat = np.array([[0.1, 0.2, 0.3]])
    cmc, mAP = evaluate_rank(distmat, np.array([7]), np.array([7, 8, 7]),
                             np.array([0]), np.array([1, 1, 1]), max_rank=3)
    np.testing.assert_array_equal(cmc, [1, 1, 1])
    assert mAP == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_hand_computed_two_queries():
    # q0: first hit at rank 2 -> AP 1/2; q1: hits at ranks 1, 2 -> AP 1
    distmat = np.array([[0.1, 0.5, 0.9, 0.95],
                        [0.9, 0.5, 0.1, 0.2]])
    cmc, mAP = evaluate_rank(distmat, np.array([1, 2]), np.array([3, 1, 2, 2]),
                             np.array([0, 0]), np.array([1, 1, 1, 1]), max_rank=4)
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx((0.5 + 1.0) / 2)


def test_same_id_same_camera_gallery_items_are_removed():
    # g0 is the query's own id seen by the query's camera: removed, so the true match g2
    # moves from rank 3 to rank 2 (g1 is another id and stays).
    distmat = np.array([[0.0, 0.1, 0.2]])
    cmc, mAP = _check(distmat, [5], [5, 6, 5], [0], [0, 1, 1], max_rank=3)
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)


def test_query_without_valid_match_is_skipped():
    # q1's only same-id gallery item is in its own camera -> skipped, not counted as a miss
    distmat = np.array([[0.1, 0.2], [0.1, 0.2]])
    cmc, mAP = _check(distmat, [1, 2], [1, 2], [0, 0], [1, 0], max_rank=2)
    np.testing.assert_allclose(cmc, [1.0, 1.0])
    assert mAP == pytest.approx(1.0)


def test_ties_keep_gallery_index_order():
    # all distances equal: stable order means gallery index order
    distmat = np.zeros((2, 4))
    cmc, mAP = _check(distmat, [1, 2], [0, 1, 2, 1], [0, 0], [1, 1, 1, 1], max_rank=4)
    np.testing.assert_allclose(cmc, [0.0, 0.5, 1.0, 1.0])
    assert mAP == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1 / 3) / 2)


def test_ties_in_long_rows_are_stable():
    # rows long enough that numpy's default (introsort) would not be stable
    rng = np.random.default_rng(0)
    distmat = rng.integers(0, 3, size=(30, 200)).astype(np.float32)
    qp, gp = rng.integers(0, 10, 30), rng.integers(0, 10, 200)
    qc, gc = rng.integers(0, 3, 30), rng.integers(0, 3, 200)
    _check(distmat, qp, gp, qc, gc, max_rank=50)


def test_matches_default_argsort_when_no_ties():
    # torchreid uses plain np.argsort: identical whenever distances are distinct
    rng = np.random.default_rng(1)
    distmat = rng.random((40, 300))
    qp, gp = rng.integers(0, 20, 40), rng.integers(0, 20, 300)
    qc, gc = rng.integers(0, 2, 40), rng.integers(0, 2, 300)
    cmc, mAP = evaluate_rank(distmat, qp, gp, qc, gc)
    ref_cmc, ref_map = reference_market1501(distmat, qp, gp, qc, gc, order_fn=np.argsort)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mAP == pytest.approx(ref_map, abs=1e-6)


def test_chunking_does_not_change_result():
    rng = np.random.default_rng(2)
    distmat = rng.random((57, 80)).astype(np.float32)
    qp, gp = rng.integers(0, 8, 57), rng.integers(0, 8, 80)
    qc, gc = rng.integers(0, 2, 57), rng.integers(0, 2, 80)
    full = evaluate_rank(distmat, qp, gp, qc, gc, chunk=1024)
    for chunk in (1, 7, 56):
        cmc, mAP = evaluate_rank(distmat, qp, gp, qc, gc, chunk=chunk)
        np.testing.assert_array_equal(cmc, full[0])
        assert mAP == pytest.approx(full[1], abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_cases_match_reference(data):
    num_q = data.draw(st.integers(1, 8))
    num_g = data.draw(st.integers(1, 15))
    n_ids = data.draw(st.integers(1, 5))
    # few distinct distance values so ties are frequent
    dist = data.draw(st.lists(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5]),
                                       min_size=num_g, max_size=num_g), min_size=num_q, max_size=num_q))
    qp = data.draw(st.lists(st.integers(0, n_ids - 1), min_size=num_q, max_size=num_q))
    gp = data.draw(st.lists(st.integers(0, n_ids - 1), min_size=num_g, max_size=num_g))
    qc = data.draw(st.lists(st.integers(0, 2), min_size=num_q, max_size=num_q))
    gc = data.draw(st.lists(st.integers(0, 2), min_size=num_g, max_size=num_g))
    max_rank = data.draw(st.integers(1, 20))
    try:
        ref = reference_market1501(dist, qp, gp, qc, gc, max_rank)
    except ValueError:
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluate_rank(np.array(dist), np.array(qp), np.array(gp), np.array(qc), np.array(gc), max_rank)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmc, mAP = evaluate_rank(np.array(dist), np.array(qp), np.array(gp), np.array(qc),
                                 np.array(gc), max_rank, chunk=data.draw(st.integers(1, 4)))
    np.testing.assert_allclose(cmc, ref[0], atol=1e-6)
    assert mAP == pytest.approx(ref[1], abs=1e-6)


def test_all_queries_unmatched_raises():
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(np.zeros((2, 3)), np.array([1, 2]), np.array([3, 4, 1]),
                      np.array([0, 0]), np.array([1, 1, 0]), max_rank=3)


def test_small_gallery_warns_and_truncates():
    with pytest.warns(UserWarning, match="gallery"):
        cmc, _ = evaluate_rank(np.zeros((1, 3)), np.array([1]), np.array([1, 2, 3]),
                               np.array([0]), np.array([1, 1, 1]), max_rank=50)
    assert cmc.shape == (3,)


@pytest.mark.parametrize("bad", [
    dict(distmat=np.zeros(3)),
    dict(q_pids=np.zeros(3)),
    dict(g_pids=np.zeros(2)),
    dict(q_camids=np.zeros((2, 1))),
    dict(g_camids=np.zeros(5)),
])
def test_shape_validation(bad):
    args = dict(distmat=np.zeros((2, 4)), q_pids=np.zeros(2), g_pids=np.zeros(4),
                q_camids=np.zeros(2), g_camids=np.ones(4))
    args.update(bad)
    with pytest.raises(ValueError):
        evaluate_rank(**args, max_rank=4)


def test_nan_distance_raises():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 0.0]]), np.array([1]), np.array([1, 1]),
                      np.array([0]), np.array([1, 1]), max_rank=2)


# --------------------------------------------------------------------------- cosine_distance

def _naive_cosine(q, g):
    out = np.empty((len(q), len(g)))
    for i, a in enumerate(q):
        for j, b in enumerate(g):
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            out[i, j] = 1.0 if na == 0 or nb == 0 else 1.0 - float(a @ b) / (na * nb)
    return out


def test_cosine_matches_naive():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(6, 16)), rng.normal(size=(9, 16)) * 5
    d = cosine_distance(q, g)
    assert d.dtype == np.float32 and d.shape == (6, 9)
    np.testing.assert_allclose(d, _naive_cosine(q, g), atol=1e-5)


def test_cosine_zero_rows_are_distance_one():
    q = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    g = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = cosine_distance(q, g)
    assert not np.isnan(d).any()
    np.testing.assert_allclose(d, _naive_cosine(q, g), atol=1e-6)
    assert d[0, 0] == 1.0 and d[1, 1] == 1.0 and d[0, 1] == 1.0


def test_cosine_identical_and_opposite():
    d = cosine_distance(np.array([[1.0, 1.0]]), np.array([[2.0, 2.0], [-1.0, -1.0]]))
    np.testing.assert_allclose(d, [[0.0, 2.0]], atol=1e-6)


def test_cosine_chunking_matches_unchunked():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(50, 32)).astype(np.float32), rng.normal(size=(20, 32)).astype(np.float32)
    full = cosine_distance(q, g, chunk=4096)
    for chunk in (1, 3, 16, 49):
        np.testing.assert_allclose(cosine_distance(q, g, chunk=chunk), full, rtol=0, atol=1e-6)


def test_cosine_validation():
    with pytest.raises(ValueError, match="dims"):
        cosine_distance(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        cosine_distance(np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        cosine_distance(np.array([[np.nan, 1.0]]), np.zeros((2, 2)))


# ------------------------------------------------------------------------------ rank_metrics

def test_rank_metrics_percent_and_keys():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    g = np.array([[0.9, 0.1], [0.1, 0.9], [1.0, 1.0]])
    out = rank_metrics(q, g, [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])
    assert set(out) == {"rank1", "rank5", "rank10", "mAP", "num_query", "num_gallery"}
    assert out["rank1"] == pytest.approx(100.0)
    assert out["rank10"] == pytest.approx(100.0)  # gallery of 3: last rank reported
    assert out["mAP"] == pytest.approx(100.0)
    assert (out["num_query"], out["num_gallery"]) == (2, 3)


def test_rank_metrics_partial():
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.05], [0.5, 0.5], [0.0, 1.0]])  # true match (pid 2) at rank 2
    out = rank_metrics(q, g, [2], [1, 2, 3], [0], [1, 1, 1], ranks=(1, 2))
    assert out["rank1"] == pytest.approx(0.0)
    assert out["rank2"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(50.0)


def test_euclidean_matches_naive_and_ranks_like_cosine_on_unit_rows():
    from osnet_edge.metrics import euclidean_distance

    rng = np.random.default_rng(5)
    q, g = rng.normal(size=(7, 12)) * 3, rng.normal(size=(11, 12))
    naive = np.array([[float(((a - b) ** 2).sum()) for b in g] for a in q])
    np.testing.assert_allclose(euclidean_distance(q, g, chunk=3), naive, rtol=1e-5, atol=1e-4)
    ids = dict(q_pids=rng.integers(0, 4, 7), g_pids=rng.integers(0, 4, 11), q_camids=np.zeros(7, int),
               g_camids=np.ones(11, int))
    unit_q, unit_g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    assert rank_metrics(unit_q, unit_g, **ids, metric="euclidean") == rank_metrics(unit_q, unit_g, **ids)
    with pytest.raises(ValueError, match="metric"):
        rank_metrics(q, g, **ids, metric="manhattan")
    with pytest.raises(ValueError, match="expected"):
        euclidean_distance(q, g[:, :5])
