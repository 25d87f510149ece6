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
