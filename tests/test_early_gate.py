"""early-gate: the early fold is computed exactly when the holdout ranker will learn on it."""
from __future__ import annotations

import pandas as pd
import pytest

from stages.common import PipelineError
from stages.early_gate import early_fold_needed


def _train_fold() -> pd.DataFrame:
    """Three queries with a positive (user 10 in both domains, user 11 in zvuk), one without (user 12 in smm)."""
    return pd.DataFrame({
        "user_idx": [10, 10, 10, 11, 11, 12, 12],
        "domain": pd.Categorical(["smm", "smm", "zvuk", "zvuk", "zvuk", "smm", "smm"], categories=["smm", "zvuk"]),
        "item_idx": [500, 501, 700, 701, 702, 502, 503],
        "label": [1, 0, 1, 1, 0, 0, 0],
    })


def test_needed_while_the_train_fold_has_fewer_positive_queries_than_the_threshold():
    assert early_fold_needed(_train_fold(), two_windows_below_groups=4) == (True, 3)
    assert early_fold_needed(_train_fold(), two_windows_below_groups=3) == (False, 3)
    assert early_fold_needed(_train_fold(), two_windows_below_groups=0) == (False, 3)  # 0: never two windows


def test_an_empty_train_fold_needs_the_early_one():
    empty = _train_fold().iloc[:0]
    assert early_fold_needed(empty, two_windows_below_groups=1) == (True, 0)


def test_a_negative_threshold_names_the_key():
    with pytest.raises(PipelineError, match="ranker.two_windows_below_groups"):
        early_fold_needed(_train_fold(), two_windows_below_groups=-1)
