"""Factor analysis: adequacy measures by hand, extraction, rotation and scores by other routes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from statsmodels.multivariate.factor import Factor
from statsmodels.multivariate.factor_rotation import rotate_factors

from ml import (
    FactorAnalyzer,
    SamplingAdequacyWarning,
    align_factors,
    bartlett_sphericity,
    correlation_matrix,
    kmo,
    varimax,
)


def _factor_data(n=3_000, p=8, m=3, seed=0):
    """Data with m clear common factors: each indicator loads mainly on one."""
    rng = np.random.default_rng(seed)
    pattern = np.zeros((p, m))
    for j in range(p):
        pattern[j, j % m] = rng.uniform(0.6, 0.9)
        pattern[j, (j + 1) % m] = rng.uniform(-0.2, 0.2)
    factors = rng.normal(size=(n, m))
    noise = rng.normal(size=(n, p)) * 0.5
    return factors @ pattern.T + noise + rng.normal(0, 3, p)


def _match(reference, other):
    """``other``'s columns reordered and re-signed to best match ``reference``'s."""
    corr = np.corrcoef(reference.T, other.T)[: reference.shape[1], reference.shape[1] :]
    order = np.abs(corr).argmax(axis=1)
    assert sorted(order) == list(range(other.shape[1])), "columns do not pair one to one"
    signs = np.sign(corr[np.arange(len(order)), order])
    return other[:, order] * signs


# ----------------------------------------------------------------- adequacy


def _partial_correlations_by_regression(X):
    """Partial correlation of each pair given all other columns: correlate OLS residuals."""
    n, p = X.shape
    partial = np.eye(p)
    for i in range(p):
        for j in range(i + 1, p):
            rest = [c for c in range(p) if c not in (i, j)]
            design = np.column_stack([np.ones(n), X[:, rest]])
            res_i = X[:, i] - design @ np.linalg.lstsq(design, X[:, i], rcond=None)[0]
            res_j = X[:, j] - design @ np.linalg.lstsq(design, X[:, j], rcond=None)[0]
            partial[i, j] = partial[j, i] = np.corrcoef(res_i, res_j)[0, 1]
    return partial


def test_kmo_matches_the_formula_with_partial_correlations_from_regression():
    X = _factor_data(n=500, p=5, m=2, seed=3)
    R = np.corrcoef(X.T)
    A = _partial_correlations_by_regression(X)
    p = R.shape[0]
    r2 = sum(R[i, j] ** 2 for i in range(p) for j in range(p) if i != j)
    a2 = sum(A[i, j] ** 2 for i in range(p) for j in range(p) if i != j)
    per_variable = [
        sum(R[i, j] ** 2 for i in range(p) if i != j)
        / (
            sum(R[i, j] ** 2 for i in range(p) if i != j)
            + sum(A[i, j] ** 2 for i in range(p) if i != j)
        )
        for j in range(p)
    ]

    overall, per = kmo(R)

    assert overall == pytest.approx(r2 / (r2 + a2), abs=1e-10)
    np.testing.assert_allclose(per, per_variable, atol=1e-10)


def test_kmo_of_two_variables_is_one_half():
    # With p = 2 the partial correlation is the correlation itself.
    overall, per = kmo(np.array([[1.0, 0.6], [0.6, 1.0]]))
    assert overall == pytest.approx(0.5)
    np.testing.assert_allclose(per, [0.5, 0.5])


def test_bartlett_matches_the_formula():
    X = _factor_data(n=400, p=4, m=2, seed=4)
    R = np.corrcoef(X.T)
    n, p = X.shape
    statistic = -(n - 1 - (2 * p + 5) / 6) * np.log(np.linalg.det(R))
    dof = p * (p - 1) // 2

    result = bartlett_sphericity(R, n)

    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.dof == dof == 6
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, dof), rel=1e-9)


def test_bartlett_of_identity_is_not_significant_and_singular_is():
    assert bartlett_sphericity(np.eye(3), 100) == (0.0, 3, 1.0)
    singular = np.ones((3, 3))
    result = bartlett_sphericity(singular, 100)
    assert result.statistic == np.inf and result.p_value == 0.0


def test_low_kmo_is_reported_not_hidden():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 6))  # no common variance at all

    with pytest.warns(SamplingAdequacyWarning, match="KMO"):
        fa = FactorAnalyzer().fit(X)

    assert fa.kmo_ < 0.6
    assert fa.kmo_adequate_ is False
    assert fa.bartlett_.p_value > 0.001


def test_correlation_matrix_handles_a_constant_column():
    X = _factor_data(n=200, p=4, m=2)
    X[:, 2] = 5.0
    R, mean, scale = correlation_matrix(X)
    assert np.isfinite(R).all()
    assert R[2, 2] == 1.0 and np.all(R[2, [0, 1, 3]] == 0.0)
    assert scale[2] == 1.0 and mean[2] == 5.0


# --------------------------------------------------------------- extraction


def test_principal_component_loadings_match_statsmodels():
    # statsmodels' principal-axis method with unit communalities and one iteration
    # is principal-component extraction, computed by a separate implementation.
    X = _factor_data()
    fa = FactorAnalyzer(rotation=None).fit(X)
    sm = Factor(X, n_factor=fa.n_factors_, method="pa", smc=False).fit(maxiter=1)

    np.testing.assert_allclose(_match(fa.loadings_, sm.loadings), fa.loadings_, atol=1e-8)
    np.testing.assert_allclose(fa.eigenvalues_, np.sort(np.linalg.eigvalsh(np.corrcoef(X.T)))[::-1])


def test_principal_component_loadings_match_pca_of_the_standardised_data():
    X = _factor_data(seed=1)
    fa = FactorAnalyzer(rotation=None).fit(X)
    Z = (X - X.mean(0)) / X.std(0)
    pca = PCA(n_components=fa.n_factors_).fit(Z)
    n = len(X)
    loadings = pca.components_.T * np.sqrt(pca.explained_variance_ * (n - 1) / n)

    np.testing.assert_allclose(_match(fa.loadings_, loadings), fa.loadings_, atol=1e-8)


def test_number_of_factors_follows_kaiser_or_is_fixed():
    X = _factor_data(p=9, m=3, seed=2)
    fa = FactorAnalyzer().fit(X)
    assert fa.n_factors_ == int((fa.eigenvalues_ > 1.0).sum()) == 3
    assert FactorAnalyzer(n_factors=2).fit(X).n_factors_ == 2
    with pytest.raises(ValueError):
        FactorAnalyzer(n_factors=10).fit(X)


def test_variance_and_communalities_add_up():
    X = _factor_data()
    fa = FactorAnalyzer().fit(X)
    p = X.shape[1]
    np.testing.assert_allclose(fa.communalities_, (fa.loadings_**2).sum(1))  # rotation-invariant
    np.testing.assert_allclose(
        fa.variance_explained_.sum(), fa.eigenvalues_[: fa.n_factors_].sum() / p
    )
    np.testing.assert_allclose(fa.cumulative_variance_explained_, np.cumsum(fa.variance_explained_))
    assert fa.eigenvalues_.sum() == pytest.approx(p)


# ----------------------------------------------------------------- rotation


def test_varimax_with_kaiser_normalisation_matches_statsmodels():
    X = _factor_data(seed=5)
    fa = FactorAnalyzer().fit(X)
    L = fa.loadings_
    h = np.sqrt((L**2).sum(axis=1))
    rotated, _ = rotate_factors(L / h[:, None], "varimax")  # statsmodels' GPA algorithm
    rotated = rotated * h[:, None]

    np.testing.assert_allclose(
        _match(fa.rotated_loadings_, rotated), fa.rotated_loadings_, atol=1e-5
    )


def test_varimax_without_normalisation_matches_statsmodels():
    L = FactorAnalyzer(rotation=None).fit(_factor_data(seed=6)).loadings_
    ours, T = varimax(L, normalize=False)
    theirs, _ = rotate_factors(L, "varimax")
    np.testing.assert_allclose(_match(ours, theirs), ours, atol=1e-5)
    np.testing.assert_allclose(T @ T.T, np.eye(T.shape[0]), atol=1e-12)
    np.testing.assert_allclose(L @ T, ours, atol=1e-12)


def test_rotated_factors_have_a_fixed_order_and_sign():
    fa = FactorAnalyzer().fit(_factor_data(seed=7))
    assert np.all(np.diff(fa.ss_loadings_) <= 1e-12)
    assert np.all(fa.rotated_loadings_.sum(axis=0) >= 0)
    np.testing.assert_allclose(fa.loadings_ @ fa.rotation_matrix_, fa.rotated_loadings_, atol=1e-12)


# ------------------------------------------------------------------- scores


def test_unrotated_regression_scores_match_statsmodels():
    X = _factor_data(seed=8)
    fa = FactorAnalyzer(rotation=None).fit(X)
    sm = Factor(X, n_factor=fa.n_factors_, method="pa", smc=False).fit(maxiter=1)
    theirs = sm.factor_scoring(method="regression")
    n = len(X)
    theirs = theirs * np.sqrt(n / (n - 1))  # statsmodels standardises with ddof = 1

    ours = fa.transform(X)
    np.testing.assert_allclose(_match(ours, theirs), ours, atol=1e-8)


def test_rotated_score_coefficients_are_inverse_correlation_times_loadings():
    X = _factor_data(seed=9)
    fa = FactorAnalyzer().fit(X)
    R = np.corrcoef(X.T)
    B = np.linalg.solve(R, fa.rotated_loadings_)
    np.testing.assert_allclose(fa.score_coefficients_, B, atol=1e-10)

    scores = fa.transform(X)
    np.testing.assert_allclose(scores, ((X - X.mean(0)) / X.std(0)) @ B, atol=1e-10)
    # Orthogonal rotation of principal components: uncorrelated, unit variance.
    np.testing.assert_allclose(np.cov(scores.T, ddof=0), np.eye(fa.n_factors_), atol=1e-10)


def test_standardize_false_scores_already_standardised_input():
    X = _factor_data(seed=10)
    Z = (X - X.mean(0)) / X.std(0)
    np.testing.assert_allclose(
        FactorAnalyzer(standardize=False).fit(Z).transform(Z),
        FactorAnalyzer().fit(X).transform(X),
        atol=1e-10,
    )


# ---------------------------------------------------------------- alignment


def test_align_factors_undoes_a_permutation_and_sign_flips():
    fa = FactorAnalyzer().fit(_factor_data(seed=11))
    reference = fa.rotated_loadings_
    shuffled = reference[:, [2, 0, 1]] * np.array([1.0, -1.0, -1.0])
    order, signs = align_factors(shuffled, reference)
    np.testing.assert_allclose(shuffled[:, order] * signs, reference)


def test_align_to_keeps_scores_consistent_with_loadings():
    X = _factor_data(seed=12)
    fa = FactorAnalyzer().fit(X)
    before = fa.transform(X)
    target = fa.rotated_loadings_[:, ::-1] * -1
    fa.align_to(target)
    np.testing.assert_allclose(fa.rotated_loadings_, target, atol=1e-12)
    np.testing.assert_allclose(fa.transform(X), before[:, ::-1] * -1, atol=1e-12)
    np.testing.assert_allclose(fa.loadings_ @ fa.rotation_matrix_, fa.rotated_loadings_, atol=1e-12)
