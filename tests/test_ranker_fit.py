import numpy as np
import pandas as pd
import pytest

from stages.common import PipelineError
from stages.features import FEATURES
from stages import ranker_fit
from stages.ranker_fit import (compile_models, fit_ranker, learning_folds, newcomer_folds, positive_groups,
                               row_major_matrix, score_candidates, training_rows)

PARAMS = dict(n_estimators=50, learning_rate=0.1, num_leaves=7, min_child_samples=5, truncation_level=10,
              early_stopping_rounds=10, valid_share=0.25, seed=1)


def _features(n_users=200, per_user=10, seed=0, with_labels=True):
    """The item with the highest `item_trend` is the one the user takes; als_score is noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_idx": np.repeat(np.arange(n_users), per_user),
                          "domain": pd.Categorical(["smm"] * (n_users * per_user), categories=["smm", "zvuk"]),
                          "item_idx": np.tile(np.arange(per_user), n_users)})
    for name in FEATURES:
        frame[name] = rng.random(len(frame)).astype(np.float32)
    best = frame.groupby("user_idx")["item_trend"].transform("max") == frame["item_trend"]
    frame["label"] = (best & with_labels).astype(np.int8)
    return frame


def test_ranker_learns_the_planted_signal():
    booster, meta = fit_ranker(_features(), **PARAMS)
    test = _features(seed=1)
    scores = score_candidates(booster, meta, test)
    top = test.assign(score=scores).sort_values(["user_idx", "score"], ascending=[True, False])
    first = top.groupby("user_idx").head(1)
    assert first["label"].mean() > 0.6  # random order would give 0.1
    assert max(meta["importance_gain"], key=meta["importance_gain"].get) == "item_trend"


def test_groups_without_positive_are_dropped_and_nothing_to_learn_falls_back():
    features = _features(with_labels=False)
    booster, meta = fit_ranker(features, **PARAMS)
    assert booster is None and meta["kind"] == "als_score" and meta["dropped_groups_without_positive"] == 200
    assert np.array_equal(score_candidates(booster, meta, features), features["als_score"].to_numpy(np.float64))



def test_compiled_models_score_as_lightgbm_with_missing_values(monkeypatch):
    def with_gaps(frame, seed):  # NaNs where the pipeline has them (rank of a source that did not propose the row)
        gaps = np.random.default_rng(seed).random(len(frame)) < 0.3
        return frame.assign(item_trend=frame["item_trend"].mask(gaps), als_rank=frame["als_rank"].mask(~gaps))

    boosters, meta = fit_ranker(with_gaps(_features(), 0), **{**PARAMS, "n_models": 2})
    meta["best_iterations"] = [3, 5]  # fewer trees than the models hold: each must be cut at its own
    test = with_gaps(_features(seed=1), 1)
    assert compile_models(boosters, meta, n_rows=len(test)) is None  # below COMPILE_FROM_ROWS: LightGBM's own
    monkeypatch.setattr(ranker_fit, "COMPILE_FROM_ROWS", len(test))
    compiled = compile_models(boosters, meta, n_rows=len(test))
    assert len(compiled) == 2
    native, own = score_candidates(boosters, meta, test, compiled), score_candidates(boosters, meta, test)
    assert np.abs(native - own).max() < 1e-9 and own.std() > 0.01


def test_row_major_matrix_holds_the_frames_values_in_row_order_across_blocks():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.random(7).astype(np.float32), "b": rng.integers(0, 9, 7).astype(np.int16),
                          "c": np.r_[np.nan, rng.random(6)], "skipped": np.arange(7)})
    matrix = row_major_matrix(frame, ["c", "a", "b"], block_rows=3)  # blocks 3 + 3 + 1 rows
    assert matrix.flags.c_contiguous and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, frame[["c", "a", "b"]].to_numpy(dtype=np.float64))
    assert row_major_matrix(frame.iloc[:0], ["a", "b"]).shape == (0, 2)


def test_same_seed_same_model():
    a, _ = fit_ranker(_features(), **PARAMS)
    b, _ = fit_ranker(_features(), **PARAMS)
    assert a[0].model_to_string() == b[0].model_to_string()


def test_several_models_hold_out_different_users_and_scores_are_their_mean():
    features = _features()
    boosters, meta = fit_ranker(features, **{**PARAMS, "n_models": 3})
    assert len(boosters) == 3 and meta["n_models"] == 3 and len(meta["best_iterations"]) == 3
    # Model 0 is the single model of the same seed; the others differ (other held-out users, other seeds).
    single, _ = fit_ranker(features, **PARAMS)
    assert boosters[0].model_to_string() == single[0].model_to_string()
    assert len({b.model_to_string() for b in boosters}) == 3
    test = _features(seed=1)
    each = [b.predict(test[meta["features"]], num_iteration=n) for b, n in zip(boosters, meta["best_iterations"])]
    assert np.allclose(score_candidates(boosters, meta, test), np.mean(each, axis=0))


def test_budget_rows_caps_the_number_of_models():
    features = _features()  # 200 groups of 10 rows, all with a positive: 2,000 training rows
    boosters, meta = fit_ranker(features, **{**PARAMS, "n_models": 5, "budget_rows": 4_500})
    assert len(boosters) == meta["n_models"] == 2
    boosters, meta = fit_ranker(features, **{**PARAMS, "n_models": 5, "budget_rows": 100})
    assert len(boosters) == meta["n_models"] == 1  # never fewer than one
    boosters, meta = fit_ranker(features, **{**PARAMS, "n_models": 3, "budget_rows": 0})
    assert len(boosters) == meta["n_models"] == 3  # 0: no cap
    # 1,000 rows of simulated newcomers on top: the budget counts the 2,000 real ones
    with_newcomers = training_rows({"train": features}, {"train": _features(n_users=100, seed=4)})
    boosters, meta = fit_ranker(with_newcomers, **{**PARAMS, "n_models": 5, "budget_rows": 4_500})
    assert len(boosters) == meta["n_models"] == 2 and meta["rows"] == 3_000


def test_ranker_directory_round_trip(tmp_path, monkeypatch):
    from stages import ranker_fit

    features, early = _features(), _features(seed=2)
    newcomers = {"train": _features(n_users=50, seed=4), "early": early.iloc[:0]}  # the early fold: none
    (tmp_path / "data/features").mkdir(parents=True)
    features.to_parquet(tmp_path / "data/features/train.parquet")
    early.to_parquet(tmp_path / "data/features/early.parquet")
    for fold, frame in newcomers.items():
        frame.to_parquet(tmp_path / f"data/features/{fold}_newcomers.parquet")
    monkeypatch.chdir(tmp_path)
    ranker = {**PARAMS, "n_models": 2, "budget_rows": 0, "two_windows_below_groups": 201,  # 200 groups: two
              "newcomers_below_groups": 201}
    monkeypatch.setattr(ranker_fit, "load_params", lambda: {"ranker": ranker})
    stale = tmp_path / "models/ranker/holdout/model_5.txt"  # from an earlier run with more models
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    ranker_fit.main(["holdout"])
    assert sorted(p.name for p in (tmp_path / "models/ranker/holdout").iterdir()) == [
        "meta.json", "model_0.txt", "model_1.txt"]
    boosters, meta = ranker_fit.load_ranker(tmp_path / "models/ranker/holdout")
    # the holdout ranker learned on the train and the early fold, and on the train fold's 50 newcomers
    assert meta["groups"] == 450 and meta["newcomer_rows"] == 500
    fitted, _ = fit_ranker(training_rows({"train": features, "early": early}, newcomers), **{**PARAMS, "n_models": 2})
    assert np.allclose(score_candidates(boosters, meta, features), score_candidates(fitted, meta, features))
    assert meta["label_windows"] == 2

    ranker["two_windows_below_groups"] = 200  # the train fold's 200 groups are enough: the early fold stays out
    ranker_fit.main(["holdout"])
    boosters, meta = ranker_fit.load_ranker(tmp_path / "models/ranker/holdout")
    assert meta["groups"] == 250 and meta["label_windows"] == 1

    ranker["newcomers_below_groups"] = 200  # ... and so are they without the simulated newcomers
    ranker_fit.main(["holdout"])
    boosters, meta = ranker_fit.load_ranker(tmp_path / "models/ranker/holdout")
    assert meta["groups"] == 200 and meta["newcomer_rows"] == 0


def test_the_earlier_fold_joins_only_while_the_latest_is_short_of_groups():
    features = _features()
    features.loc[features["user_idx"] == 0, "label"] = 0  # one group without a positive
    assert positive_groups(features) == 199
    assert learning_folds("holdout", 199, 10_000) == ("train", "early")
    assert learning_folds("final", 199, 10_000) == ("holdout", "train")
    assert learning_folds("holdout", 199, 199) == ("train",)
    assert learning_folds("final", 199, 0) == ("holdout",)  # 0: never


def test_the_simulated_newcomers_join_only_while_the_latest_fold_is_short_of_groups():
    assert newcomer_folds(("train", "early"), 199, 200) == ("train", "early")
    assert newcomer_folds(("holdout",), 199, 200) == ("holdout",)
    assert newcomer_folds(("train", "early"), 200, 200) == ()
    assert newcomer_folds(("train",), 0, 0) == ()  # 0: never


def test_a_users_rows_of_two_label_windows_are_two_queries():
    # The same 200 users in two windows: 400 queries of 10 rows, not 200 of 20 (which would rank the two
    # windows' candidates against each other, and give each query two positives).
    rows = training_rows({"train": _features(), "early": _features(seed=2)})
    assert rows["window"].astype(str).value_counts().to_dict() == {"label": 2000, "early": 2000}
    _, meta = fit_ranker(rows, **PARAMS)
    assert meta["groups"] == 400 and meta["positives"] == 400
    _, one = fit_ranker(rows.drop(columns="window"), **PARAMS)
    assert one["groups"] == 200


def test_simulated_newcomers_are_queries_of_their_own_and_never_judge_early_stopping(monkeypatch):
    real, newcomers = _features(), _features(seed=3)
    rows = training_rows({"train": real}, {"train": newcomers})
    assert rows["newcomer"].tolist() == [0] * len(real) + [1] * len(newcomers)
    assert positive_groups(rows) == 400  # the same 200 users, each twice
    held_out = []
    original = ranker_fit._fit_one

    def spy(rows, **kwargs):
        booster, valid = original(rows, **kwargs)
        held_out.append(valid)
        return booster, valid

    monkeypatch.setattr(ranker_fit, "_fit_one", spy)
    _, meta = fit_ranker(rows, **PARAMS)
    assert meta["groups"] == 400
    assert len(held_out[0]) and (held_out[0]["newcomer"] == 0).all()


def test_out_of_range_param_names_the_key():
    with pytest.raises(PipelineError, match=r"ranker.learning_rate=0 is out of range"):
        fit_ranker(_features(), **{**PARAMS, "learning_rate": 0})
