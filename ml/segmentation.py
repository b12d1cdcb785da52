"""K-means segmentation of factor scores, with diagnostics over k and carry-over.

- Fresh fits use k-means++ with ``n_init`` starts (default 10) from a fixed
  ``random_state``; segments are numbered 1..k by size, largest first.
- A fit can instead be **warm-started** from given centroids (one run from
  them), keeping the caller's segment ids; :class:`ml.model.TieringModel`
  uses this to carry segment identity from the previous month.
- :func:`match_segments` pairs two sets of centroids by the Hungarian
  algorithm, for when k changed between months.
- Labels always come from :func:`nearest_centroid` on the final centroids, so
  a fitted segmenter gives its training rows exactly the labels ``predict``
  gives them.
- K-means runs with one OpenMP thread: scikit-learn sums per-thread partial
  centroids in whatever order threads finish, so more threads would make the
  result depend on the machine. On two cores one thread is as fast (measured).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits


def nearest_centroid(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid per row, and squared distances to all.

    Parameters
    ----------
    X : ndarray (n, m)
    centroids : ndarray (k, m)

    Returns
    -------
    nearest : ndarray of int (n,), ties go to the lower index
    sq_distances : ndarray (n, k)
    """
    X = np.asarray(X, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    sq = np.zeros((X.shape[0], centroids.shape[0]))
    for f in range(X.shape[1]):
        sq += (X[:, f, None] - centroids[None, :, f]) ** 2
    return np.argmin(sq, axis=1), sq


def cluster_quality(
    X: np.ndarray, labels: np.ndarray, silhouette_sample_size: int = 5_000, random_state: int = 0
) -> dict[str, float]:
    """Silhouette (on a seeded sample), Calinski-Harabasz and Davies-Bouldin.

    NaN where a score is undefined (fewer than 2 clusters).
    """
    n_labels = np.unique(labels).size
    if n_labels < 2 or n_labels >= X.shape[0]:
        return {"silhouette": np.nan, "calinski_harabasz": np.nan, "davies_bouldin": np.nan}
    sample_size = min(silhouette_sample_size, X.shape[0])
    rng = np.random.default_rng(random_state)
    sample = np.sort(rng.choice(X.shape[0], size=sample_size, replace=False))
    silhouette = (
        silhouette_score(X[sample], labels[sample])
        if np.unique(labels[sample]).size > 1
        else np.nan
    )
    return {
        "silhouette": float(silhouette),
        "calinski_harabasz": float(calinski_harabasz_score(X, labels)),
        "davies_bouldin": float(davies_bouldin_score(X, labels)),
    }


class KMeansSegmenter(ClusterMixin, BaseEstimator):
    """K-means with many seeded starts, stable segment ids and exact re-assignment.

    Parameters
    ----------
    n_clusters : int
    n_init : int
        k-means++ starts for a fresh fit (ignored when warm-started).
    max_iter, tol : as in :class:`sklearn.cluster.KMeans`
    random_state : int

    Attributes
    ----------
    cluster_centers_ : ndarray (k, m)
        Row i is the centroid of segment ``segment_ids_[i]``.
    segment_ids_ : ndarray of int (k,)
    labels_ : ndarray of int (n,)
        Segment id per training row.
    inertia_ : float
        Sum of squared distances to the assigned centroid.
    n_iter_ : int
    """

    def __init__(
        self,
        n_clusters: int = 6,
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int = 0,
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y=None, init: np.ndarray | None = None, segment_ids=None):
        """Fit on ``X`` (n, m).

        ``init`` (k, m) warm-starts a single run from those centroids and
        ``segment_ids`` (k,) names them; without ``segment_ids`` the segments
        are numbered 1..k by size.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"{X.shape[0]} rows cannot form {self.n_clusters} segments")
        if init is None:
            km = KMeans(
                self.n_clusters,
                init="k-means++",
                n_init=self.n_init,
                max_iter=self.max_iter,
                tol=self.tol,
                random_state=self.random_state,
            )
        else:
            init = np.asarray(init, dtype=np.float64)
            if init.shape != (self.n_clusters, X.shape[1]):
                raise ValueError(f"init has shape {init.shape}")
            km = KMeans(
                self.n_clusters,
                init=init,
                n_init=1,
                max_iter=self.max_iter,
                tol=self.tol,
                random_state=self.random_state,
            )
        with threadpool_limits(limits=1, user_api="openmp"):
            km.fit(X)
        centers = km.cluster_centers_
        nearest, sq = nearest_centroid(X, centers)
        if segment_ids is None:
            sizes = np.bincount(nearest, minlength=self.n_clusters)
            order = np.argsort(-sizes, kind="stable")
            centers, segment_ids = centers[order], np.arange(1, self.n_clusters + 1)
            nearest = np.argsort(order)[nearest]
        self.cluster_centers_ = centers
        self.segment_ids_ = np.asarray(segment_ids, dtype=int)
        self.labels_ = self.segment_ids_[nearest]
        self.inertia_ = float(np.take_along_axis(sq, np.argmin(sq, axis=1)[:, None], 1).sum())
        self.n_iter_ = int(km.n_iter_)
        self.n_features_in_ = X.shape[1]
        return self

    def relabel(self, segment_ids) -> KMeansSegmenter:
        """Rename the segments: ``segment_ids[i]`` replaces ``segment_ids_[i]``."""
        check_is_fitted(self, "cluster_centers_")
        segment_ids = np.asarray(segment_ids, dtype=int)
        if segment_ids.shape != self.segment_ids_.shape or np.unique(segment_ids).size != len(
            segment_ids
        ):
            raise ValueError("need one distinct id per segment")
        if hasattr(self, "labels_"):
            position = np.argsort(self.segment_ids_)
            index = position[np.searchsorted(self.segment_ids_, self.labels_, sorter=position)]
            self.labels_ = segment_ids[index]
        self.segment_ids_ = segment_ids
        return self

    def predict(self, X) -> np.ndarray:
        """Segment id of the nearest centroid for each row of ``X`` (n, m)."""
        check_is_fitted(self, "cluster_centers_")
        return self.segment_ids_[nearest_centroid(X, self.cluster_centers_)[0]]

    @classmethod
    def from_centroids(
        cls, centroids: np.ndarray, segment_ids: Iterable[int], **params
    ) -> KMeansSegmenter:
        """A fitted segmenter from stored centroids (k, m) and their segment ids."""
        centroids = np.asarray(centroids, dtype=np.float64)
        self = cls(n_clusters=centroids.shape[0], **params)
        self.cluster_centers_ = centroids
        self.segment_ids_ = np.asarray(list(segment_ids), dtype=int)
        self.n_features_in_ = centroids.shape[1]
        return self


def match_segments(new_centroids: np.ndarray, old_centroids: np.ndarray) -> np.ndarray:
    """Pair new centroids (k_new, d) with old ones (k_old, d), Hungarian on squared distance.

    Returns an int array (k_new,): the index of the paired old centroid, or -1
    for new centroids left over when k_new > k_old.
    """
    new_centroids = np.asarray(new_centroids, dtype=np.float64)
    old_centroids = np.asarray(old_centroids, dtype=np.float64)
    cost = ((new_centroids[:, None, :] - old_centroids[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    matched = np.full(new_centroids.shape[0], -1)
    matched[rows] = cols
    return matched


def k_diagnostics(
    X: np.ndarray,
    k_values: Iterable[int] = range(2, 11),
    n_init: int = 10,
    max_iter: int = 300,
    random_state: int = 0,
    silhouette_sample_size: int = 10_000,
    stability_runs: int = 2,
) -> pd.DataFrame:
    """K-means quality over a range of k, one row per k, for a person to plot.

    Parameters
    ----------
    X : ndarray (n, m)
        Factor scores.

    Returns
    -------
    DataFrame with columns ``k`` (int), ``inertia`` (within-segment sum of
    squares; look for the elbow), ``silhouette`` (on a seeded sample of
    ``silhouette_sample_size`` rows; higher is better), ``calinski_harabasz``
    (higher is better), ``davies_bouldin`` (lower is better), ``stability``
    (mean adjusted Rand index between the segments of the full fit and those of
    ``stability_runs`` fits on random halves of the rows with other seeds, all
    rows assigned to their nearest centroid: 1 = the same segments whatever the
    sample and seed), ``n_iter``.
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    halves = [
        np.sort(rng.choice(len(X), size=max(len(X) // 2, 1), replace=False))
        for _ in range(stability_runs)
    ]
    rows = []
    for k in k_values:
        seg = KMeansSegmenter(
            n_clusters=int(k), n_init=n_init, max_iter=max_iter, random_state=random_state
        ).fit(X)
        quality = cluster_quality(X, seg.labels_, silhouette_sample_size, random_state)
        agreement = [
            adjusted_rand_score(
                seg.labels_,
                KMeansSegmenter(
                    n_clusters=int(k),
                    n_init=n_init,
                    max_iter=max_iter,
                    random_state=random_state + 1 + run,
                )
                .fit(X[half])
                .predict(X),
            )
            for run, half in enumerate(halves)
            if len(half) >= k and k > 1  # one segment agrees with itself by definition
        ]
        rows.append(
            {
                "k": int(k),
                "inertia": seg.inertia_,
                **quality,
                "stability": float(np.mean(agreement)) if agreement else float("nan"),
                "n_iter": seg.n_iter_,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "k",
            "inertia",
            "silhouette",
            "calinski_harabasz",
            "davies_bouldin",
            "stability",
            "n_iter",
        ],
    )
