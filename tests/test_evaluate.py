import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stages.evaluate import fold_segments, per_user_metrics, segment_recall, validation_metrics


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


def test_validation_splits_users_by_their_events_before_the_cutoff():
    # users 0 and 1 have 2 and 7 events; ALS puts the truth item first for user 0 only, popular for user 1 only
    features = pd.DataFrame({"user_idx": [0, 0, 1, 1], "domain": ["smm"] * 4, "item_idx": [5, 6, 5, 6],
                             "als_rank": [1.0, 2.0, 2.0, 1.0], "recent_rank": [np.nan] * 4,
                             "pop_rank": [2.0, 1.0, 1.0, 2.0]})
    truth = {"smm": pd.DataFrame({"user_idx": [0, 1], "item_idx": [5, 5]}),
             "zvuk": pd.DataFrame({"user_idx": np.array([], int), "item_idx": np.array([], int)})}
    out = validation_metrics(features, truth, user_events=np.array([2, 7]))
    low, high = out["by_events"]["1-2"], out["by_events"]["5+"]
    assert low["users"]["smm"] == 1 and high["users"]["smm"] == 1 and out["by_events"]["3-4"]["users"]["smm"] == 0
    assert low["als"]["smm"] == 1.0 and low["popular"]["smm"] == pytest.approx(1 / np.log2(3))
    assert high["popular"]["smm"] == 1.0 and high["als"]["smm"] == pytest.approx(1 / np.log2(3))
    assert out["als"]["zvuk"] == 0.0  # no truth users: 0, not NaN


def test_segment_recall_counts_each_truth_item_in_its_users_segment_and_unknown_users_as_cold():
    # user 0 warm (1 of 2 truth items found), user 1 cross (1 of 1), user 2 has no segment: cold (1 of 4)
    segment_of = pd.Series(["warm", "cross"], index=[0, 1])
    found = np.array([True, False, True, True, False, False, False])
    out = segment_recall(found, np.array([0, 0, 1, 2, 2, 2, 2]), segment_of)
    assert out == {"recall_total_warm": 0.5, "recall_total_cross": 1.0, "recall_total_cold": 0.25}
    assert segment_recall(found[:2], np.array([0, 0]), segment_of)["recall_total_cross"] == 0.0  # no such item


def test_validation_reports_candidate_recall_per_segment_when_given_segments():
    features = pd.DataFrame({"user_idx": [0, 1], "domain": ["smm"] * 2, "item_idx": [5, 6], "als_rank": [1.0, np.nan],
                             "recent_rank": [np.nan] * 2, "pop_rank": [np.nan, 1.0]})
    truth = {"smm": pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [5, 7, 6]}),
             "zvuk": pd.DataFrame({"user_idx": np.array([], int), "item_idx": np.array([], int)})}
    segments = {"smm": pd.Series(["warm", "cross"], index=[0, 1]), "zvuk": pd.Series([], dtype=str)}
    out = validation_metrics(features, truth, np.array([3, 1]), segments)
    assert out["candidate_recall"]["smm"] == pytest.approx(2 / 3, abs=1e-5)  # rounded to 5 places
    assert out["candidate_recall_by_segment"]["smm"] == {"recall_total_warm": 0.5, "recall_total_cross": 1.0,
                                                         "recall_total_cold": 0.0}
    assert "candidate_recall_by_segment" not in validation_metrics(features, truth, np.array([3, 1]))


def test_fold_segments_name_the_served_users_as_cold_split_does(tmp_path):
    # items 0-1 smm, 2 zvuk; user 0 has smm and zvuk, user 1 zvuk only, user 2 nothing, user 3 one smm event
    items = pd.DataFrame({"domain": ["smm", "smm", "zvuk"], "col": [0, 1, 2]})
    matrix = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0]], np.float32))
    pd.DataFrame({"domain": pd.Categorical(["smm"] * 4 + ["zvuk"] * 2, categories=["smm", "zvuk"]),
                  "user_idx": [0, 1, 2, 3, 0, 3]}).to_parquet(tmp_path / "train_users.parquet")
    out = fold_segments(matrix, items, "train", min_interactions=1, candidates=tmp_path)
    assert out["smm"].to_dict() == {0: "warm", 1: "cross", 2: "cold", 3: "warm"}
    assert out["zvuk"].to_dict() == {0: "warm", 3: "cross"}
    strict = fold_segments(matrix, items, "train", min_interactions=2, candidates=tmp_path)
    assert strict["smm"].to_dict() == {0: "warm", 1: "cold", 2: "cold", 3: "cold"}  # 1 event each: cold
