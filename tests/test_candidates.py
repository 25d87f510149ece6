import pytest
import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.candidates import (_row_dots_many, lift_profiles, lift_vectors, make_candidates, no_candidates,
                               popular_items, recent_taste, taken_matrix, target_users, taste_plays, top_n_items)
from tests.conftest import DAY, T0


def test_top_n_items_orders_by_score_and_skips_excluded():
    users = np.array([[1.0, 0.0], [0.1, 1.0]], dtype=np.float32)
    items = np.array([[3, 0], [2, 0], [1, 0], [0, 5], [0, 4]], dtype=np.float32)
    excluded = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]))
    top, scores = top_n_items(users, items, excluded, n=2)
    assert top.tolist() == [[1, 2], [4, 0]]  # user 0: item 0 seen; user 1: item 3 seen
    assert scores[0].tolist() == [2.0, 1.0]


def test_top_n_items_pads_when_too_few_items():
    top, scores = top_n_items(np.ones((1, 2), np.float32), np.ones((3, 2), np.float32),
                              sp.csr_matrix(np.array([[1, 1, 0]])), n=3)
    assert top.tolist() == [[2, -1, -1]] and np.isneginf(scores[0, 1:]).all()


def test_row_dots_are_the_same_whatever_the_chunk_and_span_chunk_boundaries():
    rng = np.random.default_rng(0)
    left = rng.standard_normal((7, 3)).astype(np.float32)
    rights = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(2)]
    rows_left, rows_right = rng.integers(0, 7, 23), rng.integers(0, 5, 23)
    expected = [np.einsum("ij,ij->i", left[rows_left], right[rows_right]) for right in rights]
    for chunk in (1, 4, 23, 1000):  # 23 rows: chunks that divide them, that do not, and one chunk for all
        got = _row_dots_many(left, rights, rows_left, rows_right, chunk=chunk)
        for out, want in zip(got, expected):
            np.testing.assert_allclose(out, want, rtol=1e-6)
            assert out.dtype == np.float32


def test_popular_items_counts_the_recent_window_before_the_cutoff_only():
    events = pd.DataFrame({"item_idx": [0, 1, 1, 2, 2, 2, 3],
                           "timestamp": [T0 - 1 * DAY, T0 - 2 * DAY, T0 - 3 * DAY, T0 - 30 * DAY, T0 - 31 * DAY,
                                         T0 - 32 * DAY, T0 + DAY]})
    # item 1: 2 recent; item 0: 1 recent; item 2: 3 old; item 3: only after the cut-off (unknown yet)
    assert popular_items(events, cutoff=T0, days=7, n_items=4).tolist() == [1, 0, 2]


def test_cross_domain_user_gets_als_candidates_and_seen_items_never_appear():
    user_factors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    item_factors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]]))  # user 1: no history in this domain
    has_history = np.array([True, True, False])  # user 2 has no history anywhere
    recent = np.zeros_like(item_factors)
    cands = make_candidates(np.array([0, 1, 2]), seen, user_factors, item_factors, recent, np.array([2, 0, 1]),
                            has_history, n_als=1, n_recent=1, n_popular=1)
    by_user = {u: g for u, g in cands.groupby("user_idx")}
    assert 0 not in by_user[0]["item_idx"].tolist()                      # seen
    assert by_user[0].query("als_rank == 1")["item_idx"].tolist() == [1]
    assert by_user[1].query("als_rank == 1")["item_idx"].tolist() == [2]  # cross-domain: scored by taste
    assert by_user[2]["als_rank"].isna().all()                            # no taste: popular only
    assert by_user[2]["item_idx"].tolist() == [2]
    assert by_user[0].query("item_idx == 1")["als_score"].iloc[0] == np.float32(0.9)
    assert cands["lift_same"].isna().all() and cands["lift_other"].isna().all()  # no lift vectors given
    same, other = np.array([[1.0], [2.0], [0.0]], np.float32), np.array([[0.0], [4.0], [1.0]], np.float32)
    item_lift = np.array([[0.5], [1.0], [3.0]], np.float32)
    with_lift = make_candidates(np.array([0, 1, 2]), seen, user_factors, item_factors, recent, np.array([2, 0, 1]),
                                has_history, n_als=1, n_recent=1, n_popular=1, lift_same=same, lift_other=other,
                                item_lift=item_lift)
    user, item = with_lift["user_idx"].to_numpy(), with_lift["item_idx"].to_numpy()
    np.testing.assert_array_equal(with_lift["lift_same"].to_numpy(), same[user, 0] * item_lift[item, 0])
    np.testing.assert_array_equal(with_lift["lift_other"].to_numpy(), other[user, 0] * item_lift[item, 0])


