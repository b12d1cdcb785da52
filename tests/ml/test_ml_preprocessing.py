"""Preparation: column selection, imputation, signed log, winsorising, standardising."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import (
    INDICATOR_COLUMNS,
    LOG_COLUMNS,
    IndicatorPreprocessor,
    SignedLogTransformer,
    Winsorizer,
    signed_log1p,
)


def test_signed_log_is_odd_monotone_and_keeps_zero():
    x = np.array([-1e6, -10.0, -0.5, 0.0, 0.5, 10.0, 1e6])
    y = signed_log1p(x)
    assert y[3] == 0.0
    np.testing.assert_allclose(y, -signed_log1p(-x))
    assert np.all(np.diff(y) > 0)
    np.testing.assert_allclose(y[4:], np.log1p(x[4:]))


def test_signed_log_transformer_touches_only_flagged_columns():
    X = np.array([[100.0, 100.0], [-100.0, -100.0]])
    out = SignedLogTransformer(mask=[True, False]).fit_transform(X)
    np.testing.assert_allclose(out[:, 0], signed_log1p(X[:, 0]))
    np.testing.assert_array_equal(out[:, 1], X[:, 1])


def test_winsorizer_clips_to_training_quantiles():
    X = np.arange(1001, dtype=float)[:, None]
    w = Winsorizer(0.01, 0.99).fit(X)
    assert w.lower_[0] == pytest.approx(10.0) and w.upper_[0] == pytest.approx(990.0)
    np.testing.assert_array_equal(w.transform([[-5.0], [500.0], [5000.0]])[:, 0], [10, 500, 990])
    with pytest.raises(ValueError):
        Winsorizer(0.9, 0.1).fit(X)


def _indicators(n=500, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {c: rng.lognormal(3, 1.5, n) for c in INDICATOR_COLUMNS},
        index=pd.Index([f"C{i}" for i in range(n)], name="customer_id"),
    )
    frame["net_inflow"] = rng.normal(0, 1e5, n)
    frame["not_an_indicator"] = "x"
    return frame


def test_output_is_standardised_in_column_order():
    frame = _indicators()
    pre = IndicatorPreprocessor().fit(frame)
    Z = pre.transform(frame)
    assert Z.shape == (len(frame), len(INDICATOR_COLUMNS))
    assert list(pre.get_feature_names_out()) == list(INDICATOR_COLUMNS)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(pre.log_mask_, [c in LOG_COLUMNS for c in INDICATOR_COLUMNS])


def test_steps_apply_in_order_impute_log_clip_scale():
    frame = _indicators()
    pre = IndicatorPreprocessor(winsor_quantiles=(0.05, 0.95)).fit(frame)
    j = pre.columns_.index("avg_assets")
    x = frame["avg_assets"].to_numpy()
    logged = np.log1p(x)
    lo, hi = np.quantile(logged, [0.05, 0.95])
    assert pre.clip_lower_[j] == pytest.approx(lo) and pre.clip_upper_[j] == pytest.approx(hi)
    clipped = np.clip(logged, lo, hi)
    np.testing.assert_allclose(
        pre.transform(frame)[:, j], (clipped - clipped.mean()) / clipped.std(), atol=1e-12
    )


def test_missing_and_infinite_values_are_imputed_with_the_training_median():
    frame = _indicators()
    frame.loc[frame.index[:20], "trade_count"] = np.nan
    frame.loc[frame.index[20:25], "trade_count"] = np.inf
    pre = IndicatorPreprocessor().fit(frame)
    j = pre.columns_.index("trade_count")
    assert pre.n_missing_[j] == 25
    assert pre.impute_values_[j] == pytest.approx(np.median(frame["trade_count"].iloc[25:]))
    Z = pre.transform(frame)
    assert np.isfinite(Z).all()
    # A missing value is scored like a customer at the median.
    median_row = frame.iloc[[30]].copy()
    median_row["trade_count"] = pre.impute_values_[j]
    assert Z[0, j] == pytest.approx(pre.transform(median_row)[0, j])


def test_constant_and_all_missing_columns_do_not_produce_nan():
    frame = _indicators()
    frame["product_breadth"] = 2.0
    frame["margin_usage"] = np.nan
    columns = (*INDICATOR_COLUMNS, "margin_usage")
    Z = IndicatorPreprocessor(columns=columns).fit_transform(frame)
    assert np.isfinite(Z).all()
    assert np.all(Z[:, list(columns).index("product_breadth")] == 0.0)


def test_missing_column_is_named_in_the_error():
    frame = _indicators().drop(columns="recency_days")
    with pytest.raises(KeyError, match="recency_days"):
        IndicatorPreprocessor().fit(frame)


def test_log_columns_outside_the_selection_are_ignored():
    pre = IndicatorPreprocessor(
        columns=("avg_assets", "recency_days"), log_columns=("avg_assets", "net_inflow")
    ).fit(_indicators())
    np.testing.assert_array_equal(pre.log_mask_, [True, False])


def test_rebuilt_from_parameters_transforms_identically():
    frame = _indicators()
    pre = IndicatorPreprocessor().fit(frame)
    rebuilt = IndicatorPreprocessor.from_parameters(
        columns=pre.columns_,
        log_mask=pre.log_mask_,
        impute_values=pre.impute_values_,
        clip_lower=pre.clip_lower_,
        clip_upper=pre.clip_upper_,
        mean=pre.mean_,
        scale=pre.scale_,
        winsor_quantiles=pre.winsor_quantiles,
    )
    np.testing.assert_array_equal(rebuilt.transform(frame), pre.transform(frame))
