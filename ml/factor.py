"""Exploratory factor analysis the way SPSS reports it, from the correlation matrix.

Everything is computed from the p x p correlation matrix R of the indicators, so
fitting costs one pass over the data plus microseconds of linear algebra,
whatever the number of customers.

- **Adequacy.** Kaiser-Meyer-Olkin measure (overall and per variable) from the
  anti-image: with S = R^-1, partial correlations a_ij = -s_ij / sqrt(s_ii s_jj)
  and KMO = sum r_ij^2 / (sum r_ij^2 + sum a_ij^2) over i != j. Bartlett's test
  of sphericity: chi2 = -(n - 1 - (2p + 5) / 6) ln|R| with p(p - 1) / 2 degrees
  of freedom. A KMO below ``min_kmo`` (Kaiser: < 0.6 is "mediocre" or worse)
  raises :class:`SamplingAdequacyWarning` and is kept in ``kmo_adequate_``: it
  is reported, never hidden.
- **Extraction: principal components**, SPSS's default. Loadings are the
  eigenvectors of R scaled by the square roots of their eigenvalues. We choose
  it over principal-axis or maximum-likelihood extraction because it is
  closed-form (no iterations that can fail to converge on 1M rows or on a
  near-singular R, e.g. turnover = volume / assets), deterministic, and it is
  what the brokerage studies we follow report. The price: communalities are
  somewhat inflated compared with common-factor extraction.
- **Number of factors**: eigenvalue > ``min_eigenvalue`` (Kaiser criterion,
  SPSS's default) or a fixed ``n_factors``.
- **Rotation: varimax with Kaiser normalisation** (rows scaled to unit length
  before rotating, as SPSS and R's ``varimax`` do). Rotated factors are then
  ordered by their sum of squared loadings, largest first, and each one's sign
  is chosen so its loadings sum to a positive number, which makes the output
  unique.
- **Scores: regression method** (Thurstone), B = R^-1 Lambda_rot. For
  principal-component extraction this equals V_m diag(lambda_m)^-1/2 T, which
  we use because it needs no inverse of a possibly near-singular R. Scores have
  mean 0 and unit variance (ddof = 0) on the training data.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class SamplingAdequacyWarning(UserWarning):
    """The data are poorly suited to factor analysis (low KMO)."""


class BartlettResult(NamedTuple):
    """Bartlett's test of sphericity: H0 is R = I (no common factors)."""

    statistic: float
    dof: int
    p_value: float