def test_recent_taste_sums_the_vectors_of_recent_users():
    user_factors = np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    events = pd.DataFrame({"user_idx": [0, 1, 1, 1, 2], "item_idx": [0, 0, 1, 0, 1],
                           "timestamp": [T0 - DAY, T0 - 2 * DAY, T0 - 2 * DAY, T0 - 3 * DAY, T0 - 30 * DAY]})
    taste = recent_taste(events, user_factors, cutoff=T0, days=7, n_items=3)
    # user 2's event is too old; user 1 took item 0 twice and counts once
    assert taste.tolist() == [[1.0, 2.0], [0.0, 2.0], [0.0, 0.0]]


def test_taste_plays_weighs_each_taker_by_rating_per_1000_of_the_domains_ratings():
    taste = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    events = pd.DataFrame({"user_idx": [0, 1, 0, 1], "item_idx": [0, 0, 1, 1], "rating": [3.0, 1.0, 1.0, 5.0],
                           "timestamp": [T0 - DAY, T0 - 2 * DAY, T0 - 40 * DAY, T0 + DAY]})
    # before the cut-off: 5 rating units in all; item 0: 3 of user 0's, 1 of user 1's; item 1: 1 of user 0's
    plays = taste_plays(events, taste, cutoff=T0, n_items=3)
    np.testing.assert_allclose(plays, np.array([[600.0, 200.0], [200.0, 0.0], [0.0, 0.0]]))
    # as a candidate column: the user's taste vector . the item's row
    cands = make_candidates(np.array([1]), sp.csr_matrix((2, 3)), taste, np.eye(3, 2, dtype=np.float32),
                            np.zeros((3, 2), np.float32), np.array([0, 1, 2]), np.array([True, True]),
                            n_als=3, n_recent=0, n_popular=0, item_taste_plays=plays).set_index("item_idx")
    assert cands.loc[0, "taste_plays"] == pytest.approx(200.0) and cands.loc[1, "taste_plays"] == 0


def test_labelled_folds_draw_at_most_max_users_and_final_keeps_every_target():
    interactions = pd.DataFrame({"user_idx": np.arange(100, dtype=np.int32), "domain": "smm",
                                 "window": ["label"] * 60 + ["holdout"] * 40})
    everyone = target_users("train", "smm", interactions, np.array([], np.int32))
    assert everyone.tolist() == list(range(60))
    drawn = target_users("train", "smm", interactions, np.array([], np.int32), max_users=25, seed=1)
    assert len(drawn) == 25 and set(drawn) < set(everyone) and (np.diff(drawn) > 0).all()
    again = target_users("train", "smm", interactions, np.array([], np.int32), max_users=25, seed=1)
    other = target_users("train", "smm", interactions, np.array([], np.int32), max_users=25, seed=2)
    assert drawn.tolist() == again.tolist() != other.tolist()  # the seed decides the draw, nothing else
    assert len(target_users("holdout", "smm", interactions, np.array([], np.int32), max_users=100)) == 40
    targets = np.arange(50, dtype=np.int32)
    assert len(target_users("final", "smm", interactions, targets, max_users=10)) == 50


