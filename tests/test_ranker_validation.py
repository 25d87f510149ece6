import numpy as np
import pandas as pd
import pytest

from benchmarks.ranker_validation import candidate_ndcg, validate
from tests.test_ranker_fit import PARAMS, _features


def test_candidate_ndcg_by_hand():
    frame = pd.DataFrame({"user_idx": [0, 0, 0, 1, 1, 2, 2, 2], "domain": ["smm"] * 8,
                          "label": [1, 0, 0, 0, 0, 1, 0, 1]})
    scores = np.array([2.0, 3.0, 1.0, 5.0, 4.0, 9.0, 8.0, 7.0])
    # user 0: the positive second -> 1/log2(3); user 1: no positive, skipped; user 2: positives first and third
    # of two -> (1 + 1/2) / (1 + 1/log2(3))
    expected = (1 / np.log2(3) + 1.5 / (1 + 1 / np.log2(3))) / 2
    assert candidate_ndcg(frame, scores) == pytest.approx(expected)


def test_validate_scores_every_number_of_models_and_finds_the_planted_signal():
    scores = validate(_features(n_users=400), PARAMS, [1, 3])
    assert sorted(scores) == [1, 3]
    assert min(scores.values()) > 0.8  # the positive is the top-trend item; a random order gives about 0.45


def test_five_folds_keep_every_user_out_once_and_the_first_fold_is_the_single_fifth():
    from benchmarks.ranker_validation import KEPT_OUT_SEED, KEPT_OUT_SHARE, MAX_FOLDS, kept_out_fold
    from stages.ranker_fit import split_users

    users = np.arange(5000)
    fold_of = kept_out_fold(users)
    assert sorted(np.unique(fold_of)) == list(range(MAX_FOLDS))
    assert np.array_equal(fold_of == 0, split_users(users, KEPT_OUT_SHARE, KEPT_OUT_SEED))
    scores = validate(_features(n_users=400), PARAMS, [1], folds=MAX_FOLDS)
    assert scores[1] > 0.8
    with pytest.raises(SystemExit):
        validate(_features(n_users=40), PARAMS, [1], folds=MAX_FOLDS + 1)


def test_whole_model_ndcg_by_hand():
    from benchmarks.ranker_validation import whole_model_ndcg

    frame = pd.DataFrame({"user_idx": [0, 0, 1, 0], "domain": ["smm", "smm", "smm", "zvuk"], "item_idx": [5, 6, 5, 9]})
    scores = np.array([1.0, 2.0, 3.0, 1.0])
    truth = {"smm": pd.DataFrame({"user_idx": [0, 1, 7], "item_idx": [5, 8, 5]}),  # user 7 has no candidates
             "zvuk": pd.DataFrame({"user_idx": [0], "item_idx": [9]})}
    # smm: user 0 hits at the second place (1/log2(3)), user 1 misses; user 7 is not among frame's users
    expected_smm = (1 / np.log2(3) + 0.0) / 2
    assert whole_model_ndcg(frame, scores, truth) == pytest.approx(np.sqrt(expected_smm * 1.0))


def test_baseline_orders_rank_popular_by_pop_rank_and_als_with_popular_after():
    from benchmarks.ranker_validation import baseline_orders

    frame = pd.DataFrame({"pop_rank": [np.nan, 2.0, 1.0, np.nan], "als_rank": [2.0, np.nan, np.nan, 1.0]})
    orders = baseline_orders(frame)
    assert list(np.argsort(-orders["popular"], kind="stable")) == [2, 1, 0, 3]  # candidates of no rank last
    assert list(np.argsort(-orders["als"], kind="stable")) == [3, 0, 2, 1]


def test_segment_ndcg_splits_users_by_segment_and_scores_each_model():
    from benchmarks.ranker_validation import segment_ndcg

    frame = pd.DataFrame({"user_idx": [0, 0, 1, 1, 2], "domain": ["smm"] * 4 + ["zvuk"],
                          "item_idx": [5, 6, 5, 6, 9]})
    scores = {"a": np.array([2.0, 1.0, 2.0, 1.0, 1.0]), "b": np.array([1.0, 2.0, 1.0, 2.0, 1.0])}
    truth = {"smm": pd.DataFrame({"user_idx": [0, 1], "item_idx": [5, 6]}),
             "zvuk": pd.DataFrame({"user_idx": [2], "item_idx": [9]})}
    segments = {"smm": pd.Series(["warm", "cross"], index=[0, 1]), "zvuk": pd.Series(dtype=object)}
    table = segment_ndcg(frame, scores, truth, segments).set_index(["domain", "segment"])
    second = 1 / np.log2(3)
    # a ranks item 5 first: user 0 (warm) hits first, user 1 (cross) second; b the other way round
    assert table.loc[("smm", "warm"), ["users", "a", "b"]].tolist() == pytest.approx([1, 1.0, second])
    assert table.loc[("smm", "cross"), ["users", "a", "b"]].tolist() == pytest.approx([1, second, 1.0])
    assert table.loc[("zvuk", "cold"), "a"] == pytest.approx(1.0)  # a user without a segment counts as cold
    assert len(table) == 3


