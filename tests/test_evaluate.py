import numpy as np
import pandas as pd
import pytest

from stages.evaluate import per_user_metrics


def test_ndcg_hit_recall_by_hand():
    recs = pd.DataFrame({"user_idx": [1] * 4 + [2] * 2, "rank": [1, 2, 3, 4, 1, 2],
                         "item_idx": [10, 11, 11, 12, 20, 21]})
    truth = pd.DataFrame({"user_idx": [1, 1, 2, 3], "item_idx": [11, 12, 99, 30]})
    out = per_user_metrics(recs, truth, k=10)
    # user 1: duplicate 11 dropped -> [10, 11, 12]; hits at positions 1 and 2; IDCG over 2 positions
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3)
    assert out.loc[1, "ndcg"] == pytest.approx(dcg / idcg)
    assert out.loc[1, "hit"] == 1 and out.loc[1, "recall"] == 1
    assert out.loc[2, "ndcg"] == 0 and out.loc[2, "hit"] == 0
    assert out.loc[3, "ndcg"] == 0  # a truth user without recommendations scores 0
    assert sorted(out.index) == [1, 2, 3]


def test_only_the_first_k_count():
    recs = pd.DataFrame({"user_idx": [1] * 3, "rank": [1, 2, 3], "item_idx": [7, 8, 9]})
    truth = pd.DataFrame({"user_idx": [1], "item_idx": [9]})
    assert per_user_metrics(recs, truth, k=2).loc[1, "ndcg"] == 0
    assert per_user_metrics(recs, truth, k=3).loc[1, "ndcg"] == pytest.approx(0.5)
