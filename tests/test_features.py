import numpy as np
import pandas as pd
import pytest

from stages.features import FEATURES, make_features
from tests.conftest import DAY, T0

CUTOFF = T0


def _interactions():
    rows = [  # user_idx, domain, item_idx, days before cutoff (negative = after), rating, window
        (0, "smm", 0, 1, 1.0, "history"), (0, "smm", 1, 10, 3.0, "history"), (0, "zvuk", 0, 2, 5.0, "history"),
        (1, "smm", 0, 40, 1.0, "history"), (1, "smm", 1, -1, 1.0, "label"), (0, "smm", 2, -2, 1.0, "label")]
    frame = pd.DataFrame(rows, columns=["user_idx", "domain", "item_idx", "days", "rating", "window"])
    frame["timestamp"] = CUTOFF - frame.pop("days") * DAY
    frame["domain"] = pd.Categorical(frame["domain"], categories=["smm", "zvuk"])
    return frame


def _candidates():
    frame = pd.DataFrame({"user_idx": [0, 0, 1], "domain": ["smm", "smm", "smm"], "item_idx": [2, 0, 1],
                          "als_score": np.float32([0.5, 0.2, 0.1]), "als_rank": [1.0, 2.0, np.nan],
                          "pop_rank": [np.nan, 1.0, 2.0], "als_user_norm": np.float32([1.0, 1.0, 0.5]),
                          "als_item_norm": np.float32([0.3, 0.2, 0.1]), "recent_rank": [np.nan, np.nan, 1.0],
                          "recent_affinity": np.float32([0.0, 0.0, 0.4]),
                          "als_centered_cosine": np.float32([0.9, -0.1, 0.2]),
                          "taste_plays": np.float32([1.0, 0.5, 0.0]), "lift_same": np.float32([2.0, 1.0, 0.5]),
                          "lift_other": np.float32([0.0, 1.5, 0.5])})
    frame["domain"] = pd.Categorical(frame["domain"], categories=["smm", "zvuk"])
    return frame


def test_features_use_only_events_before_the_cutoff_and_labels_come_from_the_window():
    out = make_features(_candidates(), _interactions(), cutoff=CUTOFF, label_window="label", horizon_days=7)
    assert list(out.columns) == ["user_idx", "domain", "item_idx", *FEATURES, "label"]
    row = out.set_index(["user_idx", "item_idx"])
    # smm before the cut-off: item 0 by users 0 (1 day ago) and 1 (40 days ago), item 1 by user 0 (10 days ago)
    assert row.loc[(0, 0), "item_share_all"] == pytest.approx(2 / 3 * 1000)
    assert row.loc[(0, 0), "item_share_7d"] == pytest.approx(1000)
    assert row.loc[(0, 0), "item_age_days"] == pytest.approx(40)
    assert row.loc[(0, 0), "item_idle_days"] == pytest.approx(1)
    assert row.loc[(0, 2), "item_share_all"] == 0        # item 2 appears only after the cut-off
    # ratings before the cut-off: item 0 has 1 + 1, item 1 has 3 (the rows say 2:1, the ratings 2:3)
    assert row.loc[(0, 0), "item_plays_share_all"] == pytest.approx(2 / 5 * 1000)
    assert row.loc[(1, 1), "item_plays_share_all"] == pytest.approx(3 / 5 * 1000)
    assert row.loc[(0, 0), "item_plays_share_7d"] == pytest.approx(1000)
    assert row.loc[(0, 2), "item_plays_share_30d"] == 0
    assert row.loc[(0, 0), "user_count_domain"] == 2 and row.loc[(0, 0), "user_count_other"] == 1
    assert row.loc[(0, 0), "user_idle_days"] == pytest.approx(1)
    assert row.loc[(1, 1), "user_idle_days_domain"] == pytest.approx(40)
    assert row.loc[(0, 0), "als_score_gap"] == pytest.approx(0.3)
    assert out["label"].tolist() == [1, 0, 1]


def test_no_label_window_means_no_labels():
    out = make_features(_candidates(), _interactions(), cutoff=CUTOFF, label_window=None, horizon_days=7)
    assert out["label"].tolist() == [0, 0, 0]


def test_user_chunks_cover_every_row_once_and_never_split_a_user():
    from stages.features import _user_chunks

    users = np.array([1, 1, 1, 2, 3, 3, 3, 3, 3, 4, 5, 5])
    chunks = _user_chunks(users, rows=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 4), (4, 9), (9, 12)]
    for a, b in zip(chunks[:-1], chunks[1:]):
        assert users[a.stop - 1] != users[b.start]
    assert _user_chunks(users[:0], rows=3) == []


