import numpy as np
import pandas as pd

from stages.sample import SMM_UNIT, SMM_VIEW, make_sample

PARAMS = dict(scale=0.003, seed=7, taste_strength=0.6, n_tastes=8, share_both=0.3, late_start_share=0.3,
              new_item_share=0.15)


def test_schema_matches_the_real_files():
    files = make_sample(**PARAMS)
    assert list(files["train_smm"].columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert list(files["train_zvuk"].columns) == ["user_id", "timestamp", "item_id", "rating"]
    assert files["train_smm"].dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float64"]
    assert files["train_zvuk"].dtypes.astype(str).tolist() == ["int64", "int64", "int64", "int64"]
    smm = files["train_smm"]["rating"].to_numpy()
    k = smm / SMM_UNIT
    assert np.all(np.isclose(smm, SMM_VIEW) | np.isclose(k, np.round(k)))
    assert files["train_zvuk"]["rating"].min() >= 1
    ts = files["train_smm"]["timestamp"]
    assert ts.min() > 1_673_000_000 * 10**9 and ts.max() < 1_683_000_000 * 10**9  # ns, Jan..Apr 2023
    for domain in ("smm", "zvuk"):
        train, test = files[f"train_{domain}"], files[f"test_{domain}"]
        assert not train.duplicated(["user_id", "item_id"]).any()
        assert set(test["user_id"]) <= set(train["user_id"])  # test = history of train users
        assert train["user_id"].between(1_000_000, 9_999_999).all()


def test_item_ids_are_not_contiguous():
    files = make_sample(**PARAMS)
    items = np.sort(files["train_smm"]["item_id"].unique())
    assert items.max() - items.min() + 1 > len(items)


def test_planted_user_kinds_exist():
    files = make_sample(**PARAMS)
    smm_users, zvuk_users = set(files["train_smm"]["user_id"]), set(files["train_zvuk"]["user_id"])
    assert smm_users - zvuk_users and zvuk_users - smm_users and smm_users & zvuk_users
    counts = files["train_smm"].groupby("user_id").size()
    assert (counts <= 2).any() and counts.max() > 20  # very little history next to heavy users
    # Late starters: users of both domains whose first zvuk or smm event is in the last 3 weeks.
    end = files["train_zvuk"]["timestamp"].max()
    first = {d: files[f"train_{d}"].groupby("user_id")["timestamp"].min() for d in ("smm", "zvuk")}
    both = list(smm_users & zvuk_users)
    late = (first["zvuk"].reindex(both) > end - 21 * 86_400 * 10**9) | \
           (first["smm"].reindex(both) > end - 21 * 86_400 * 10**9)
    assert late.sum() >= 1


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_sample(**PARAMS), make_sample(**PARAMS)
    c = make_sample(**{**PARAMS, "seed": 8})
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not a["train_smm"].equals(c["train_smm"])


def test_taste_is_shared_across_domains():
    """With pure taste, a user's smm and zvuk items come from the same cluster: users who share smm items
    share zvuk items far more often than random pairs."""
    files = make_sample(**{**PARAMS, "taste_strength": 1.0, "n_tastes": 4, "share_both": 1.0})
    smm, zvuk = files["train_smm"], files["train_zvuk"]
    top_smm = smm.groupby("user_id")["item_id"].agg(lambda s: set(s))
    top_zvuk = zvuk.groupby("user_id")["item_id"].agg(lambda s: set(s))
    users = [u for u in top_smm.index if u in top_zvuk.index][:60]
    same, other = [], []
    for i, u in enumerate(users):
        for v in users[i + 1:]:
            smm_overlap = len(top_smm[u] & top_smm[v]) / max(1, min(len(top_smm[u]), len(top_smm[v])))
            zvuk_overlap = len(top_zvuk[u] & top_zvuk[v]) / max(1, min(len(top_zvuk[u]), len(top_zvuk[v])))
            (same if smm_overlap > 0.3 else other).append(zvuk_overlap)
    assert np.mean(same) > 2 * np.mean(other)
