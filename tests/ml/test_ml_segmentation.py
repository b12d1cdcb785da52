"""K-means segmentation: seeded starts, stable ids, warm start, matching, diagnostics over k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from ml import KMeansSegmenter, cluster_quality, k_diagnostics, match_segments, nearest_centroid

CENTERS = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
SIZES = (500, 300, 200)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1.0, size=(n, 2)) for c, n in zip(CENTERS, SIZES, strict=True)])
    truth = np.repeat(np.arange(3), SIZES)
    return X, truth


def test_fresh_fit_numbers_segments_by_size(blobs):
    X, truth = blobs
    seg = KMeansSegmenter(n_clusters=3).fit(X)
    assert adjusted_rand_score(truth, seg.labels_) > 0.95
    np.testing.assert_array_equal(seg.segment_ids_, [1, 2, 3])
    sizes = [(seg.labels_ == s).sum() for s in (1, 2, 3)]
    assert sizes == sorted(sizes, reverse=True)


def test_labels_are_exactly_what_predict_gives(blobs):
    X, _ = blobs
    seg = KMeansSegmenter(n_clusters=3).fit(X)
    np.testing.assert_array_equal(seg.predict(X), seg.labels_)


def test_same_seed_same_centroids(blobs):
    X, _ = blobs
    a = KMeansSegmenter(n_clusters=4, random_state=3).fit(X)
    b = KMeansSegmenter(n_clusters=4, random_state=3).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_warm_start_keeps_the_given_ids(blobs):
    X, truth = blobs
    ids = np.array([30, 10, 20])
    seg = KMeansSegmenter(n_clusters=3).fit(X, init=CENTERS + 0.5, segment_ids=ids)
    np.testing.assert_array_equal(seg.segment_ids_, ids)
    # Blob i grew out of start i, so it carries ids[i].
    for blob, segment in enumerate(ids):
        assert (seg.labels_[truth == blob] == segment).mean() > 0.95


def test_relabel_renames_segments_and_labels(blobs):
    X, _ = blobs
    seg = KMeansSegmenter(n_clusters=3).fit(X)
    before = seg.labels_.copy()
    seg.relabel([7, 8, 9])
    np.testing.assert_array_equal(seg.labels_, before + 6)
    np.testing.assert_array_equal(seg.predict(X), seg.labels_)
    with pytest.raises(ValueError):
        seg.relabel([1, 1, 2])


def test_match_segments_pairs_moved_centroids_and_flags_extras():
    old = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]])
    new = np.array([[10.2, 0.1], [0.1, -0.2], [20.0, 20.0], [4.8, 5.1]])
    np.testing.assert_array_equal(match_segments(new, old), [2, 0, -1, 1])


def test_nearest_centroid_breaks_ties_to_the_lower_index():
    nearest, sq = nearest_centroid(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert nearest[0] == 0
    np.testing.assert_array_equal(sq, [[1.0, 1.0]])


def test_k_diagnostics_is_a_plottable_table_that_points_at_the_true_k(blobs):
    X, _ = blobs
    table = k_diagnostics(X, range(2, 7), n_init=5, silhouette_sample_size=600)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "k",
        "inertia",
        "silhouette",
        "calinski_harabasz",
        "davies_bouldin",
        "stability",
        "n_iter",
    ]
    assert table["k"].tolist() == [2, 3, 4, 5, 6]
    assert table["inertia"].is_monotonic_decreasing
    best = table.set_index("k")
    assert best["silhouette"].idxmax() == 3
    assert best["calinski_harabasz"].idxmax() == 3
    assert best["davies_bouldin"].idxmin() == 3
    # at the true k every half-sample fit finds the same blobs
    assert best.loc[3, "stability"] > 0.99
    assert table["stability"].between(-1, 1).all()


def test_cluster_quality_is_nan_for_a_single_cluster(blobs):
    X, _ = blobs
    quality = cluster_quality(X, np.zeros(len(X), dtype=int))
    assert all(np.isnan(v) for v in quality.values())


def test_too_few_rows_for_k_is_an_error():
    with pytest.raises(ValueError, match="segments"):
        KMeansSegmenter(n_clusters=6).fit(np.zeros((3, 2)))
