import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stages.cold_split import (best_rows, blended_rank, fill_top_k, final_order, place_in_group, recommend_domain,
                               segment_users)
from stages.common import PipelineError


def test_segments():
    users = np.array([0, 1, 2, 3])
    counts_domain = np.array([5, 0, 0, 1])
    counts_total = np.array([5, 4, 0, 1])
    assert segment_users(users, counts_domain, counts_total, min_interactions=2).tolist() == \
        ["warm", "cross", "cold", "cold"]


def test_fill_top_k_ranked_first_then_popular_never_seen_never_twice():
    ranked = pd.DataFrame({"user_idx": [0, 0, 0], "item_idx": [5, 6, 1], "order": [1.0, 2.0, 3.0]})
    popular = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    seen = sp.csr_matrix((np.ones(2), ([0, 0], [6, 2])), shape=(2, 14))  # user 0 saw items 6 and 2
    out = fill_top_k(ranked, np.array([0, 1]), popular, seen, k=4)
    assert out[out["user_idx"] == 0]["item_idx"].tolist() == [5, 1, 3, 4]
    assert out[out["user_idx"] == 1]["item_idx"].tolist() == [1, 2, 3, 4]  # no ranked list: popular
    assert out["rank"].tolist() == [1, 2, 3, 4, 1, 2, 3, 4]


def test_fill_top_k_walks_the_whole_catalog_for_a_user_who_has_seen_the_popular_head():
    popular = np.arange(40)
    seen = sp.csr_matrix((np.ones(35), (np.zeros(35, int), np.arange(35))), shape=(1, 40))
    out = fill_top_k(pd.DataFrame({"user_idx": [], "item_idx": [], "order": []}), np.array([0]), popular, seen,
                     k=10)
    assert out["item_idx"].tolist() == [35, 36, 37, 38, 39]  # only 5 unseen items exist: all of them


