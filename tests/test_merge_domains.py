import numpy as np
import pandas as pd
import pytest

from stages.common import PipelineError
from stages.merge_domains import confidence, merge_domains
from tests.conftest import T0


def _events(domain_rows):
    frame = pd.DataFrame(domain_rows, columns=["user_id", "item_id", "timestamp", "rating", "window"])
    frame["window"] = pd.Categorical(frame["window"], categories=["history", "label", "holdout"])
    return frame


EVENTS = {
    # smm item 5 and zvuk item 5 are different items; smm ids are not contiguous.
    "smm": _events([(2_000_000, 5, T0, 1.554808, "history"), (3_000_000, 900, T0, 2.802427, "label")]),
    "zvuk": _events([(2_000_000, 5, T0, 1, "history"), (4_000_000, 7, T0, 3, "holdout")]),
}
TARGETS = {"smm": pd.DataFrame({"user_id": [5_000_000]}), "zvuk": pd.DataFrame({"user_id": [2_000_000]})}


def test_maps_are_explicit_and_items_never_collide():
    users, items, interactions, _ = merge_domains(EVENTS, TARGETS, weighting="binary", smm_weight=1.0,
                                                  zvuk_weight=1.0)
    assert users["user_id"].tolist() == [2_000_000, 3_000_000, 4_000_000, 5_000_000]
    assert users["user_idx"].tolist() == [0, 1, 2, 3]
    assert items[["domain", "item_id", "item_idx", "col"]].astype(str).values.tolist() == [
        ["smm", "5", "0", "0"], ["smm", "900", "1", "1"], ["zvuk", "5", "0", "2"], ["zvuk", "7", "1", "3"]]
    # user 2_000_000 saw smm 5 and zvuk 5: two different columns
    assert sorted(interactions.loc[interactions["user_idx"] == 0, "col"].tolist()) == [0, 2]


def test_each_fold_matrix_holds_only_what_the_fold_may_see():
    _, _, _, matrices = merge_domains(EVENTS, TARGETS, weighting="binary", smm_weight=1.0, zvuk_weight=1.0)
    assert matrices["train"].nnz == 2       # history only
    assert matrices["holdout"].nnz == 3     # + label window
    assert matrices["final"].nnz == 4       # everything
    assert matrices["final"].shape == (4, 4)


def test_confidence_weights():
    rating = np.array([1.554808, 2 * 2.802427])
    assert confidence(rating, weighting="log", median=1.554808)[0] == pytest.approx(1.0)
    assert confidence(rating, weighting="linear", median=1.554808)[1] == pytest.approx(5.604854 / 1.554808)
    assert confidence(rating, weighting="binary", median=1.554808).tolist() == [1.0, 1.0]
    _, _, interactions, _ = merge_domains(EVENTS, TARGETS, weighting="log", smm_weight=2.0, zvuk_weight=1.0)
    smm_w = interactions.loc[interactions["domain"] == "smm", "weight"].to_numpy()
    median = np.median([1.554808, 2.802427])
    assert smm_w == pytest.approx(2.0 * np.log2(1 + np.array([1.554808, 2.802427]) / median), rel=1e-6)


def test_unknown_weighting_names_the_key():
    with pytest.raises(PipelineError, match=r"merge.weighting='sqrt' is out of range"):
        merge_domains(EVENTS, TARGETS, weighting="sqrt", smm_weight=1.0, zvuk_weight=1.0)
