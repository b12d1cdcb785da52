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
- **Extraction**: ``principal_components`` (SPSS's default; loadings are the
  eigenvectors of R scaled by the square roots of their eigenvalues: closed
  form, deterministic, what the brokerage studies report, but communalities are
  inflated) or ``principal_axis`` (common-factor extraction: the diagonal of R
  replaced by communalities, starting from the squared multiple correlations
  and iterated to convergence). A factor that one indicator alone carries has a
  high communality under principal components and a low one under principal
  axis, which is how principal axis exposes it.
- **Number of factors**: a fixed ``n_factors``, or ``factor_selection``:
  ``parallel`` (Horn's parallel analysis: keep the leading factors whose
  eigenvalue beats the 95th percentile of the same eigenvalue of random normal
  data of the same shape, seeded) or ``kaiser`` (eigenvalue >
  ``min_eigenvalue``). Then, unless ``n_factors`` is fixed, factors are dropped
  one at a time while a rotated factor has fewer than ``min_salient_loadings``
  indicators loading at least ``salient_loading`` on it: a factor that only one
  indicator defines is an artefact of extraction, not a common factor.
  ``selection_`` says which rule set the count.
- **Rotation: varimax with Kaiser normalisation** (rows scaled to unit length
  before rotating, as SPSS and R's ``varimax`` do). Rotated factors are then
  ordered by their sum of squared loadings, largest first, and each one's sign
  is chosen so its loadings sum to a positive number, which makes the output
  unique.
- **Scores: regression method** (Thurstone), B = R^-1 Lambda_rot. For
  principal-component extraction this equals V_m diag(lambda_m)^-1/2 T, which
  we use because it needs no inverse of a possibly near-singular R (principal
  axis uses the pseudo-inverse). Principal-component scores have mean 0 and
  unit variance (ddof = 0) on the training data.
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


EXTRACTIONS = ("principal_components", "principal_axis")
FACTOR_SELECTIONS = ("parallel", "kaiser")


def parallel_thresholds(
    n_samples: int,
    n_features: int,
    iterations: int = 20,
    max_rows: int = 20_000,
    random_state: int = 0,
) -> np.ndarray:
    """95th percentile of each eigenvalue of the correlation matrix of random normal data.

    Horn's parallel analysis: ``iterations`` data sets of ``min(n_samples,
    max_rows)`` rows and ``n_features`` independent standard normal columns. Fewer
    rows than the data give higher thresholds, so the cap only makes the test
    stricter. Returns shape (n_features,), descending.
    """
    rng = np.random.default_rng(random_state)
    rows = max(3, min(n_samples, max_rows))
    draws = np.empty((iterations, n_features))
    for i in range(iterations):
        R, _, _ = correlation_matrix(rng.standard_normal((rows, n_features)))
        draws[i] = np.sort(np.linalg.eigvalsh(R))[::-1]
    return np.quantile(draws, 0.95, axis=0)


def principal_axis(
    R: np.ndarray, n_factors: int, max_iter: int = 500, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """Principal-axis factoring of ``R`` (p, p): loadings (p, m) and the iterations used.

    Communalities start at the squared multiple correlations (1 - 1 / diag(R^-1),
    from the pseudo-inverse) and are replaced by the row sums of squared loadings
    of the reduced matrix until they change by less than ``tol`` (capped at 0.995,
    so that no indicator becomes a Heywood case). Columns are signed so that each
    sums to a non-negative number.
    """
    R = np.asarray(R, dtype=np.float64)
    inverse_diagonal = np.diag(np.linalg.pinv(R, hermitian=True))
    h2 = np.clip(1.0 - 1.0 / np.where(inverse_diagonal > 0, inverse_diagonal, np.inf), 0.0, 0.995)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        reduced = R.copy()
        np.fill_diagonal(reduced, h2)
        eigenvalues, vectors = np.linalg.eigh(reduced)
        order = np.argsort(-eigenvalues, kind="stable")[:n_factors]
        loadings = vectors[:, order] * np.sqrt(np.clip(eigenvalues[order], 0.0, None))
        updated = np.clip((loadings**2).sum(axis=1), 0.0, 0.995)
        converged = np.max(np.abs(updated - h2)) < tol
        h2 = updated
        if converged:
            break
    return loadings * _positive_sum_signs(loadings), iterations


class FactorAnalyzer(TransformerMixin, BaseEstimator):
    """Exploratory factor analysis with varimax rotation (SPSS-style).

    Parameters
    ----------
    n_factors : int or None
        Fixed number of factors; None lets ``factor_selection`` and the salient
        loadings rule choose (at least one).
    factor_selection : {"parallel", "kaiser"}
        How the count is chosen when ``n_factors`` is None.
    min_eigenvalue : float
        Kaiser criterion threshold (``factor_selection="kaiser"``).
    extraction : {"principal_components", "principal_axis"}
    min_salient_loadings : int
        A retained factor needs at least this many indicators with an absolute
        rotated loading >= ``salient_loading`` (0 switches the rule off; not
        applied to a fixed ``n_factors``).
    salient_loading : float
    parallel_iterations : int
        Random data sets of parallel analysis (each at most
        ``parallel_max_rows`` rows).
    parallel_max_rows : int
    random_state : int
        Seed of parallel analysis.
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
    parallel_thresholds_ : ndarray (p,) or None
        95th percentiles of the random eigenvalues (parallel analysis only).
    n_factors_ : int
    selection_ : str
        What set the count: ``fixed``, ``parallel``, ``kaiser``, with
        ``+salient_loadings`` when that rule dropped factors.
    extraction_iterations_ : int
        Principal-axis iterations (0 for principal components).
    loadings_ : ndarray (p, m)
        Unrotated loadings.
    rotation_matrix_ : ndarray (m, m)
        ``rotated_loadings_ == loadings_ @ rotation_matrix_``.
    rotated_loadings_ : ndarray (p, m)
    communalities_ : ndarray (p,)
        Row sums of squared loadings (unchanged by rotation); for principal
        axis, the converged communalities.
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
        factor_selection: str = "parallel",
        min_eigenvalue: float = 1.0,
        extraction: str = "principal_components",
        rotation: str | None = "varimax",
        standardize: bool = True,
        min_kmo: float = 0.6,
        min_salient_loadings: int = 0,
        salient_loading: float = 0.5,
        parallel_iterations: int = 20,
        parallel_max_rows: int = 20_000,
        random_state: int = 0,
    ):
        self.n_factors = n_factors
        self.factor_selection = factor_selection
        self.min_eigenvalue = min_eigenvalue
        self.extraction = extraction
        self.rotation = rotation
        self.standardize = standardize
        self.min_kmo = min_kmo
        self.min_salient_loadings = min_salient_loadings
        self.salient_loading = salient_loading
        self.parallel_iterations = parallel_iterations
        self.parallel_max_rows = parallel_max_rows
        self.random_state = random_state

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        if n < 3 or p < 2:
            raise ValueError(f"need at least 3 rows and 2 columns, got {X.shape}")
        if self.rotation not in ("varimax", None):
            raise ValueError(f"unknown rotation {self.rotation!r}")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"unknown extraction {self.extraction!r} (known: {EXTRACTIONS})")
        if self.factor_selection not in FACTOR_SELECTIONS:
            raise ValueError(
                f"unknown factor_selection {self.factor_selection!r} (known: {FACTOR_SELECTIONS})"
            )
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

        eigenvalues = np.clip(np.sort(np.linalg.eigvalsh(R))[::-1], 0.0, None)
        self.eigenvalues_ = eigenvalues
        self.parallel_thresholds_ = None
        if self.n_factors is not None:
            m = int(self.n_factors)
            if not 1 <= m <= p:
                raise ValueError(f"n_factors must be in [1, {p}], got {m}")
            selection = "fixed"
        elif self.factor_selection == "parallel":
            self.parallel_thresholds_ = parallel_thresholds(
                n, p, self.parallel_iterations, self.parallel_max_rows, self.random_state
            )
            beats = eigenvalues > self.parallel_thresholds_
            m = max(1, int(np.argmin(beats)) if not beats.all() else p)
            selection = "parallel"
        else:
            m = max(1, int((eigenvalues > self.min_eigenvalue).sum()))
            selection = "kaiser"
        if eigenvalues[m - 1] <= 1e-12:
            raise ValueError(f"only {int((eigenvalues > 1e-12).sum())} non-degenerate factors")
        self._extract(R, m)
        if self.n_factors is None and self.min_salient_loadings > 0:
            while self.n_factors_ > 1 and self._salient_counts().min() < self.min_salient_loadings:
                self._extract(R, self.n_factors_ - 1)
                selection = selection.split("+")[0] + "+salient_loadings"
        self.selection_ = selection
        return self

    def _salient_counts(self) -> np.ndarray:
        """Indicators per rotated factor with |loading| >= ``salient_loading``, shape (m,)."""
        return (np.abs(self.rotated_loadings_) >= self.salient_loading).sum(axis=0)

    def _extract(self, R: np.ndarray, m: int) -> None:
        """Loadings, rotation and score coefficients for ``m`` factors of ``R``."""
        if self.extraction == "principal_axis":
            loadings, self.extraction_iterations_ = principal_axis(R, m)
        else:
            eigenvalues, vectors = np.linalg.eigh(R)
            order = np.argsort(-eigenvalues, kind="stable")[:m]
            vectors = vectors[:, order] * _positive_sum_signs(vectors[:, order])
            root = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
            loadings = vectors * root
            self.extraction_iterations_ = 0
        self.n_factors_ = m
        self.loadings_ = loadings
        if self.rotation == "varimax":
            rotated, rotation = varimax(self.loadings_)
        else:
            rotated, rotation = self.loadings_.copy(), np.eye(m)
        ss = (rotated**2).sum(axis=0)
        order = np.argsort(-ss, kind="stable")
        signs = _positive_sum_signs(rotated[:, order])
        self.rotation_matrix_ = rotation[:, order] * signs
        self.rotated_loadings_ = rotated[:, order] * signs
        if self.extraction == "principal_axis":
            self.score_coefficients_ = np.linalg.pinv(R, hermitian=True) @ self.rotated_loadings_
        else:
            # R^-1 Lambda T == V diag(lambda)^-1/2 T for principal-component loadings.
            self.score_coefficients_ = (vectors / root) @ self.rotation_matrix_
        self._set_variance()
        if self.extraction == "principal_axis":
            self.communalities_ = (self.loadings_**2).sum(axis=1)

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