def correlation_matrix(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation of the columns of ``X`` (n, p), with means and scales.

    Returns ``(R, mean, scale)`` where scale is the population standard
    deviation (ddof = 0); a constant column gets scale 1 and correlation 0 with
    every other column (1 on the diagonal).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    mean = X.mean(axis=0)
    centred = X - mean
    cov = centred.T @ centred / n
    scale = np.sqrt(np.diag(cov))
    constant = scale <= 1e-12 * np.maximum(1.0, np.abs(mean))
    scale = np.where(constant, 1.0, scale)
    R = cov / np.outer(scale, scale)
    R[constant, :] = 0.0
    R[:, constant] = 0.0
    np.fill_diagonal(R, 1.0)
    R = (R + R.T) / 2
    return R, mean, scale


def kmo(R: np.ndarray) -> tuple[float, np.ndarray]:
    """Kaiser-Meyer-Olkin measure of sampling adequacy from a correlation matrix.

    Returns ``(overall, per_variable)``; per_variable has shape (p,). Uses the
    pseudo-inverse when R is singular.
    """
    R = np.asarray(R, dtype=np.float64)
    S = np.linalg.pinv(R, hermitian=True)
    d = np.sqrt(np.abs(np.diag(S)))
    d[d == 0] = 1.0
    partial = -S / np.outer(d, d)
    off = ~np.eye(R.shape[0], dtype=bool)
    r2 = np.where(off, R**2, 0.0)
    a2 = np.where(off, partial**2, 0.0)
    denominator = r2.sum(axis=0) + a2.sum(axis=0)
    per_variable = np.divide(
        r2.sum(axis=0), denominator, out=np.zeros(R.shape[0]), where=denominator > 0
    )
    total = r2.sum() + a2.sum()
    overall = float(r2.sum() / total) if total > 0 else 0.0
    return overall, per_variable


def bartlett_sphericity(R: np.ndarray, n_samples: int) -> BartlettResult:
    """Bartlett's test that the correlation matrix ``R`` (p, p) is the identity."""
    R = np.asarray(R, dtype=np.float64)
    p = R.shape[0]
    dof = p * (p - 1) // 2
    sign, logdet = np.linalg.slogdet(R)
    if sign <= 0:
        return BartlettResult(float("inf"), dof, 0.0)
    statistic = float(-(n_samples - 1 - (2 * p + 5) / 6) * logdet)
    return BartlettResult(statistic, dof, float(stats.chi2.sf(statistic, dof)))


def kmo_verdict(value: float) -> str:
    """Kaiser's (1974) labels for a KMO value."""
    for bound, label in (
        (0.9, "marvelous"),
        (0.8, "meritorious"),
        (0.7, "middling"),
        (0.6, "mediocre"),
        (0.5, "miserable"),
    ):
        if value >= bound:
            return label
    return "unacceptable"


def varimax(
    loadings: np.ndarray, normalize: bool = True, max_iter: int = 1000, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Varimax rotation (Kaiser 1958, the SVD algorithm of R's ``varimax``).

    Parameters
    ----------
    loadings : ndarray (p, m)
    normalize : bool
        Kaiser normalisation: rotate the rows scaled to unit length.

    Returns
    -------
    rotated : ndarray (p, m), equal to ``loadings @ rotation``
    rotation : ndarray (m, m), orthogonal
    """
    L = np.asarray(loadings, dtype=np.float64)
    p, m = L.shape
    if m < 2:
        return L.copy(), np.eye(m)
    h = np.sqrt((L**2).sum(axis=1)) if normalize else np.ones(p)
    h[h == 0] = 1.0
    x = L / h[:, None]
    rotation = np.eye(m)
    criterion = 0.0
    for _ in range(max_iter):
        z = x @ rotation
        u, s, vt = np.linalg.svd(x.T @ (z**3 - z * ((z**2).sum(axis=0) / p)))
        rotation = u @ vt
        previous, criterion = criterion, s.sum()
        if criterion < previous * (1 + tol):
            break
    return (x @ rotation) * h[:, None], rotation


def align_factors(loadings: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order and signs that make ``loadings`` (p, m) match ``reference`` (p, r).

    Factors are paired by the Hungarian algorithm on the absolute Tucker
    congruence of their loading columns; a paired factor takes its reference's
    position and the sign that makes the congruence positive. Unpaired factors
    (when m > r) follow in their current order with their current sign.

    Returns ``(order, signs)``: the aligned loadings are
    ``loadings[:, order] * signs``.
    """
    L = np.asarray(loadings, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    norms = np.outer(np.linalg.norm(L, axis=0), np.linalg.norm(ref, axis=0))
    congruence = (L.T @ ref) / np.where(norms > 0, norms, 1.0)
    rows, cols = linear_sum_assignment(-np.abs(congruence))
    pairs = sorted(zip(cols.tolist(), rows.tolist(), strict=True))
    paired = {j for _, j in pairs}
    order = [j for _, j in pairs] + [j for j in range(L.shape[1]) if j not in paired]
    signs = np.ones(L.shape[1])
    for position, (c, j) in enumerate(pairs):
        if congruence[j, c] < 0:
            signs[position] = -1.0
    return np.asarray(order, dtype=int), signs


class FactorAnalyzer(TransformerMixin, BaseEstimator):
    """Principal-component factor analysis with varimax rotation (SPSS-style).

    Parameters
    ----------
    n_factors : int or None
        Fixed number of factors; None keeps the factors whose eigenvalue
        exceeds ``min_eigenvalue`` (at least one).
    min_eigenvalue : float
        Kaiser criterion threshold, used when ``n_factors`` is None.
    rotation : {"varimax", None}
        Varimax with Kaiser normalisation, or no rotation.
    standardize : bool
        Standardise inputs with the training mean and scale before scoring.
        Set False when the input is already standardised (as the output of
        :class:`ml.preprocessing.IndicatorPreprocessor` is); the correlation
        matrix is computed the same way either way.
    min_kmo : float
        KMO below this raises :class:`SamplingAdequacyWarning`.

    Attributes
    ----------
    n_samples_ : int
    correlation_ : ndarray (p, p)
    mean_, scale_ : ndarray (p,)
        Standardisation applied by ``transform`` (0 and 1 if not standardising).
    kmo_ : float
    kmo_per_variable_ : ndarray (p,)
    kmo_adequate_ : bool
        ``kmo_ >= min_kmo``.
    bartlett_ : BartlettResult
    eigenvalues_ : ndarray (p,)
        Eigenvalues of R, descending.
    n_factors_ : int
    loadings_ : ndarray (p, m)
        Unrotated principal-component loadings.
    rotation_matrix_ : ndarray (m, m)
        ``rotated_loadings_ == loadings_ @ rotation_matrix_``.
    rotated_loadings_ : ndarray (p, m)
    communalities_ : ndarray (p,)
        Row sums of squared loadings (unchanged by rotation).
    ss_loadings_ : ndarray (m,)
        Sum of squared rotated loadings per factor.
    variance_explained_ : ndarray (m,)
        ``ss_loadings_ / p``, share of total standardised variance.
    cumulative_variance_explained_ : ndarray (m,)
    score_coefficients_ : ndarray (p, m)
        Regression-method score coefficients B; scores = standardised X @ B.
    """

    def __init__(
        self,
        n_factors: int | None = None,
        min_eigenvalue: float = 1.0,
        rotation: str | None = "varimax",
        standardize: bool = True,
        min_kmo: float = 0.6,
    ):
        self.n_factors = n_factors
        self.min_eigenvalue = min_eigenvalue
        self.rotation = rotation
        self.standardize = standardize
        self.min_kmo = min_kmo

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        if n < 3 or p < 2:
            raise ValueError(f"need at least 3 rows and 2 columns, got {X.shape}")
        if self.rotation not in ("varimax", None):
            raise ValueError(f"unknown rotation {self.rotation!r}")
        R, mean, scale = correlation_matrix(X)
        self.n_samples_, self.n_features_in_ = n, p
        self.correlation_ = R
        self.mean_ = mean if self.standardize else np.zeros(p)
        self.scale_ = scale if self.standardize else np.ones(p)

        self.kmo_, self.kmo_per_variable_ = kmo(R)
        self.kmo_adequate_ = bool(self.kmo_ >= self.min_kmo)
        if not self.kmo_adequate_:
            warnings.warn(
                f"KMO = {self.kmo_:.3f} ({kmo_verdict(self.kmo_)}) is below {self.min_kmo}: "
                "the indicators share little common variance; factors may not be meaningful",
                SamplingAdequacyWarning,
                stacklevel=2,
            )
        self.bartlett_ = bartlett_sphericity(R, n)

        eigenvalues, vectors = np.linalg.eigh(R)
        order = np.argsort(-eigenvalues, kind="stable")
        eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
        self.eigenvalues_ = eigenvalues
        if self.n_factors is None:
            m = max(1, int((eigenvalues > self.min_eigenvalue).sum()))
        else:
            m = int(self.n_factors)
            if not 1 <= m <= p:
                raise ValueError(f"n_factors must be in [1, {p}], got {m}")
        if eigenvalues[m - 1] <= 1e-12:
            raise ValueError(f"only {int((eigenvalues > 1e-12).sum())} non-degenerate factors")
        self.n_factors_ = m

        signs = _positive_sum_signs(vectors[:, :m])
        vectors = vectors[:, :m] * signs
        root = np.sqrt(eigenvalues[:m])
        self.loadings_ = vectors * root
        if self.rotation == "varimax":
            rotated, rotation = varimax(self.loadings_)
        else:
            rotated, rotation = self.loadings_.copy(), np.eye(m)
        ss = (rotated**2).sum(axis=0)
        order = np.argsort(-ss, kind="stable")
        signs = _positive_sum_signs(rotated[:, order])
        self.rotation_matrix_ = rotation[:, order] * signs
        self.rotated_loadings_ = rotated[:, order] * signs
        # R^-1 Lambda T == V diag(lambda)^-1/2 T for principal-component loadings.
        self.score_coefficients_ = (vectors / root) @ self.rotation_matrix_
        self._set_variance()
        return self

    def _set_variance(self) -> None:
        self.communalities_ = (self.rotated_loadings_**2).sum(axis=1)
        self.ss_loadings_ = (self.rotated_loadings_**2).sum(axis=0)
        self.variance_explained_ = self.ss_loadings_ / self.rotated_loadings_.shape[0]
        self.cumulative_variance_explained_ = np.cumsum(self.variance_explained_)

    def align_to(self, reference_loadings: np.ndarray) -> FactorAnalyzer:
        """Reorder and re-sign the rotated factors to match earlier loadings (p, r).

        Used month to month so that factor 1 keeps meaning the same thing.
        Modifies the fitted factors in place and returns self.
        """
        check_is_fitted(self, "rotated_loadings_")
        order, signs = align_factors(self.rotated_loadings_, reference_loadings)
        self.rotation_matrix_ = self.rotation_matrix_[:, order] * signs
        self.rotated_loadings_ = self.rotated_loadings_[:, order] * signs
        self.score_coefficients_ = self.score_coefficients_[:, order] * signs
        self._set_variance()
        return self

    def transform(self, X) -> np.ndarray:
        """Regression-method factor scores, shape (n, n_factors_)."""
        check_is_fitted(self, "score_coefficients_")
        X = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        # Summed indicator by indicator rather than by BLAS, so that a row's score
        # does not depend on how many other rows are scored with it.
        scores = np.zeros((X.shape[0], self.n_factors_))
        for j in range(X.shape[1]):
            scores += X[:, j, None] * self.score_coefficients_[j]
        return scores

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "n_factors_")
        return np.asarray([f"factor_{j + 1}" for j in range(self.n_factors_)], dtype=object)


def _positive_sum_signs(columns: np.ndarray) -> np.ndarray:
    """+1 / -1 per column so that each column sums to a non-negative number."""
    return np.where(columns.sum(axis=0) < 0, -1.0, 1.0)
