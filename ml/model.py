"""The tiering model: indicators in, named tiers out, month after month.

:class:`TieringModel` chains the steps of the brokerage studies:

1. **dormant rule** (before any statistics): a customer with no trade for
   ``dormant_min_recency_days`` (default 365: none in the 12-month window, whose
   ``recency_days`` is then window + 1 = 366) who has been a customer for at
   least ``dormant_min_tenure_months`` is ``sleeping``, segment 0;
2. :class:`~ml.preprocessing.IndicatorPreprocessor` (impute, signed log,
   winsorise, standardise), fitted on the remaining customers;
3. :class:`~ml.factor.FactorAnalyzer` (KMO, Bartlett, extraction, number of
   factors by parallel analysis and the salient-loadings rule, varimax,
   regression scores);
4. :class:`~ml.segmentation.KMeansSegmenter` on the factor scores, each factor
   weighted by the variance it explains, segments 1..k;
5. :func:`~ml.naming.name_segments`: each segment named by the optimal
   one-to-one assignment of segments to tier archetypes.

**k counts every tier.** ``n_clusters`` (default 6, one per tier) includes the
dormant rule's segment: when the rule sets customers aside, K-means fits
``n_clusters - 1`` segments among the others, so the book has ``n_clusters``
groups in all and, with the default, one per tier name.

**Why dormant customers are found by a rule, not by the clustering.**
"No trade for twelve months" is a business definition, not a pattern to
discover: a rule finds exactly those customers, says so in one line, and does
not move when the rest of the book changes. Left in, they are a point mass
(every activity indicator at its floor, recency at its cap) that can be a
quarter of the book: they dominate the correlation matrix and cost a K-means
segment that the active customers need. The tenure condition keeps a freshly
opened account that has not traded yet out of ``sleeping``. Set
``dormant_min_recency_days=None`` to let the clustering find them instead; the
``sleeping`` archetype then names that segment.

**Why factors are weighted by their variance.** Regression factor scores have
unit variance each, so a minor factor (one that explains 1.3 of 12 units of
variance) would weigh as much in the K-means distance as the main one (4
units), and K-means would spend segments cutting along it. Weighting each
factor's squared difference by its sum of squared loadings gives distances
close to those between the standardised indicators themselves, while keeping
the noise the dropped factors hold out.

**Stability.** ``fit(X, previous=model)`` carries segment identity: the
previous model assigns this month's customers to its segments, the means of
those groups in the *new* factor space are the starting centroids of a single
K-means run, so segment i grows out of last month's segment i and keeps its id
and (with ``keep_names``) its tier name. New factors are first aligned to the
previous loadings (order and sign) so that ``factor_1`` keeps its meaning. If
k changed, a fresh multi-start fit is matched to those starting centroids by
the Hungarian algorithm; matched segments keep their names, the others are
named around them.

**K-means runs to the end.** The ``n_init`` starts stop at scikit-learn's
tolerance, which only has to pick the best basin; the fit then continues from the
best start's centroids until no customer changes segment. Where two segments meet
inside a continuum (the ordinary middle of a mass-market book) the tolerance
stops a run while the boundary is still creeping, so the stopping point, and 1-2 %
of the tiers, depended on the random starts; run to the end, starts of other
seeds end on the same segments but for a few customers on a boundary.

**Fitting on a sample.** ``fit(X, sample=ids)`` runs the starts on the factor
scores of the ``sample`` customers only, judges them by their inertia over every
customer (the best start on the sample can sit in another basin than the book's
best), and the final run is over every customer, so the centroids are the full
book's. Everything else is fitted on every customer: the preprocessing and the
factor model are one-pass statistics (medians, quantiles, moments, the
correlation matrix) and the naming reads segment means. The starts, ``n_init``
runs over the data, are what the sample saves. A warm-started month uses the
sample for the fresh fit it is compared with.

**Assignment without refit.** ``predict``/``assign`` apply the dormant rule,
then score and take the nearest centroid; the training rows get exactly the
labels of the fit (``labels_``).

**Persistence.** :meth:`TieringModel.to_tables` writes plain DataFrames (see
its docstring) and :meth:`TieringModel.from_tables` reads them back;
predictions from the loaded model are identical.

Everything runs single-threaded in BLAS and OpenMP so the output does not
depend on the machine's thread count.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ml.factor import BartlettResult, FactorAnalyzer
from ml.naming import (
    DEFAULT_RULES,
    SCORES,
    TIER_RANK,
    NamingRules,
    name_segments,
    naming_frame,
    segment_scores,
)
from ml.preprocessing import (
    INDICATOR_COLUMNS,
    LOG_COLUMNS,
    IndicatorPreprocessor,
    select_indicators,
)
from ml.segmentation import (
    KMeansSegmenter,
    cluster_quality,
    k_diagnostics,
    match_segments,
    nearest_centroid,
)

#: Segment id of the customers the dormant rule sets aside.
DORMANT_SEGMENT = 0

TABLE_FORMAT_VERSION = 2

#: A warm-started K-means fit is kept while its inertia is within this share of a
#: fresh multi-start fit's.
WARM_START_TOLERANCE = 0.01

MODEL_TABLES = (
    "model_params",
    "model_indicators",
    "model_components",
    "model_factors",
    "model_loadings",
    "model_centroids",
    "model_segments",
    "model_segment_profiles",
    "model_quality",
)


_SEGMENT_COLUMNS = (
    "segment",
    "tier",
    "tier_rank",
    "source",
    "rule",
    "n_customers",
    "share",
    *(f"{score}_score" for score in SCORES),
    "archetype_distance",
    "naming_margin",
    "runner_up_tier",
)


class TieringModel(BaseEstimator):
    """Grade customers into named tiers from their indicators.

    Parameters
    ----------
    columns : sequence of str
        Indicator columns the factor analysis uses.
    log_columns : sequence of str
        Columns that get the signed log (skewed money, counts, turnover).
    winsor_quantiles : (float, float)
        Clip quantiles learned after the log.
    n_factors : int or None
        Fixed number of factors, or None to let ``factor_selection`` and the
        salient-loadings rule choose (see :class:`~ml.factor.FactorAnalyzer`).
    factor_selection : {"parallel", "kaiser"}
    min_eigenvalue : float
        Kaiser threshold (``factor_selection="kaiser"``).
    extraction : {"principal_components", "principal_axis"}
    min_salient_loadings : int
        Each retained factor needs this many indicators loading >= 0.5 (0, the
        default, switches the rule off: on the planted books it dropped the
        factor that sets new money apart; see docs/tiering.md).
    min_kmo : float
        KMO below this is flagged (warning and ``quality_["kmo_adequate"] == 0``).
    n_clusters : int
        Segments in all, the dormant rule's segment 0 included when the rule
        sets customers aside (K-means then fits ``n_clusters - 1``).
    cluster_weighting : {"variance", None}
        Weight each factor's squared difference in the K-means distance by its
        sum of squared loadings, or not at all.
    n_init, max_iter : int
        K-means starts and iterations.
    random_state : int
        Seed for K-means, the silhouette sample and the discriminant check.
    dormant_min_recency_days : float or None
        ``recency_days`` at or above which a customer counts as dormant; None
        turns the dormant rule off.
    dormant_min_tenure_months : float
        A dormant customer must also have at least this ``tenure_months``.
    naming : NamingRules
        Scores, archetypes and VIP cap of the naming (see :mod:`ml.naming`).
    keep_names : bool
        With a previous model, carried segments keep their previous tier names.
    silhouette_sample_size : int
        Rows (seeded sample) the silhouette is computed on; its cost grows with
        the square (a fifth of a second at 5,000, more than a second at 10,000).
    n_drivers : int
        Indicators listed per customer by :meth:`explain`.

    Attributes
    ----------
    preprocessor_ : IndicatorPreprocessor
    factor_model_ : FactorAnalyzer
    segmenter_ : KMeansSegmenter
    segments_ : DataFrame
        One row per segment: ``segment``, ``tier``, ``tier_rank``, ``source``
        (``kmeans`` or ``dormant_rule``), ``rule`` (``archetype``,
        ``archetype_nearest``, ``carried`` or ``dormant_rule``),
        ``n_customers``, ``share``, the five naming scores,
        ``archetype_distance``, ``naming_margin``, ``runner_up_tier``.
    profiles_ : DataFrame
        Long: ``segment``, ``indicator``, ``median`` (original units), ``mean_z``.
    labels_ : ndarray of int (n,)
        Segment per training row (0 = dormant rule).
    tiers_ : ndarray of str (n,)
        Tier per training row.
    quality_ : dict[str, float]
        Model-quality figures (see :meth:`to_tables`, ``model_quality``).
    """

    def __init__(
        self,
        columns: Sequence[str] = INDICATOR_COLUMNS,
        log_columns: Sequence[str] = LOG_COLUMNS,
        winsor_quantiles: tuple[float, float] = (0.005, 0.995),
        n_factors: int | None = None,
        factor_selection: str = "parallel",
        min_eigenvalue: float = 1.0,
        extraction: str = "principal_components",
        min_salient_loadings: int = 0,
        min_kmo: float = 0.6,
        n_clusters: int = 6,
        cluster_weighting: str | None = "variance",
        n_init: int = 10,
        max_iter: int = 300,
        random_state: int = 0,
        dormant_min_recency_days: float | None = 365.0,
        dormant_min_tenure_months: float = 12.0,
        naming: NamingRules = DEFAULT_RULES,
        keep_names: bool = True,
        silhouette_sample_size: int = 5_000,
        n_drivers: int = 3,
    ):
        self.columns = columns
        self.log_columns = log_columns
        self.winsor_quantiles = winsor_quantiles
        self.n_factors = n_factors
        self.factor_selection = factor_selection
        self.min_eigenvalue = min_eigenvalue
        self.extraction = extraction
        self.min_salient_loadings = min_salient_loadings
        self.min_kmo = min_kmo
        self.n_clusters = n_clusters
        self.cluster_weighting = cluster_weighting
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.dormant_min_recency_days = dormant_min_recency_days
        self.dormant_min_tenure_months = dormant_min_tenure_months
        self.naming = naming
        self.keep_names = keep_names
        self.silhouette_sample_size = silhouette_sample_size
        self.n_drivers = n_drivers

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: pd.DataFrame,
        y=None,
        previous: TieringModel | None = None,
        sample: Iterable[str] | None = None,
    ) -> TieringModel:
        """Fit on one month of indicators.

        Parameters
        ----------
        X : DataFrame (n_customers, ...)
            One row per customer with the indicator columns, plus
            ``recency_days`` and ``tenure_months`` for the dormant rule; the
            customer id is the ``customer_id`` column or the index.
        previous : TieringModel, optional
            Last month's fitted (or loaded) model, to carry segment identity.
        sample : iterable of customer ids, optional
            Customers the K-means starts are drawn on (see "Fitting on a sample"
            above); ids not in ``X`` and dormant-rule customers are ignored.
        """
        # Fit on the rows sorted by customer id, so the same customers give the
        # same model whatever order they arrive in (K-means starts, the
        # silhouette sample and the winsor quantiles all see the same rows).
        ids = _customer_ids(X)
        order = np.argsort(ids, kind="stable")
        in_sample = None
        if isinstance(sample, str):
            raise TypeError("sample is an iterable of customer ids, not one id")
        if sample is not None:
            drawn = set(sample)
            in_sample = np.fromiter((i in drawn for i in ids), bool, len(ids))[order]
        with threadpool_limits(limits=1):
            self._fit(X.iloc[order], previous, in_sample)
        restore = np.empty_like(order)
        restore[order] = np.arange(len(order))
        self.labels_ = self.labels_[restore]
        self.tiers_ = self.tiers_[restore]
        return self

    def _fit(
        self, X: pd.DataFrame, previous: TieringModel | None, in_sample: np.ndarray | None
    ) -> TieringModel:
        if self.cluster_weighting not in ("variance", None):
            raise ValueError(f"unknown cluster_weighting {self.cluster_weighting!r}")
        dormant = self._dormant_mask(X)
        clustered = ~dormant
        self.n_kmeans_ = self.n_clusters - 1 if dormant.any() else self.n_clusters
        if self.n_kmeans_ < 1:
            raise ValueError("n_clusters must leave at least one K-means segment")
        if clustered.sum() < max(self.n_kmeans_, 3):
            raise ValueError(f"only {int(clustered.sum())} customers left after the dormant rule")
        self.preprocessor_ = IndicatorPreprocessor(
            self.columns, self.log_columns, self.winsor_quantiles
        ).fit(X[clustered])
        Z_all = self.preprocessor_.transform(X)
        self.factor_model_ = self._factor_analyzer().fit(Z_all[clustered])
        if previous is not None and list(previous.preprocessor_.columns_) == self.columns_:
            self.factor_model_.align_to(previous.factor_model_.rotated_loadings_)
        self.cluster_weights_ = (
            self.factor_model_.ss_loadings_.copy()
            if self.cluster_weighting == "variance"
            else np.ones(self.factor_model_.n_factors_)
        )
        F = self._cluster_space(self.factor_model_.transform(Z_all[clustered]))
        starts_on = None if in_sample is None else in_sample[clustered]
        if starts_on is not None and starts_on.sum() < max(self.n_kmeans_, 3):
            raise ValueError(
                f"the sample holds {int(starts_on.sum())} of the customers K-means clusters: "
                f"too few for {self.n_kmeans_} segments"
            )
        self.n_kmeans_sample_ = len(F) if starts_on is None else int(starts_on.sum())

        carried, carry_names = self._fit_segments(F, X[clustered], previous, starts_on)
        # round the centroids through the factor units model_centroids stores them
        # in, so that a model loaded from its tables scores bit for bit alike
        scale = np.sqrt(self.cluster_weights_)
        self.segmenter_.cluster_centers_ = self.segmenter_.cluster_centers_ / scale * scale
        self.segmenter_.labels_ = self.segmenter_.predict(F)
        labels = np.full(len(X), DORMANT_SEGMENT, dtype=np.int64)
        labels[clustered] = self.segmenter_.predict(F)
        self.labels_ = labels

        self._set_profiles(X, Z_all, labels)
        self._name(X, clustered, previous if carry_names else None, carried)
        self.tiers_ = self._tiers_of(labels)
        self._set_quality(F, labels[clustered], dormant, carried)
        return self

    def _factor_analyzer(self) -> FactorAnalyzer:
        return FactorAnalyzer(
            n_factors=self.n_factors,
            factor_selection=self.factor_selection,
            min_eigenvalue=self.min_eigenvalue,
            extraction=self.extraction,
            rotation="varimax",
            standardize=False,
            min_kmo=self.min_kmo,
            min_salient_loadings=self.min_salient_loadings,
            random_state=self.random_state,
        )

    def _cluster_space(self, F: np.ndarray) -> np.ndarray:
        """Factor scores (n, m) scaled so that Euclidean distance is the weighted one."""
        return F * np.sqrt(self.cluster_weights_)

    def _dormant_mask(self, X: pd.DataFrame) -> np.ndarray:
        if self.dormant_min_recency_days is None:
            return np.zeros(len(X), dtype=bool)
        values = select_indicators(X, ["recency_days", "tenure_months"])
        recency, tenure = values[:, 0], np.nan_to_num(values[:, 1], nan=np.inf)
        with np.errstate(invalid="ignore"):
            return (recency >= self.dormant_min_recency_days) & (
                tenure >= self.dormant_min_tenure_months
            )

    def _fresh_segments(self, F: np.ndarray, starts_on: np.ndarray | None) -> KMeansSegmenter:
        """A fresh K-means fit on ``F``: ``n_init`` k-means++ starts on the ``starts_on``
        rows (all rows without it); the one with the lowest inertia over all of ``F``
        runs on, strictly, over all of ``F``."""
        rows = F if starts_on is None else F[starts_on]
        seeds = np.random.default_rng(self.random_state).integers(2**31 - 1, size=self.n_init)
        starts = [
            KMeansSegmenter(
                self.n_kmeans_, n_init=1, max_iter=self.max_iter, random_state=int(seed)
            ).fit(rows)
            for seed in seeds
        ]
        if starts_on is None:
            best = min(starts, key=lambda start: start.inertia_)
        else:
            # the best start on the sample need not be in the book's best basin:
            # the starts are judged by their inertia over every customer
            best = min(
                starts,
                key=lambda start: nearest_centroid(F, start.cluster_centers_)[1].min(axis=1).sum(),
            )
        return self._run_to_the_end(F, best.cluster_centers_)

    def _run_to_the_end(
        self, F: np.ndarray, init: np.ndarray, segment_ids: np.ndarray | None = None
    ) -> KMeansSegmenter:
        """One K-means run over ``F`` from ``init`` until no row changes segment (tol 0)."""
        segmenter = KMeansSegmenter(
            self.n_kmeans_,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=0.0,
            random_state=self.random_state,
        ).fit(F, init=init, segment_ids=segment_ids)
        if segmenter.n_iter_ >= self.max_iter:
            warnings.warn(
                f"K-means stopped after max_iter={self.max_iter} iterations with customers "
                "still changing segment",
                ConvergenceWarning,
                stacklevel=3,
            )
        return segmenter

    def _fit_segments(
        self,
        F: np.ndarray,
        X: pd.DataFrame,
        previous: TieringModel | None,
        starts_on: np.ndarray | None,
    ) -> tuple[set, bool]:
        """Fit ``segmenter_``; returns (segment ids carried over, whether names carry too)."""
        if previous is None:
            self.segmenter_ = self._fresh_segments(F, starts_on)
            return set(), False
        old_ids = previous.segmenter_.segment_ids_
        old_nearest, old_sq = nearest_centroid(
            previous._cluster_space(previous._factor_scores(X)),
            previous.segmenter_.cluster_centers_,
        )
        starts = np.empty((len(old_ids), F.shape[1]))
        for i in range(len(old_ids)):
            members = old_nearest == i
            # A segment that lost every member restarts from the customer
            # closest to its old centroid.
            starts[i] = F[members].mean(axis=0) if members.any() else F[np.argmin(old_sq[:, i])]
        fresh = self._fresh_segments(F, starts_on)
        if len(old_ids) == self.n_kmeans_:
            warm = self._run_to_the_end(F, starts, old_ids)
            # The warm start keeps the segments unless it settled in a clearly worse
            # local optimum than a fresh multi-start fit (a drifted book can pull a
            # warm-started small segment into a large one); then the fresh segments
            # take the ids and names of the old ones they sit closest to.
            self.warm_start_kept_ = warm.inertia_ <= fresh.inertia_ * (1 + WARM_START_TOLERANCE)
            if self.warm_start_kept_:
                self.segmenter_ = warm
                return set(old_ids.tolist()), True
        # k changed, or the warm start lost: the segments are new, so only their
        # ids are matched; the matched ones keep their names, the others are named
        # around them.
        segmenter = fresh
        matched = match_segments(segmenter.cluster_centers_, starts)
        new_ids, next_id = [], int(old_ids.max()) + 1
        for m in matched:
            if m >= 0:
                new_ids.append(int(old_ids[m]))
            else:
                new_ids.append(next_id)
                next_id += 1
        self.segmenter_ = segmenter.relabel(new_ids)
        return {int(old_ids[m]) for m in matched if m >= 0}, True

    def _set_profiles(self, X: pd.DataFrame, Z_all: np.ndarray, labels: np.ndarray) -> None:
        columns = self.columns_
        original = pd.DataFrame(select_indicators(X, columns), columns=columns)
        median = original.groupby(labels).median()
        mean_z = pd.DataFrame(Z_all, columns=columns).groupby(labels).mean()
        self._median = median
        self._mean_z = mean_z
        self.profiles_ = _long_profiles(median, mean_z)

    def _name(
        self,
        X: pd.DataFrame,
        clustered: np.ndarray,
        previous: TieringModel | None,
        carried: set,
    ) -> None:
        """Set ``segments_``: names by archetype, last month's for carried segments."""
        ids = [int(s) for s in self.segmenter_.segment_ids_]
        labels = self.labels_
        sizes = pd.Series(labels).value_counts()
        shares = sizes / len(labels)
        scores = segment_scores(naming_frame(X, self.naming), labels, clustered, self.naming)
        # A K-means segment is only empty if a warm start left a centroid without
        # members: it scores as the average customer.
        scores = scores.reindex([*([DORMANT_SEGMENT] if DORMANT_SEGMENT in sizes else []), *ids])
        scores = scores.fillna(0.0)
        fixed = {DORMANT_SEGMENT: "sleeping"} if DORMANT_SEGMENT in sizes.index else {}
        # while the dormant rule is on, sleeping is its verdict alone: a K-means
        # segment of customers who trade is never named sleeping
        exclude = ("sleeping",) if self.dormant_min_recency_days is not None else ()
        fresh = name_segments(scores, shares, self.naming, fixed, exclude=exclude)
        named = fresh
        if previous is not None and self.keep_names:
            old = previous.segments_.set_index("segment")["tier"]
            # carried segments prefer last month's name; the guards and the
            # one-to-one assignment still apply, and a name moves when another
            # assignment is better by more than carry_bonus
            keep = {s: old[s] for s in sorted(carried & set(old.index)) if s != DORMANT_SEGMENT}
            if keep:
                named = name_segments(scores, shares, self.naming, fixed, keep, exclude)
        self._names_differing = int((named["tier"] != fresh["tier"]).sum())
        named = named.rename_axis("segment").reset_index()
        named["segment"] = named["segment"].astype(np.int64)
        named["source"] = np.where(named["segment"] == DORMANT_SEGMENT, "dormant_rule", "kmeans")
        named.loc[named["segment"] == DORMANT_SEGMENT, "rule"] = "dormant_rule"
        named["n_customers"] = named["segment"].map(sizes).fillna(0).astype(np.int64)
        named["share"] = named["n_customers"] / len(labels)
        named["tier_rank"] = named["tier"].map(TIER_RANK).astype(np.int64)
        named = named.rename(columns={score: f"{score}_score" for score in SCORES})
        named["rule"] = named["rule"].astype(str)
        # plain strings for the warehouse: '' where there is no runner-up (fixed tiers)
        named["runner_up_tier"] = named["runner_up_tier"].fillna("").astype(str)
        named = named.sort_values("segment", kind="stable")
        self.segments_ = named[list(_SEGMENT_COLUMNS)].reset_index(drop=True)

    def _set_quality(
        self, F: np.ndarray, labels: np.ndarray, dormant: np.ndarray, carried: set
    ) -> None:
        fa = self.factor_model_
        cluster = cluster_quality(F, labels, self.silhouette_sample_size, self.random_state)
        self.quality_ = {
            "n_customers": float(len(dormant)),
            "n_clustered": float((~dormant).sum()),
            "n_dormant_rule": float(dormant.sum()),
            "n_kmeans_sample": float(self.n_kmeans_sample_),
            "n_indicators": float(len(self.columns_)),
            "n_missing_values": float(self.preprocessor_.n_missing_.sum()),
            "kmo": float(fa.kmo_),
            "kmo_adequate": float(fa.kmo_adequate_),
            "bartlett_statistic": float(fa.bartlett_.statistic),
            "bartlett_dof": float(fa.bartlett_.dof),
            "bartlett_p_value": float(fa.bartlett_.p_value),
            "n_factors": float(fa.n_factors_),
            "extraction_iterations": float(fa.extraction_iterations_),
            "variance_explained": float(fa.cumulative_variance_explained_[-1]),
            "k": float(len(self.segments_)),
            "kmeans_k": float(self.segmenter_.n_clusters),
            "min_naming_margin": float(np.nanmin(self.segments_["naming_margin"]))
            if self.segments_["naming_margin"].notna().any()
            else float("nan"),
            "inertia": float(self.segmenter_.inertia_),
            **cluster,
            "discriminant_agreement": self._discriminant_agreement(F, labels),
            "kmeans_iterations": float(self.segmenter_.n_iter_),
            "segments_carried": float(len(carried)),
            "names_differing_from_rules": float(self._names_differing),
        }

    def _discriminant_agreement(self, F: np.ndarray, labels: np.ndarray) -> float:
        """Share of customers a linear discriminant (fitted on a sample) puts in their segment."""
        if np.unique(labels).size < 2:
            return float("nan")
        rng = np.random.default_rng(self.random_state)
        sample = np.sort(rng.choice(len(F), size=min(len(F), 50_000), replace=False))
        if np.unique(labels[sample]).size < 2:
            return float("nan")
        lda = LinearDiscriminantAnalysis().fit(F[sample], labels[sample])
        return float((lda.predict(F) == labels).mean())

    # -------------------------------------------------------------- predict

    @property
    def columns_(self) -> list[str]:
        return self.preprocessor_.columns_

    def _factor_scores(self, X: pd.DataFrame) -> np.ndarray:
        return self.factor_model_.transform(self.preprocessor_.transform(X))

    def _tiers_of(self, segments: np.ndarray) -> np.ndarray:
        lookup = self.segments_.set_index("segment")["tier"]
        tiers = lookup.reindex(segments).to_numpy(dtype=object)
        if pd.isna(tiers).any():
            # Only possible when dormant customers appear but training had none.
            tiers = np.where(segments == DORMANT_SEGMENT, "sleeping", tiers)
        return tiers

    def _score(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(dormant mask, prepared Z (n, p), factor scores F (n, m), segment ids (n,))."""
        check_is_fitted(self, "segmenter_")
        dormant = self._dormant_mask(X)
        Z = self.preprocessor_.transform(X)
        F = self.factor_model_.transform(Z)
        segments = np.where(
            dormant, DORMANT_SEGMENT, self.segmenter_.predict(self._cluster_space(F))
        )
        return dormant, Z, F, segments

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Factor scores (n, n_factors) for every row, dormant ones included."""
        check_is_fitted(self, "segmenter_")
        with threadpool_limits(limits=1):
            return self._factor_scores(X)

    def predict_segments(self, X: pd.DataFrame) -> np.ndarray:
        """Segment id per row (0 = dormant rule)."""
        with threadpool_limits(limits=1):
            return self._score(X)[3]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Tier code per row (object array of str), without refitting."""
        return self._tiers_of(self.predict_segments(X))

    def assign(self, X: pd.DataFrame, explain: bool = True) -> pd.DataFrame:
        """Tier table rows for ``X``.

        Returns a DataFrame, one row per input row in input order, with
        ``customer_id``, ``segment`` (int), ``tier`` (str), ``tier_rank`` (int),
        ``factor_1`` .. ``factor_m`` (float) and, with ``explain``, the columns
        of :meth:`explain`.
        """
        with threadpool_limits(limits=1):
            _, Z, F, segments = self._score(X)
        tiers = self._tiers_of(segments)
        out = pd.DataFrame(
            {
                "customer_id": _customer_ids(X),
                "segment": segments.astype(np.int64),
                "tier": tiers,
                "tier_rank": pd.Series(tiers).map(TIER_RANK).to_numpy(dtype=np.int64),
            }
        )
        for j in range(F.shape[1]):
            out[f"factor_{j + 1}"] = F[:, j]
        if explain:
            out = pd.concat([out, self._explain(Z, F, segments, tiers)], axis=1)
        return out

    def explain(self, X: pd.DataFrame) -> pd.DataFrame:
        """Why each customer is in their tier, as short machine-readable fields.

        Returns a DataFrame, one row per input row, with ``customer_id`` and:

        - ``driver_1`` .. ``driver_n`` (str) and ``driver_1_z`` .. (float): the
          indicators that most set the customer apart from the average
          customer *in the direction their segment differs*, ranked by
          z(customer) x mean z(segment); z is in standard deviations of the
          prepared indicator (e.g. ``recency_days`` -1.2 = traded recently);
        - ``nearest_other_tier`` (str) and ``distance_to_other_tier`` (float):
          the closest centroid, in factor space, of a segment named
          differently, and the Euclidean distance to it;
        - ``reason`` (str): ``segment=<id>|<driver>=<z>|...`` or
          ``dormant_rule|...``.
        """
        with threadpool_limits(limits=1):
            _, Z, F, segments = self._score(X)
        out = self._explain(Z, F, segments, self._tiers_of(segments))
        out.insert(0, "customer_id", _customer_ids(X))
        return out

    def _explain(
        self, Z: np.ndarray, F: np.ndarray, segments: np.ndarray, tiers: np.ndarray
    ) -> pd.DataFrame:
        columns = np.asarray(self.columns_, dtype=object)
        mean_z = self._mean_z.reindex(np.unique(segments)).fillna(0.0)
        direction = mean_z.to_numpy()[np.searchsorted(mean_z.index.to_numpy(), segments)]
        n = min(self.n_drivers, len(columns))
        top = np.argsort(-(Z * direction), axis=1, kind="stable")[:, :n]
        z_top = np.take_along_axis(Z, top, axis=1)

        centroid_tiers = self._tiers_of(self.segmenter_.segment_ids_)
        _, sq = nearest_centroid(self._cluster_space(F), self.segmenter_.cluster_centers_)
        sq = np.where(tiers[:, None] == centroid_tiers[None, :], np.inf, sq)
        nearest = np.argmin(sq, axis=1)
        distance = np.sqrt(np.take_along_axis(sq, nearest[:, None], axis=1)[:, 0])
        other = np.where(np.isfinite(distance), centroid_tiers[nearest], None)

        out = pd.DataFrame(index=range(len(segments)))
        for i in range(n):
            out[f"driver_{i + 1}"] = columns[top[:, i]]
            out[f"driver_{i + 1}_z"] = z_top[:, i]
        out["nearest_other_tier"] = other
        out["distance_to_other_tier"] = np.where(np.isfinite(distance), distance, np.nan)
        # one str.format per customer: numpy/pandas string arithmetic is slower
        starts = np.where(
            segments == DORMANT_SEGMENT, "dormant_rule", "segment=" + segments.astype(str)
        ).tolist()
        names = [columns[top[:, i]].tolist() for i in range(n)]
        values = [np.round(z_top[:, i], 2).tolist() for i in range(n)]
        fmt = ("{0}" + "".join(f"|{{{1 + i}}}={{{1 + n + i}:+.2f}}" for i in range(n))).format
        out["reason"] = np.array(
            [fmt(*row) for row in zip(starts, *names, *values, strict=True)], dtype=object
        )
        return out

    def diagnose_k(
        self,
        X: pd.DataFrame,
        k_values: Iterable[int] = range(2, 11),
        silhouette_sample_size: int | None = None,
    ) -> pd.DataFrame:
        """:func:`~ml.segmentation.k_diagnostics` on this model's factor scores of ``X``.

        ``k`` counts every segment as ``n_clusters`` does: when the dormant rule
        sets customers aside, their segment is one of the k and K-means fits
        ``k - 1`` among the others (``kmeans_k``); the figures are those of the
        K-means customers, in the weighted factor space the fit uses. The
        silhouette is computed on ``silhouette_sample_size`` of them (default:
        the model's); its cost grows with the square of that size.
        """
        with threadpool_limits(limits=1):
            dormant, _, F, _ = self._score(X)
            offset = 1 if dormant.any() else 0
            table = k_diagnostics(
                self._cluster_space(F[~dormant]),
                [int(k) - offset for k in k_values if int(k) - offset >= 1],
                n_init=self.n_init,
                max_iter=self.max_iter,
                random_state=self.random_state,
                silhouette_sample_size=self.silhouette_sample_size
                if silhouette_sample_size is None
                else silhouette_sample_size,
            )
        table.insert(0, "kmeans_k", table.pop("k"))
        table.insert(0, "k", table["kmeans_k"] + offset)
        return table

    # --------------------------------------------------------------- tables

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The fitted model as plain tables (str, int, float and bool columns).

        - ``model_params`` (name, value): parameters as JSON text;
        - ``model_indicators`` (position, indicator, transform, impute_value,
          clip_lower, clip_upper, mean, std, n_missing, kmo, communality): to
          prepare indicator x: ``z = (least(greatest(t(coalesce(x,
          impute_value)), clip_lower), clip_upper) - mean) / std`` where t is
          ``sign(x) * ln(1 + |x|)`` if transform = 'signed_log1p' else x;
        - ``model_components`` (component, eigenvalue, variance_share,
          cumulative_variance_share, retained): eigenvalues of R;
        - ``model_factors`` (factor, ss_loadings, variance_explained,
          cumulative_variance_explained, cluster_weight): rotated factors;
          ``cluster_weight`` multiplies the factor's squared difference in the
          segment distance;
        - ``model_loadings`` (indicator, factor, unrotated_loading,
          rotated_loading, score_coefficient): ``factor_f = sum over indicators
          of z * score_coefficient``; unrotated_loading is on principal
          component number ``factor``;
        - ``model_centroids`` (segment, factor, centroid): a customer belongs to
          the segment whose centroid is nearest in factor space, distance
          ``sum over factors of cluster_weight * (factor score - centroid)^2``,
          unless the dormant rule in ``model_params`` applies (segment 0);
        - ``model_segments`` (segment, tier, tier_rank, source, rule,
          n_customers, share, value_score, revenue_score, activity_score,
          growth_score, tenure_score, archetype_distance, naming_margin,
          runner_up_tier): the naming map;
        - ``model_segment_profiles`` (segment, indicator, median, mean_z);
        - ``model_quality`` (metric, value).
        """
        check_is_fitted(self, "segmenter_")
        pre, fa, seg = self.preprocessor_, self.factor_model_, self.segmenter_
        columns = self.columns_
        p, m = len(columns), fa.n_factors_
        params = {**self.get_params(), "naming": self.naming.to_dict()}
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        params["format_version"] = TABLE_FORMAT_VERSION
        params["n_samples"] = fa.n_samples_
        params["factor_count_rule"] = fa.selection_
        eig = fa.eigenvalues_
        factor_index = np.tile(np.arange(1, m + 1), p)
        return {
            "model_params": pd.DataFrame(
                {
                    "name": sorted(params),
                    "value": [
                        json.dumps(params[k], sort_keys=True, default=_plain)
                        for k in sorted(params)
                    ],
                }
            ),
            "model_indicators": pd.DataFrame(
                {
                    "position": np.arange(1, p + 1, dtype=np.int64),
                    "indicator": columns,
                    "transform": np.where(pre.log_mask_, "signed_log1p", "none").astype(object),
                    "impute_value": pre.impute_values_,
                    "clip_lower": pre.clip_lower_,
                    "clip_upper": pre.clip_upper_,
                    "mean": pre.mean_,
                    "std": pre.scale_,
                    "n_missing": pre.n_missing_.astype(np.int64),
                    "kmo": fa.kmo_per_variable_,
                    "communality": fa.communalities_,
                }
            ),
            "model_components": pd.DataFrame(
                {
                    "component": np.arange(1, p + 1, dtype=np.int64),
                    "eigenvalue": eig,
                    "variance_share": eig / p,
                    "cumulative_variance_share": np.cumsum(eig) / p,
                    "retained": np.arange(p) < m,
                }
            ),
            "model_factors": pd.DataFrame(
                {
                    "factor": np.arange(1, m + 1, dtype=np.int64),
                    "ss_loadings": fa.ss_loadings_,
                    "variance_explained": fa.variance_explained_,
                    "cumulative_variance_explained": fa.cumulative_variance_explained_,
                    "cluster_weight": self.cluster_weights_,
                }
            ),
            "model_loadings": pd.DataFrame(
                {
                    "indicator": np.repeat(np.asarray(columns, dtype=object), m),
                    "factor": factor_index.astype(np.int64),
                    "unrotated_loading": fa.loadings_.ravel(),
                    "rotated_loading": fa.rotated_loadings_.ravel(),
                    "score_coefficient": fa.score_coefficients_.ravel(),
                }
            ),
            "model_centroids": pd.DataFrame(
                {
                    "segment": np.repeat(seg.segment_ids_, m).astype(np.int64),
                    "factor": np.tile(np.arange(1, m + 1), len(seg.segment_ids_)).astype(np.int64),
                    "centroid": (seg.cluster_centers_ / np.sqrt(self.cluster_weights_)).ravel(),
                }
            ),
            "model_segments": self.segments_.copy(),
            "model_segment_profiles": self.profiles_.copy(),
            "model_quality": pd.DataFrame(
                {"metric": list(self.quality_), "value": [float(v) for v in self.quality_.values()]}
            ),
        }

    @classmethod
    def from_tables(cls, tables: Mapping[str, pd.DataFrame]) -> TieringModel:
        """Rebuild a fitted model from :meth:`to_tables` output (e.g. read back from SQL).

        The loaded model predicts, assigns, explains, exports and serves as
        ``previous`` exactly like the original; it has no per-row training
        attributes (``labels_``, ``tiers_``).
        """
        missing = [name for name in MODEL_TABLES if name not in tables]
        if missing:
            raise KeyError(f"model tables missing: {missing}")
        raw = tables["model_params"]
        params = {str(k): json.loads(v) for k, v in zip(raw["name"], raw["value"], strict=True)}
        version = params.pop("format_version", None)
        if version != TABLE_FORMAT_VERSION:
            raise ValueError(f"unsupported model table format {version}")
        n_samples = int(params.pop("n_samples"))
        factor_count_rule = str(params.pop("factor_count_rule"))
        params["naming"] = NamingRules.from_dict(params["naming"])
        for key in ("columns", "log_columns", "winsor_quantiles"):
            params[key] = tuple(params[key])
        self = cls(**params)

        ind = tables["model_indicators"].sort_values("position")
        columns = ind["indicator"].astype(str).tolist()
        self.preprocessor_ = IndicatorPreprocessor.from_parameters(
            columns=columns,
            log_mask=(ind["transform"] == "signed_log1p").to_numpy(),
            impute_values=ind["impute_value"].to_numpy(np.float64),
            clip_lower=ind["clip_lower"].to_numpy(np.float64),
            clip_upper=ind["clip_upper"].to_numpy(np.float64),
            mean=ind["mean"].to_numpy(np.float64),
            scale=ind["std"].to_numpy(np.float64),
            winsor_quantiles=self.winsor_quantiles,
            n_missing=ind["n_missing"].to_numpy(np.int64),
        )
        comp = tables["model_components"].sort_values("component")
        factors = tables["model_factors"].sort_values("factor")
        m = len(factors)
        position = {c: i for i, c in enumerate(columns)}

        def matrix(frame: pd.DataFrame, value: str) -> np.ndarray:
            out = np.full((len(columns), m), np.nan)
            rows = frame["indicator"].map(position).to_numpy()
            out[rows, frame["factor"].to_numpy() - 1] = frame[value].to_numpy(np.float64)
            return out

        loadings = tables["model_loadings"]
        fa = self._factor_analyzer()
        fa.selection_ = factor_count_rule
        quality = dict(
            zip(
                tables["model_quality"]["metric"].astype(str),
                tables["model_quality"]["value"].astype(float),
                strict=True,
            )
        )
        fa.n_samples_, fa.n_features_in_, fa.n_factors_ = n_samples, len(columns), m
        fa.mean_, fa.scale_ = np.zeros(len(columns)), np.ones(len(columns))
        fa.eigenvalues_ = comp["eigenvalue"].to_numpy(np.float64)
        fa.kmo_ = quality["kmo"]
        fa.kmo_per_variable_ = ind["kmo"].to_numpy(np.float64)
        fa.kmo_adequate_ = bool(quality["kmo_adequate"])
        fa.bartlett_ = BartlettResult(
            quality["bartlett_statistic"],
            int(quality["bartlett_dof"]),
            quality["bartlett_p_value"],
        )
        fa.loadings_ = matrix(loadings, "unrotated_loading")
        fa.rotated_loadings_ = matrix(loadings, "rotated_loading")
        fa.score_coefficients_ = matrix(loadings, "score_coefficient")
        fa.rotation_matrix_ = np.linalg.lstsq(fa.loadings_, fa.rotated_loadings_, rcond=None)[0]
        fa.communalities_ = ind["communality"].to_numpy(np.float64)
        fa.ss_loadings_ = factors["ss_loadings"].to_numpy(np.float64)
        fa.variance_explained_ = factors["variance_explained"].to_numpy(np.float64)
        fa.cumulative_variance_explained_ = factors["cumulative_variance_explained"].to_numpy(
            np.float64
        )
        fa.extraction_iterations_ = int(quality.get("extraction_iterations", 0))
        self.factor_model_ = fa
        self.cluster_weights_ = factors["cluster_weight"].to_numpy(np.float64)

        cent = tables["model_centroids"].sort_values(["segment", "factor"])
        ids = np.unique(cent["segment"].to_numpy(np.int64))
        self.n_kmeans_ = len(ids)
        self.segmenter_ = KMeansSegmenter.from_centroids(
            cent["centroid"].to_numpy(np.float64).reshape(len(ids), m)
            * np.sqrt(self.cluster_weights_),
            ids,
            n_init=self.n_init,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        self.segments_ = tables["model_segments"].sort_values("segment").reset_index(drop=True)
        self.profiles_ = tables["model_segment_profiles"].copy()
        wide = self.profiles_.pivot(index="segment", columns="indicator")
        self._median = wide["median"][columns]
        self._mean_z = wide["mean_z"][columns]
        self.quality_ = quality
        return self


def _plain(value):
    """JSON fallback for numpy scalars and arrays passed as parameters."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store parameter value {value!r} as JSON")


def _long_profiles(median: pd.DataFrame, mean_z: pd.DataFrame) -> pd.DataFrame:
    long = pd.DataFrame(
        {
            "segment": np.repeat(median.index.to_numpy(np.int64), median.shape[1]),
            "indicator": np.tile(np.asarray(median.columns, dtype=object), median.shape[0]),
            "median": median.to_numpy(np.float64).ravel(),
            "mean_z": mean_z.loc[median.index, median.columns].to_numpy(np.float64).ravel(),
        }
    )
    return long


def _customer_ids(X: pd.DataFrame) -> np.ndarray:
    if "customer_id" in X.columns:
        return X["customer_id"].to_numpy()
    return X.index.to_numpy()