def test_fill_top_k_is_a_plain_walk_over_ranked_rows_then_popular_items():
    # Repeated items, tied orders, seen items, rows of users who are not asked for, users with more than k
    # ranked items and users with none: each list is the walk a loop would make.
    rng = np.random.default_rng(4)
    n_users, n_items, k = 40, 60, 5
    owner = np.repeat(np.arange(n_users), np.arange(n_users) % 9)  # 0 to 8 ranked rows: lists short and long
    ranked = pd.DataFrame({"user_idx": owner, "item_idx": rng.integers(0, n_items // 4, len(owner)),
                           "order": rng.integers(0, 4, len(owner)).astype(float)}).sample(frac=1.0, random_state=0)
    seen = sp.csr_matrix((np.ones(300), (rng.integers(0, n_users, 300), rng.integers(0, n_items, 300))),
                         shape=(n_users, n_items))
    popular, users = rng.permutation(n_items), np.arange(0, n_users, 2)
    out = fill_top_k(ranked, users, popular, seen, k)
    for user in users:
        mine = ranked[ranked["user_idx"] == user].sort_values("order", kind="stable")["item_idx"].tolist()
        expected = []
        for item in mine + popular.tolist():
            if len(expected) < k and item not in expected and not seen[user, item]:
                expected.append(item)
        assert out[out["user_idx"] == user]["item_idx"].tolist() == expected
    assert set(out["user_idx"]) == set(users)


def test_cold_users_get_popular_even_from_the_final_model():
    features = pd.DataFrame({"user_idx": [0, 0, 1, 1], "item_idx": [3, 4, 3, 4], "als_rank": [2.0, 1.0, 2.0, 1.0]})
    scores = np.array([1.0, 0.0, 1.0, 0.0])  # the ranker prefers item 3
    seen = sp.csr_matrix((2, 5))
    recs = recommend_domain(features, scores, np.array([0, 1]), np.array(["warm", "cold"]),
                            np.array([0, 1, 2, 3, 4]), seen, np.array([True, True]))
    final = recs[recs["model"] == "final"]
    assert final[final["user_idx"] == 0]["item_idx"].tolist()[:2] == [3, 4]
    assert final[final["user_idx"] == 1]["item_idx"].tolist() == [0, 1, 2, 3, 4]
    als = recs[recs["model"] == "als"]
    assert als[als["user_idx"] == 0]["item_idx"].tolist()[:2] == [4, 3]


def test_best_rows_of_chunks_give_the_lists_of_the_whole_table():
    rng = np.random.default_rng(0)
    n = 600
    table = pd.DataFrame({"user_idx": rng.integers(0, 6, n), "item_idx": np.arange(n) % 97,
                          "domain": pd.Categorical(rng.choice(["smm", "zvuk"], n), categories=["smm", "zvuk"]),
                          "als_rank": np.where(rng.random(n) < 0.3, np.nan, rng.permutation(n) + 1.0)})
    table = table.drop_duplicates(["user_idx", "domain", "item_idx"]).reset_index(drop=True)
    scores = rng.random(len(table))
    whole = table.assign(score=scores)  # every row: the lists to match
    halves = pd.concat([best_rows(table.iloc[:250], scores[:250], 3), best_rows(table.iloc[250:], scores[250:], 3)])
    seen = sp.csr_matrix((6, 97))
    users = np.arange(6)
    for domain in ("smm", "zvuk"):
        for order in ("score", "als_rank"):
            lists = [fill_top_k(part[part["domain"] == domain].dropna(subset=[order])
                                .assign(order=lambda f: -f[order] if order == "score" else f[order]),
                                users, np.arange(97), seen, 3) for part in (whole, halves)]
            assert lists[0].equals(lists[1])
    assert len(halves) <= 2 * 12 * 2 * 3  # per half: k rows per (user, domain) by score and by ALS rank


def test_final_fold_writes_the_final_model_alone():
    features = pd.DataFrame({"user_idx": [0, 0], "item_idx": [3, 4], "als_rank": [2.0, 1.0]})
    recs = recommend_domain(features, np.array([1.0, 0.0]), np.array([0]), np.array(["warm"]), np.arange(5),
                            sp.csr_matrix((1, 5)), np.array([True]), models=("final",))
    assert set(recs["model"].astype(str)) == {"final"} and recs["item_idx"].tolist()[:2] == [3, 4]


def test_cold_order_ranker_orders_cold_users_popular_candidates_by_the_ranker_and_nothing_else():
    # user 1 is cold: of its candidates, items 3 and 4 are popular ones, item 2 is not (as with
    # cold.min_interactions above 1, where cold users also have ALS candidates)
    features = pd.DataFrame({"user_idx": [0, 0, 1, 1, 1], "item_idx": [3, 4, 3, 4, 2],
                             "als_rank": [2.0, 1.0, np.nan, np.nan, 1.0], "pop_rank": [4.0, 5.0, 4.0, 5.0, np.nan]})
    scores = np.array([0.0, 1.0, 0.0, 1.0, 9.0])  # the ranker prefers item 2, then 4
    popular = np.array([0, 1, 2, 3, 4, 5, 6])
    args = (features, scores, np.array([0, 1]), np.array(["warm", "cold"]), popular, sp.csr_matrix((2, 7)),
            np.array([True, False]))
    by_ranker = recommend_domain(*args, models=("final",), cold_order="ranker")
    assert by_ranker[by_ranker["user_idx"] == 1]["item_idx"].tolist()[:3] == [4, 3, 0]  # then popular fill
    by_popularity = recommend_domain(*args, models=("final",), cold_order="popular")
    assert by_popularity[by_popularity["user_idx"] == 1]["item_idx"].tolist()[:3] == [0, 1, 2]
    by_blend = recommend_domain(*args, models=("final",), cold_order="blend")  # places tie: the more popular 3
    assert by_blend[by_blend["user_idx"] == 1]["item_idx"].tolist()[:3] == [3, 4, 0]
    for recs in (by_ranker, by_popularity, by_blend):  # warm users are the ranker's either way
        assert recs[recs["user_idx"] == 0]["item_idx"].tolist()[:2] == [4, 3]
    with pytest.raises(PipelineError, match="cold.order"):
        recommend_domain(*args, cold_order="trend")


def test_best_rows_keeps_the_best_popular_candidates_by_score_of_the_users_asked_for():
    chunk = pd.DataFrame({"user_idx": [0] * 4 + [1] * 4, "item_idx": [1, 2, 3, 4] * 2,
                          "domain": pd.Categorical(["smm"] * 8, categories=["smm", "zvuk"]),
                          "als_rank": [1.0, 2.0, np.nan, np.nan] * 2, "pop_rank": [np.nan, np.nan, 1.0, 2.0] * 2})
    scores = np.array([4.0, 3.0, 1.0, 2.0] * 2)
    assert best_rows(chunk, scores, 1, ("final",))["item_idx"].tolist() == [1, 1]
    kept = best_rows(chunk, scores, 1, ("final",), ranked_popular=np.array([False, True]))
    assert kept[["user_idx", "item_idx"]].values.tolist() == [[0, 1], [1, 1], [1, 4]]  # user 1's best popular
    kept = best_rows(chunk, scores, 1, ("final",), ranked_popular=np.array([False, True]), all_popular=True)
    assert kept[["user_idx", "item_idx"]].values.tolist() == [[0, 1], [1, 1], [1, 3], [1, 4]]


def test_place_in_group_is_the_place_in_a_lexsort_by_group_then_order_with_ties_in_row_order():
    rng = np.random.default_rng(5)
    group = rng.integers(-3, 40, 2000)  # unsorted, negative too
    order = rng.integers(0, 6, 2000).astype(np.float64)  # many ties
    order[rng.random(2000) < 0.1] = np.inf
    ranked = np.lexsort((order, group))
    expected = np.empty(len(group), dtype=np.int64)
    for g in np.unique(group):
        rows = ranked[group[ranked] == g]
        expected[rows] = np.arange(len(rows))
    np.testing.assert_array_equal(place_in_group(group, order), expected)
    assert len(place_in_group(group[:0], order[:0])) == 0


def test_blended_rank_is_the_mean_of_the_places_by_score_and_by_popularity_per_group():
    # group 0: places by score 0, 1, 2 and by pop_rank 2, 0, 1 -> means 1, 0.5, 1.5; group 1: a tie of 0.5
    group = np.array([0, 0, 0, 1, 1])
    scores = np.array([3.0, 2.0, 1.0, 5.0, 4.0])
    pop_rank = np.array([9.0, 1.0, 5.0, 2.0, 1.0])
    order = blended_rank(group, scores, pop_rank)
    assert np.argsort(order[:3]).tolist() == [1, 0, 2]
    assert order[4] < order[3]  # the tie goes to the more popular item
    assert np.allclose(order[:3], [1.0, 0.5, 1.5], atol=0.2)


def test_final_order_keeps_warm_rows_by_score_and_cold_rows_by_cold_order():
    group = np.array([0, 0, 1, 1, 1])  # group 0 warm, group 1 cold
    scores = np.array([2.0, 1.0, 0.5, 3.0, 9.0])
    pop_rank = np.array([np.nan, 1.0, 1.0, 2.0, np.nan])  # the cold user's score-9 row is no popular candidate
    cold = np.array([False, False, True, True, True])
    by_ranker = final_order(group, scores, pop_rank, cold, "ranker")
    np.testing.assert_array_equal(by_ranker[:4], [-2.0, -1.0, -0.5, -3.0])
    assert np.isnan(by_ranker[4])
    by_popularity = final_order(group, scores, pop_rank, cold, "popular")
    np.testing.assert_array_equal(by_popularity[:2], [-2.0, -1.0])
    assert np.isnan(by_popularity[2:]).all()  # filled from popularity by fill_top_k
    by_blend = final_order(group, scores, pop_rank, cold, "blend")
    assert by_blend[2] < by_blend[3]  # places (1 + 0) / 2 and (0 + 1) / 2 tie: the more popular first
    assert np.isnan(by_blend[4])


def test_final_order_needs_pop_rank_only_where_cold_order_reads_it():
    group, scores, cold = np.array([0, 1]), np.array([1.0, 2.0]), np.array([False, True])
    by_popularity = final_order(group, scores, None, cold, "popular")
    assert by_popularity[0] == -1.0 and np.isnan(by_popularity[1])
    with pytest.raises(ValueError, match="pop_rank"):
        final_order(group, scores, None, cold, "blend")
