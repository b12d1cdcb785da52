"""Customer tiering: indicators in, named tiers out (no Dagster, no file paths here).

The public API; see :mod:`ml.model` for the method and ``docs/tiering.md`` for
the write-up.
"""

from ml.factor import (
    BartlettResult,
    FactorAnalyzer,
    SamplingAdequacyWarning,
    align_factors,
    bartlett_sphericity,
    correlation_matrix,
    kmo,
    kmo_verdict,
    varimax,
)
from ml.hysteresis import apply_hysteresis
from ml.model import DORMANT_SEGMENT, MODEL_TABLES, TieringModel
from ml.naming import TIER_RANK, TIERS, NamingRules, name_segments, segment_scores
from ml.preprocessing import (
    ALL_INDICATORS,
    INDICATOR_COLUMNS,
    LOG_COLUMNS,
    IndicatorPreprocessor,
    SignedLogTransformer,
    Winsorizer,
    signed_log1p,
)
from ml.segmentation import (
    KMeansSegmenter,
    cluster_quality,
    k_diagnostics,
    match_segments,
    nearest_centroid,
)

__all__ = [
    "ALL_INDICATORS",
    "DORMANT_SEGMENT",
    "INDICATOR_COLUMNS",
    "LOG_COLUMNS",
    "MODEL_TABLES",
    "TIERS",
    "TIER_RANK",
    "BartlettResult",
    "FactorAnalyzer",
    "IndicatorPreprocessor",
    "KMeansSegmenter",
    "NamingRules",
    "SamplingAdequacyWarning",
    "SignedLogTransformer",
    "TieringModel",
    "Winsorizer",
    "align_factors",
    "apply_hysteresis",
    "bartlett_sphericity",
    "cluster_quality",
    "correlation_matrix",
    "k_diagnostics",
    "kmo",
    "kmo_verdict",
    "match_segments",
    "name_segments",
    "nearest_centroid",
    "segment_scores",
    "signed_log1p",
    "varimax",
]