def test_served_scores_order_cold_users_as_cold_split_serves_them():
    from benchmarks.ranker_validation import served_scores

    # user 0 is warm, user 1 cold; row 3 is a cold user's non-popular candidate
    frame = pd.DataFrame({"user_idx": [0, 0, 1, 1, 1], "domain": ["smm"] * 5,
                          "pop_rank": [1.0, 2.0, 1.0, 2.0, np.nan], "als_rank": [np.nan] * 5})
    scores = np.array([1.0, 2.0, 1.0, 2.0, 3.0])
    segments = {"smm": pd.Series(["warm", "cold"], index=[0, 1]), "zvuk": pd.Series(dtype=object)}
    by_ranker = served_scores(frame, scores, segments, "ranker")
    assert by_ranker[:4].tolist() == scores[:4].tolist() and by_ranker[4] < by_ranker[2]
    by_popularity = served_scores(frame, scores, segments, "popular")
    assert by_popularity[:2].tolist() == [1.0, 2.0]  # warm: the ranker's
    assert by_popularity[2] > by_popularity[3] > by_popularity[4]  # cold: pop_rank order, others last
    by_blend = served_scores(frame, scores, segments, "blend")  # cold: the ranks tie, the more popular first
    assert by_blend[:2].tolist() == [1.0, 2.0] and by_blend[2] > by_blend[3] > by_blend[4]


def test_a_kept_out_users_newcomer_rows_are_never_fitted_on(monkeypatch):
    from benchmarks import ranker_validation
    from benchmarks.ranker_validation import kept_out_fold, kept_out_scores

    features = _features(n_users=100)
    newcomers = {"train": _features(n_users=100, seed=5)}
    fitted = []

    def fake_fit(rows, **params):
        fitted.append(rows)
        return ["model"], {}

    monkeypatch.setattr(ranker_validation, "fit_ranker", fake_fit)
    monkeypatch.setattr(ranker_validation, "model_scores", lambda boosters, meta, test: [np.zeros(len(test))])
    test, _ = kept_out_scores(features, PARAMS, [1], folds=2, newcomers=newcomers)
    for fold, rows in enumerate(fitted):
        kept_out = kept_out_fold(rows["user_idx"].to_numpy()) == fold
        assert not kept_out.any()  # neither their own rows nor their newcomer copies
        assert (rows["newcomer"] == 1).sum() == (kept_out_fold(np.arange(100)) != fold).sum() * 10
    # scored: the kept-out users' real rows only, never a newcomer copy
    assert len(test) == (kept_out_fold(features["user_idx"].to_numpy()) < 2).sum() and "newcomer" not in test.columns


def test_forward_fits_on_the_earlier_fold_only_and_scores_every_row_of_the_later_one(monkeypatch):
    from benchmarks import ranker_validation
    from benchmarks.ranker_validation import forward_scores

    earlier, later = _features(n_users=60), _features(n_users=80, seed=3)
    newcomers = _features(n_users=30, seed=5)
    fitted, scored = [], []

    def fake_fit(rows, **params):
        fitted.append(rows)
        return ["model"] * params["n_models"], {}

    def fake_scores(boosters, meta, test):
        scored.append(test)
        return [np.full(len(test), float(m)) for m in range(len(boosters))]

    monkeypatch.setattr(ranker_validation, "fit_ranker", fake_fit)
    monkeypatch.setattr(ranker_validation, "model_scores", fake_scores)
    test, scores = forward_scores(earlier, later, PARAMS, [1, 3], newcomers)
    # one fit, on the earlier fold's rows and its newcomers' (tagged apart), nothing of the later fold
    assert len(fitted) == 1 and len(fitted[0]) == len(earlier) + len(newcomers)
    assert (fitted[0]["newcomer"] == 1).sum() == len(newcomers)
    assert set(fitted[0]["window"].astype(str)) == {"early"}
    assert test is later and scored[0] is later
    # n models: the mean of the first n (models m score m)
    assert np.all(scores[1] == 0.0) and np.all(scores[3] == 1.0)
    fitted.clear()
    forward_scores(earlier, later, PARAMS, [1], newcomers.iloc[:0])  # an empty newcomer table: none
    assert len(fitted[0]) == len(earlier) and "newcomer" not in fitted[0].columns


def test_forward_learns_the_planted_signal_across_folds():
    from benchmarks.ranker_validation import forward_scores

    test, scores = forward_scores(_features(n_users=300), _features(n_users=200, seed=3), PARAMS, [1])
    assert candidate_ndcg(test, scores[1]) > 0.8  # a random order gives about 0.45
