"""Preparation of the indicator table for factor analysis.

One row per customer, one column per indicator (``marts.customer_indicators``).
The steps, in order, each with learned state a SQL user can replay:

1. **select** the configured indicator columns (original units) as float64;
2. **impute** missing values (``return_rate`` is null when its denominator is
   zero; anything else missing is defensive) with the training median of the
   column, so a missing value means "a typical customer" on that indicator;
3. **signed log**: ``sign(x) * ln(1 + |x|)`` on skewed columns (money, counts,
   turnover). It keeps zero at zero and works for signed values such as
   ``net_inflow`` and a negative ``commission_contribution``;
4. **winsorise**: clip each column to its training quantiles (default 0.5 % and
   99.5 %), in transformed units, so a few whales do not dominate a factor;
5. **standardise**: subtract the training mean and divide by the training
   standard deviation (population, ``ddof=0``; a constant column gets 1).

The output is a float64 array of shape ``(n_customers, n_indicators)`` in
standard-deviation units, columns in the order of ``columns``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

#: The 14 indicators of ``marts.customer_indicators``.
ALL_INDICATORS: tuple[str, ...] = (
    "avg_assets",
    "commission_contribution",
    "interest_contribution",
    "trading_volume",
    "net_inflow",
    "return_rate",
    "trade_count",
    "active_days",
    "turnover_rate",
    "recency_days",
    "tenure_months",
    "active_month_share",
    "product_breadth",
    "margin_usage",
)

#: The indicators the model uses by default: the value and the loyalty/activity
#: sides. Left out: ``return_rate`` (the market's doing more than the customer's,
#: near-zero communality) and ``margin_usage`` (zero for most customers; as a
#: factor of its own it splits every tier into margin and cash users instead of
#: separating tiers). Both stay available by configuration.
INDICATOR_COLUMNS: tuple[str, ...] = tuple(
    c for c in ALL_INDICATORS if c not in ("return_rate", "margin_usage")
)

#: Heavy-tailed columns that get the signed log: currency amounts, the trade
#: count and turnover (hyper-active traders turn their assets over 100x a year).
LOG_COLUMNS: tuple[str, ...] = (
    "avg_assets",
    "commission_contribution",
    "interest_contribution",
    "trading_volume",
    "net_inflow",
    "trade_count",
    "turnover_rate",
)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * ln(1 + |x|)``, element-wise; monotone, odd, 0 -> 0."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def select_indicators(X: pd.DataFrame | np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Columns ``columns`` of ``X`` as a float64 array ``(n, len(columns))``.

    A DataFrame must contain every column (extra ones are ignored); an array
    must already have exactly these columns in this order. Infinities become NaN
    so that they are imputed like any other missing value.
    """
    if isinstance(X, pd.DataFrame):
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise KeyError(f"indicator columns missing from the input: {missing}")
        values = X.loc[:, list(columns)].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        values = np.array(X, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ValueError(f"expected an array of shape (n, {len(columns)}), got {values.shape}")
    values[~np.isfinite(values)] = np.nan
    return values


class SignedLogTransformer(TransformerMixin, BaseEstimator):
    """Signed log on the columns flagged in ``mask`` (all columns if None).

    Parameters
    ----------
    mask : sequence of bool, optional
        One flag per input column; True means transform it.
    """

    def __init__(self, mask: Sequence[bool] | None = None):
        self.mask = mask

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        mask = np.ones(X.shape[1], bool) if self.mask is None else np.asarray(self.mask, bool)
        if mask.shape != (X.shape[1],):
            raise ValueError(f"mask has {mask.size} flags for {X.shape[1]} columns")
        self.mask_ = mask
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "mask_")
        X = np.array(X, dtype=np.float64)
        X[:, self.mask_] = signed_log1p(X[:, self.mask_])
        return X


class Winsorizer(TransformerMixin, BaseEstimator):
    """Clip every column to quantiles learned on the training data.

    Parameters
    ----------
    lower_quantile, upper_quantile : float
        Quantiles in [0, 1] of the training column that become its bounds.

    Attributes
    ----------
    lower_, upper_ : ndarray of shape (n_features,)
        Clip bounds in the units of the input.
    """

    def __init__(self, lower_quantile: float = 0.005, upper_quantile: float = 0.995):
        self.lower_quantile = lower_quantile
        self.upper_quantile = upper_quantile

    def fit(self, X, y=None):
        if not 0.0 <= self.lower_quantile <= self.upper_quantile <= 1.0:
            raise ValueError("need 0 <= lower_quantile <= upper_quantile <= 1")
        X = np.asarray(X, dtype=np.float64)
        bounds = np.quantile(X, [self.lower_quantile, self.upper_quantile], axis=0)
        self.lower_, self.upper_ = bounds[0], bounds[1]
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "lower_")
        return np.clip(np.asarray(X, dtype=np.float64), self.lower_, self.upper_)