def test_chain_ladder_forecast_recovers_a_shared_decay_and_keeps_old_items_flat():
    from stages.features import chain_ladder_forecast

    # 60 days; one old item (item 0) fills every day up to 1,000 ratings, so daily shares are ratings / 1,000.
    # New items 1..41 are first seen on days 10..50 and all follow one decaying shape at their own level.
    n_days, horizon = 60, 5
    shape = lambda age: 1.0 + 8.0 * np.exp(-age / 4.0)  # noqa: E731
    level = {1 + j: 1.0 + j % 7 for j in range(41)}
    first_day = {1 + j: 10 + j for j in range(41)}
    days, items, ratings = [], [], []
    for day in range(n_days):
        taken = 0.0
        for i in level:
            if day >= first_day[i]:
                days.append(day), items.append(i), ratings.append(level[i] * shape(day - first_day[i]))
                taken += ratings[-1]
        days.append(day), items.append(0), ratings.append(1000.0 - taken)
    days, items, ratings = np.array(days), np.array(items), np.array(ratings)
    age = n_days - days - 0.5  # days before the cut-off at the end of day 59
    forecast = chain_ladder_forecast(items, age, ratings, 43, horizon)

    youngest = 41  # first seen on day 50: ten days observed
    expected = level[youngest] * sum(shape(a) for a in range(10, 10 + horizon))  # / 1,000 shares, per mille
    assert forecast[youngest] == pytest.approx(expected, rel=1e-9)
    # the old item: its mean daily share x the horizon
    assert forecast[0] == pytest.approx(ratings[items == 0].sum() / n_days * horizon, rel=1e-9)
    # item 1 (50 days observed): its factors would need items seen 55 days, which no new item is: flat
    assert forecast[1] == pytest.approx(ratings[items == 1].sum() / 50 * horizon, rel=1e-9)
    assert forecast[42] == 0  # never seen


def test_newcomer_rows_get_the_user_features_of_a_user_new_to_the_rows_domain():
    from stages.features import feature_tables, join_features

    tables = feature_tables(_interactions(), cutoff=CUTOFF, label_window="label", horizon_days=7)
    real = join_features(_candidates(), tables).set_index(["user_idx", "item_idx"])
    newcomer = join_features(_candidates(), tables, newcomers=True).set_index(["user_idx", "item_idx"])
    # user 0: smm events 1 and 10 days ago, one zvuk event 2 days ago; as a newcomer to smm only the zvuk one
    assert real.loc[(0, 0), "user_count_domain"] == 2 and newcomer.loc[(0, 0), "user_count_domain"] == 0
    assert newcomer.loc[(0, 0), "user_count_other"] == 1
    assert real.loc[(0, 0), "user_count_7d"] == 2 and newcomer.loc[(0, 0), "user_count_7d"] == 1
    assert real.loc[(0, 0), "user_idle_days"] == pytest.approx(1)
    assert newcomer.loc[(0, 0), "user_idle_days"] == pytest.approx(2)
    for name in ("user_idle_days_domain", "user_rating_domain", "user_mainstream"):
        assert not np.isnan(real.loc[(0, 0), name]) and np.isnan(newcomer.loc[(0, 0), name])
    # user 1 has no zvuk event: no recency at all; items and labels are the same as the real rows'
    assert np.isnan(newcomer.loc[(1, 1), "user_idle_days"]) and newcomer.loc[(1, 1), "user_count_7d"] == 0
    assert newcomer["label"].tolist() == real["label"].tolist()
    assert newcomer["item_share_all"].tolist() == real["item_share_all"].tolist()


@pytest.mark.parametrize("categorical", [True, False])
def test_sorted_by_user_is_pandas_stable_three_column_sort(categorical):
    from stages.features import sorted_by_user

    rng = np.random.default_rng(3)
    n = 5000
    frame = pd.DataFrame({"user_idx": rng.integers(0, 50, n).astype(np.int32),
                          "domain": rng.choice(["zvuk", "smm"], n),
                          "item_idx": rng.integers(0, 30, n).astype(np.int32),  # repeats: stability shows
                          "als_score": np.arange(n, dtype=np.float32)}, index=rng.permutation(n))
    if categorical:  # categories not in alphabetical order: pandas sorts them by code, not by value
        frame["domain"] = pd.Categorical(frame["domain"], categories=["zvuk", "smm"])
    expected = frame.sort_values(["user_idx", "domain", "item_idx"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(sorted_by_user(frame), expected)
    assert sorted_by_user(frame.iloc[:0]).empty
