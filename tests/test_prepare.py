import logging

import numpy as np
import pandas as pd
import pytest

from stages.common import PipelineError, horizon_of
from stages.prepare import merge_history, prepare_domain, split_windows, time_windows, validate_interactions
from tests.conftest import DAY, T0, smm_frame, zvuk_frame


def test_validate_accepts_other_order_extra_columns_and_safe_dtypes():
    frame = zvuk_frame([(1_000_001, 10, 0, 2)])
    frame["extra"] = "x"
    frame = frame.astype({"user_id": "int32", "rating": "float64"})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    out = validate_interactions(frame, domain="zvuk", name="train_zvuk.parquet")
    assert list(out.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert out.iloc[0].tolist() == [1_000_001, 10, T0, 2.0]
    assert out.dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float64"]


def test_validate_reorders_columns_without_copying_them():
    # The raw zvuk file (its own column order, integer plays) has 36M rows at full size: copying the columns
    # into one pandas block, here and in merge_history, cost 0.6 GB of prepare zvuk's peak.
    frame = zvuk_frame([(1, 10, 0, 2), (2, 11, 1, 3)])
    out = validate_interactions(frame, domain="zvuk", name="train_zvuk.parquet")
    for column in ("user_id", "item_id", "timestamp"):
        assert np.shares_memory(out[column].to_numpy(), frame[column].to_numpy()), column


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="rating"), "train_smm.parquet: missing column rating"),
    (lambda f: f.assign(item_id=["a"]), "train_smm.parquet: column item_id must be integer"),
    (lambda f: f.assign(rating=[0.0]), "column rating has 1 value(s) that are not positive"),
    (lambda f: f.assign(rating=[np.inf]), "column rating has 1 value(s) that are not positive"),
    (lambda f: f.assign(user_id=[None]), "column user_id has 1 null value(s)"),
    (lambda f: f.assign(timestamp=[T0 // 10**9]), "column timestamp has 1 value(s) outside 2000..2100"),
    (lambda f: f.assign(user_id=[1.5]), "column user_id has non-integer values"),
])
def test_validate_rejects_with_a_message_that_names_file_and_column(change, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_interactions(change(smm_frame([(1_000_001, 10, 0, 1.554808)])), domain="smm",
                              name="train_smm.parquet")


def test_merge_history_drops_copies_and_aggregates_repeats(caplog):
    train = validate_interactions(smm_frame([(1_000_001, 10, 0, 1.5), (1_000_001, 11, 1, 2.8)]), domain="smm",
                                  name="t")
    test = validate_interactions(smm_frame([(1_000_001, 10, 0, 1.5), (1_000_001, 11, 3, 2.8)]), domain="smm",
                                 name="t")
    events, n_repeated = merge_history([train, test], name="t")
    assert n_repeated == 1  # item 10 is an exact copy (dropped), item 11 is a repeat (aggregated)
    assert events[["item_id", "timestamp", "rating"]].values.tolist() == [[10, T0, 1.5], [11, T0 + 3 * DAY, 5.6]]
    assert "1 (user, item) pairs" in caplog.text


def test_merge_history_finds_copies_among_three_rows_of_a_pair_and_keeps_first_appearance_on_ties():
    # item 10: two train rows and, in test, a copy of the first one that the second sits between
    train = validate_interactions(smm_frame([(1_000_002, 12, 2, 1.5), (1_000_001, 10, 0, 1.5), (1_000_001, 10, 1, 2.8),
                                             (1_000_003, 13, 2, 1.5)]), domain="smm", name="t")
    test = validate_interactions(smm_frame([(1_000_001, 10, 0, 1.5)]), domain="smm", name="t")
    events, n_repeated = merge_history([train, test], name="t")
    assert n_repeated == 1
    # the copy of (10, day 0) is dropped, the repeat (10, day 1) is summed; day-2 ties keep the input order
    assert events[["item_id", "timestamp", "rating"]].values.tolist() == [
        [10, T0 + DAY, 4.3], [12, T0 + 2 * DAY, 1.5], [13, T0 + 2 * DAY, 1.5]]


def test_merge_history_agrees_with_a_plain_pandas_merge_on_random_rows():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        rows = pd.DataFrame({"user_id": rng.integers(1, 4, n), "item_id": rng.integers(1, 4, n),
                             "timestamp": T0 + rng.integers(0, 3, n) * DAY, "rating": rng.integers(1, 3, n) * 1.5})
        parts = [rows, rows.sample(frac=0.5, random_state=int(rng.integers(1000)))]
        events, n_repeated = merge_history(parts, name="t")
        pairs = (pd.concat(parts).drop_duplicates().groupby(["user_id", "item_id"])
                 .agg(timestamp=("timestamp", "max"), rating=("rating", "sum"), rows=("rating", "size")))
        assert n_repeated == int((pairs["rows"] > 1).sum())
        assert events["timestamp"].is_monotonic_increasing
        got = events.set_index(["user_id", "item_id"]).sort_index()
        assert got[["timestamp", "rating"]].equals(pairs[["timestamp", "rating"]])


def test_windows_split_history_early_label_holdout():
    end = T0 + 30 * DAY  # windows of 7 days: early from day 9 (+1 ns), label from 16, holdout from 23
    windows = time_windows(end, horizon_days=7)
    assert horizon_of(windows) == 7  # what the features stage reads back as the forecast horizon
    days = [0, 9, 10, 16, 17, 24, 30]
    events = validate_interactions(smm_frame([(1_000_001, 10 + k, day, 1.5) for k, day in enumerate(days)]),
                                   domain="smm", name="t")
    tagged = split_windows(events, windows)
    assert tagged["window"].astype(str).tolist() == ["history", "history", "early", "early", "label", "holdout",
                                                     "holdout"]


def test_a_horizon_that_leaves_the_early_fold_no_history_warns(caplog):
    frame = smm_frame([(1_000_001, 10, 0, 1.5)])
    with caplog.at_level(logging.WARNING):
        prepare_domain(frame, frame, None, domain="smm", end_ns=T0 + 30 * DAY, start_ns=T0, horizon_days=10)
    assert "the early fold has no history" in caplog.text


def test_horizon_longer_than_the_data_is_rejected_before_work():
    frame = smm_frame([(1_000_001, 10, 0, 1.5)])
    with pytest.raises(PipelineError, match=r"eval.horizon_days=20 is out of range"):
        prepare_domain(frame, frame, None, domain="smm", end_ns=T0 + 30 * DAY, start_ns=T0, horizon_days=20)


def test_targets_are_test_users_plus_targets_file():
    train = smm_frame([(1_000_001, 10, 0, 1.5), (1_000_002, 11, 1, 1.5)])
    test = train.iloc[:1]
    targets = pd.DataFrame({"user_id": [9_000_000, 1_000_001]})
    _, users, _ = prepare_domain(train, test, targets, domain="smm", end_ns=T0 + 30 * DAY, start_ns=T0,
                                 horizon_days=7)
    assert users["user_id"].tolist() == [1_000_001, 9_000_000]