def test_recent_source_only_proposes_items_of_the_recent_pool():
    user_factors = np.array([[1.0, 0.0]], dtype=np.float32)
    item_factors = np.zeros((4, 2), dtype=np.float32)
    recent = np.array([[9.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], dtype=np.float32)  # item 0 fits best
    popular = np.array([3, 2, 1, 0])  # ... but is the least popular lately
    args = (np.array([0]), sp.csr_matrix((1, 4)), user_factors, item_factors, recent, popular, np.array([True]))
    pooled = make_candidates(*args, n_als=1, n_recent=2, n_popular=1, recent_pool=3)
    assert pooled.dropna(subset=["recent_rank"]).sort_values("recent_rank")["item_idx"].tolist() == [3, 2]
    everything = make_candidates(*args, n_als=1, n_recent=2, n_popular=1, recent_pool=0)
    assert everything.dropna(subset=["recent_rank"]).sort_values("recent_rank")["item_idx"].tolist() == [0, 3]


def test_als_source_only_proposes_items_of_the_als_pool_and_centered_cosine_drops_the_shared_direction():
    user_factors = np.array([[1.0, 1.0]], dtype=np.float32)
    item_factors = np.array([[9.0, 1.0], [1.0, 2.0], [2.0, 1.0], [1.0, 3.0]], dtype=np.float32)  # 0 fits best
    popular = np.array([3, 2, 1, 0])  # ... but is the least popular lately
    args = (np.array([0]), sp.csr_matrix((1, 4)), user_factors, item_factors, np.zeros((4, 2), np.float32),
            popular, np.array([True]))
    pooled = make_candidates(*args, n_als=2, n_recent=0, n_popular=1, als_pool=3)
    assert pooled.dropna(subset=["als_rank"]).sort_values("als_rank")["item_idx"].tolist() == [3, 2]
    everything = make_candidates(*args, n_als=2, n_recent=0, n_popular=1, als_pool=0)
    assert everything.dropna(subset=["als_rank"]).sort_values("als_rank")["item_idx"].tolist() == [0, 3]
    # With no means removed it is the plain cosine of (1, 1) and (1, 3); with the mean item (1, 1) removed,
    # item 3 becomes (0, 2), at 45 degrees from the user.
    plain = make_candidates(*args, n_als=4, n_recent=0, n_popular=1).set_index("item_idx")
    assert plain.loc[3, "als_centered_cosine"] == pytest.approx(4 / np.sqrt(2) / np.sqrt(10), rel=1e-5)
    centered = make_candidates(*args, n_als=4, n_recent=0, n_popular=1, item_mean=np.array([1.0, 1.0], np.float32))
    assert centered.set_index("item_idx").loc[3, "als_centered_cosine"] == pytest.approx(1 / np.sqrt(2), rel=1e-5)


def _mean_lift(taken: np.ndarray, part: np.ndarray) -> np.ndarray:
    """users x items: the user's mean over their items i in `part` of N n_ij / (n_i n_j), from the definition."""
    n_users = (taken.sum(axis=1) > 0).sum()
    counts = np.maximum(taken.sum(axis=0), 1)
    lift = n_users * (taken.T @ taken) / np.outer(counts, counts)
    mine = taken[:, part]
    return (mine @ lift[part]) / np.maximum(mine.sum(axis=1, keepdims=True), 1)


def test_lift_vectors_give_each_users_mean_lift_when_the_rank_suffices():
    # Three kinds of user history, repeated: rank 3, below the rank (7) the vectors may have.
    kinds = np.array([[1, 1, 0, 0, 0, 0, 1, 0], [0, 0, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 1, 1, 0, 1]], dtype=float)
    taken = np.vstack([kinds[[0, 1, 2, 0, 1, 0, 2, 1]], np.zeros((1, 8))])  # the last user: no history
    matrix = taken_matrix(sp.csr_matrix(taken * 3.0))  # confidences, not counts: only whether it was taken
    weighted, vectors = lift_vectors(matrix, factors=32, seed=1)
    assert weighted.shape == vectors.shape and vectors.shape[0] == 8 and vectors.shape[1] <= 7
    everything = lift_profiles(matrix, weighted)
    np.testing.assert_allclose(everything @ vectors.T, _mean_lift(taken, np.arange(8)), rtol=1e-3, atol=1e-3)
    assert not everything[-1].any()
    # A profile of a part of the items (one domain's) averages over the user's items in that part only.
    part = np.array([0, 1, 2, 3])
    np.testing.assert_allclose(lift_profiles(matrix[:, part], weighted[part]) @ vectors.T, _mean_lift(taken, part),
                               rtol=1e-3, atol=1e-3)


def test_lift_score_prefers_a_rare_item_of_the_users_taste_to_a_popular_item_of_another():
    rng = np.random.default_rng(0)
    # Two tastes of 6 items each; item 0 (taste A) is rare, item 6 (taste B) is taken by almost everyone.
    taste = np.repeat([0, 1], 100)
    taken = np.zeros((200, 12))
    for user in range(200):
        mine = np.arange(6) + 6 * taste[user]
        taken[user, rng.choice(mine[1:], size=3, replace=False)] = 1
    taken[rng.choice(200, size=150, replace=False), 6] = 1
    taken[rng.choice(np.flatnonzero(taste == 0), size=5, replace=False), 0] = 1
    matrix = taken_matrix(sp.csr_matrix(taken))
    weighted, vectors = lift_vectors(matrix, factors=4)
    scores = lift_profiles(matrix, weighted) @ vectors.T
    users_a = np.flatnonzero((taste == 0) & (taken[:, [0, 6]].sum(axis=1) == 0))
    assert len(users_a) > 10 and (scores[users_a, 0] > scores[users_a, 6]).all()
    # Seen by raw co-counts the popular item wins: that is what the division by the counts removes.
    co_counts = taken[users_a] @ (taken.T @ taken)
    assert (co_counts[:, 6] > co_counts[:, 0]).all()


def test_lift_vectors_of_rank_zero_and_of_an_empty_matrix_are_empty():
    assert lift_vectors(taken_matrix(sp.csr_matrix(np.eye(4))), factors=0)[1].shape == (4, 0)
    weighted, vectors = lift_vectors(taken_matrix(sp.csr_matrix((3, 5))), factors=2)
    assert weighted.shape == (5, 0) and vectors.shape == (5, 0)
    assert lift_profiles(taken_matrix(sp.csr_matrix((3, 5))), weighted).shape == (3, 0)


def test_no_candidates_has_the_schema_of_a_computed_table():
    users = np.array([0, 1], dtype=np.int32)
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    factors = np.eye(3, dtype=np.float32)
    computed = make_candidates(users, seen, factors[:2], factors, factors, np.array([0, 1, 2]),
                               np.ones(3, dtype=bool), n_als=2, n_recent=1, n_popular=1)
    computed.insert(1, "domain", pd.Categorical(["smm"] * len(computed), categories=["smm", "zvuk"]))
    empty = no_candidates()
    assert len(computed) and not len(empty)
    assert list(empty.columns) == list(computed.columns)
    assert empty.dtypes.astype(str).tolist() == computed.dtypes.astype(str).tolist()


def test_newcomer_users_are_users_of_both_domains_drawn_up_to_the_cap():
    from stages.candidates import newcomer_users

    users = np.array([0, 1, 2, 3, 4, 5])
    uses_domain = np.array([True, True, False, True, True, True, True])
    uses_other = np.array([True, False, True, True, True, True, False])
    assert newcomer_users(users, uses_domain, uses_other, max_users=10).tolist() == [0, 3, 4, 5]
    assert newcomer_users(users, uses_domain, uses_other, max_users=0).tolist() == []
    drawn = newcomer_users(users, uses_domain, uses_other, max_users=2, seed=[1, 0, 1])
    assert len(drawn) == 2 and set(drawn) <= {0, 3, 4, 5} and drawn.tolist() == sorted(drawn)
    assert np.array_equal(drawn, newcomer_users(users, uses_domain, uses_other, max_users=2, seed=[1, 0, 1]))


def test_newcomer_candidates_ignore_the_users_history_in_the_domain_but_exclude_its_items():
    from stages.als_fit import solve_users
    from stages.candidates import newcomer_candidates

    # Merged columns: 0-2 this domain's items (item_idx 0-2), 3-4 the other domain's.
    item_factors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [1.0, 0.1], [0.1, 1.0]], np.float32)
    matrix = sp.csr_matrix(np.array([[1.0, 0, 0, 2.0, 0],    # user 0: item 0 here, item 3 there
                                     [0, 3.0, 0, 2.0, 0]],   # user 1: the same other-domain history
                                    dtype=np.float32))
    cols = np.array([0, 1, 2])
    seen = matrix[:, :3].tocsr()
    args = dict(alpha=2.0, regularization=0.1, other_domain_weight=0.25, user_mean=np.zeros(2, np.float32),
                item_recent_taste=np.zeros((3, 2), np.float32), popular=np.array([2, 1, 0]), n_als=3, n_recent=0,
                n_popular=1)
    cands = newcomer_candidates(np.array([0, 1]), matrix, cols, seen, item_factors,
                                lift_other=np.array([[1.0], [1.0]], np.float32),
                                item_lift=np.array([[1.0], [2.0], [3.0]], np.float32), **args)
    by_user = {u: g.set_index("item_idx") for u, g in cands.groupby("user_idx")}
    assert 0 not in by_user[0].index and 1 not in by_user[1].index  # what they had here stays excluded
    # Both are judged by the other domain's item 3 alone: the same vector, the same scores.
    assert by_user[0].loc[2, "als_score"] == by_user[1].loc[2, "als_score"]
    expected = solve_users(sp.csr_matrix(np.array([[0, 0, 0, 4.0, 0]], np.float32)), item_factors,
                           regularization=0.1, item_scale=np.array([0.5, 0.5, 0.5, 1.0, 1.0]))[0]
    assert by_user[0].loc[2, "als_score"] == pytest.approx(float(expected @ item_factors[2]), rel=1e-5)
    assert (cands["lift_same"] == 0).all()
    assert by_user[1].loc[2, "lift_other"] == pytest.approx(3.0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DVC's dvc.yaml parser calls old pyparsing names
def test_only_the_labelled_folds_list_the_params_of_labelled_users():
    """candidates@final serves every target user and draws no newcomers: neither dvc.yaml's foreach, as DVC
    resolves it, nor the committed dvc.lock may tie it to the two params that only the labelled folds read, or
    changing them re-runs it."""
    import yaml
    from dvc.repo import Repo

    from benchmarks.project import ROOT

    with Repo(str(ROOT)) as repo:
        resolved = {stage.name: {param for dep in stage.deps if getattr(dep, "params", None) is not None
                                 for param in dep.params}
                    for stage in repo.index.stages if stage.name.startswith("candidates@")}
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    labelled_only = {"candidates.max_labelled_users", "candidates.newcomers"}
    for fold in ("early", "train", "holdout", "final"):
        for source, listed in (("dvc.yaml", resolved[f"candidates@{fold}"]),
                               ("dvc.lock", set(lock[f"candidates@{fold}"]["params"]["params.yaml"]))):
            assert "candidates.seed" in listed, (source, fold)
            assert (labelled_only <= listed) if fold != "final" else not (labelled_only & listed), (source, fold)
