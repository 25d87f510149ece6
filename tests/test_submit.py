import numpy as np
import pandas as pd
import pytest

from stages.common import PipelineError
from stages.submit import check_submission, make_submission

USERS = pd.DataFrame({"user_id": [3_000_000, 1_000_000], "user_idx": [1, 0]})
ITEMS = pd.DataFrame({"item_id": np.arange(100, 112), "item_idx": np.arange(12)})


def _seen_in(history: dict):
    return lambda users, items: np.array([i in history.get(u, ()) for u, i in zip(users, items)], dtype=bool)


def _recs(users=(0, 1), n=10):
    return pd.DataFrame({"user_idx": np.repeat(users, n), "rank": np.tile(np.arange(1, n + 1), len(users)),
                         "item_idx": np.tile(np.arange(n)[::-1], len(users))})


def test_submission_maps_back_to_external_ids_in_order():
    sub = make_submission(_recs(), USERS, ITEMS, np.array([3_000_000, 1_000_000]))
    assert sub["user_id"].tolist() == [1_000_000, 3_000_000] and sub["user_id"].dtype == np.int64
    assert sub["item_id"].iloc[0] == list(range(109, 99, -1))
    check_submission(sub, np.array([1_000_000, 3_000_000]), ITEMS["item_id"].to_numpy(), _seen_in({}))


def test_missing_user_and_short_lists_are_errors():
    with pytest.raises(PipelineError, match="1 target user"):
        make_submission(_recs(users=(0,)), USERS, ITEMS, np.array([3_000_000, 1_000_000]))
    with pytest.raises(PipelineError, match="cannot recommend 10 distinct unseen items"):
        make_submission(_recs(n=9), USERS, ITEMS, np.array([3_000_000, 1_000_000]))


@pytest.mark.parametrize("items, history, message", [
    ([100] * 10, {}, "10 items, 1 distinct"),
    (list(range(100, 109)), {}, "9 items"),
    (list(range(100, 110)), {1_000_000: {105}}, "already in the user's history"),
    (list(range(101, 111)) [:-1] + [999], {}, "not in the domain's catalog"),
])
def test_contract_violations_are_caught(items, history, message):
    sub = pd.DataFrame({"user_id": np.array([1_000_000], dtype=np.int64), "item_id": [items]})
    with pytest.raises(PipelineError, match=message):
        check_submission(sub, np.array([1_000_000]), ITEMS["item_id"].to_numpy(), _seen_in(history))