class IndicatorPreprocessor(TransformerMixin, BaseEstimator):
    """Select, impute, signed-log, winsorise and standardise indicators.

    Parameters
    ----------
    columns : sequence of str
        Indicator columns to use, in order.
    log_columns : sequence of str
        Columns that get the signed log; names not among ``columns`` are
        ignored, so narrowing ``columns`` needs no change here.
    winsor_quantiles : (float, float)
        Lower and upper clip quantiles, learned after the log.

    Attributes
    ----------
    columns_ : list of str
    n_missing_ : ndarray of int, shape (n_indicators,)
        Missing (or infinite) values per column in the training data.
    impute_values_ : ndarray, shape (n_indicators,)
        Training median per column in original units (0 if a column is all
        missing), used for missing values.
    log_mask_ : ndarray of bool, shape (n_indicators,)
        Which columns get the signed log.
    clip_lower_, clip_upper_ : ndarray, shape (n_indicators,)
        Winsor bounds, in transformed units (after the signed log).
    mean_, scale_ : ndarray, shape (n_indicators,)
        Standardisation, in transformed units.
    """

    def __init__(
        self,
        columns: Sequence[str] = INDICATOR_COLUMNS,
        log_columns: Sequence[str] = LOG_COLUMNS,
        winsor_quantiles: tuple[float, float] = (0.005, 0.995),
    ):
        self.columns = columns
        self.log_columns = log_columns
        self.winsor_quantiles = winsor_quantiles

    def fit(self, X, y=None):
        self.columns_ = list(self.columns)
        values = select_indicators(X, self.columns_)
        if values.shape[0] == 0:
            raise ValueError("cannot fit on zero customers")
        missing = np.isnan(values)
        self.n_missing_ = missing.sum(axis=0)
        medians = np.zeros(values.shape[1])
        for j in np.flatnonzero(self.n_missing_ < values.shape[0]):
            medians[j] = np.median(values[~missing[:, j], j])
        self.impute_values_ = medians
        values = self._impute(values)
        log_mask = [c in self.log_columns for c in self.columns_]
        self.signed_log_ = SignedLogTransformer(mask=log_mask).fit(values)
        values = self.signed_log_.transform(values)
        self.winsorizer_ = Winsorizer(*self.winsor_quantiles).fit(values)
        self.scaler_ = StandardScaler().fit(self.winsorizer_.transform(values))
        self.n_features_in_ = len(self.columns_)
        return self

    def _impute(self, values: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(values), self.impute_values_, values)

    @property
    def log_mask_(self) -> np.ndarray:
        return self.signed_log_.mask_

    @property
    def clip_lower_(self) -> np.ndarray:
        return self.winsorizer_.lower_

    @property
    def clip_upper_(self) -> np.ndarray:
        return self.winsorizer_.upper_

    @property
    def mean_(self) -> np.ndarray:
        return self.scaler_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.scaler_.scale_

    def transform(self, X) -> np.ndarray:
        """Standardised indicators, float64 ``(n_customers, n_indicators)``."""
        check_is_fitted(self, "scaler_")
        values = self.signed_log_.transform(self._impute(select_indicators(X, self.columns_)))
        return self.scaler_.transform(self.winsorizer_.transform(values))

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)

    @classmethod
    def from_parameters(
        cls,
        columns: Sequence[str],
        log_mask: Sequence[bool],
        impute_values: Sequence[float],
        clip_lower: Sequence[float],
        clip_upper: Sequence[float],
        mean: Sequence[float],
        scale: Sequence[float],
        winsor_quantiles: tuple[float, float],
        n_missing: Sequence[int] | None = None,
    ) -> IndicatorPreprocessor:
        """A fitted preprocessor rebuilt from stored parameters (see ``to_tables``)."""
        columns = list(columns)
        log_mask = np.asarray(log_mask, dtype=bool)
        self = cls(
            columns=tuple(columns),
            log_columns=tuple(c for c, flag in zip(columns, log_mask, strict=True) if flag),
            winsor_quantiles=tuple(winsor_quantiles),
        )
        self.columns_ = columns
        self.impute_values_ = np.asarray(impute_values, dtype=np.float64)
        self.n_missing_ = (
            np.zeros(len(columns), int) if n_missing is None else np.asarray(n_missing)
        )
        self.signed_log_ = SignedLogTransformer(mask=log_mask.tolist())
        self.signed_log_.mask_ = log_mask
        self.signed_log_.n_features_in_ = len(columns)
        self.winsorizer_ = Winsorizer(*winsor_quantiles)
        self.winsorizer_.lower_ = np.asarray(clip_lower, dtype=np.float64)
        self.winsorizer_.upper_ = np.asarray(clip_upper, dtype=np.float64)
        self.winsorizer_.n_features_in_ = len(columns)
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(mean, dtype=np.float64)
        scaler.scale_ = np.asarray(scale, dtype=np.float64)
        scaler.var_ = scaler.scale_**2
        scaler.n_features_in_ = len(columns)
        scaler.n_samples_seen_ = 0
        self.scaler_ = scaler
        self.n_features_in_ = len(columns)
        return self
