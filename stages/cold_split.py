"""Stage `cold-split` (folds holdout and final): the final top-10 of every user, warm by ranker, cold from top-popular.

In:  `data/features/<fold>.parquet`, `models/ranker/<fold>/`, `data/candidates/<fold>_{users,popular}.parquet`,
     `data/merged/{items.parquet,matrix_<fold>.npz}`.
Out: `data/recs/<fold>.parquet`, long format: user_idx, domain, segment, model, rank (1..10), item_idx.

A user is cold when they have fewer than `cold.min_interactions` events over both domains before the cut-off;
cold users get the domain's recent top-popular items: in popularity order (`cold.order: popular`), or their
popular candidates in the ranker's order (`cold.order: ranker`), which for a user without history weighs only
what it knows of the items (trend, recent shares, forecast), or by the mean of the two ranks (`cold.order:
blend`: the ranker's order shrunk towards popularity's). Everyone else gets the ranker's order. Seen items
of the domain are never recommended; a list the ranker cannot fill to 10 is completed from popularity.

Segments, per (user, domain): cold; cross (not cold, no history in this domain, history in the other: the
cross-domain case); warm (not cold, history in this domain).

Three models are written for the holdout fold, so that every run shows what the ranker adds:
    popular: recent top-popular;  als: ALS order (popular for users with no history);  final: the product.
The final fold, which only feeds the submission, writes `final` alone.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from stages.candidates import read_fold_users, read_popular
from stages.common import (DOMAIN, DOMAINS, ITEM_IDX, K, USER_IDX, PipelineError, constant_category, domain_matrix,
                           load_params, progress, run_stage, run_starts, section_params, seen_pairs, stable_argsort,
                           user_domain_group, write_parquet)
from stages.ranker_fit import compile_models, load_ranker, score_candidates

log = logging.getLogger("pipeline.cold_split")

MODELS = ("popular", "als", "final")
SEGMENTS = ("warm", "cross", "cold")
COLD_ORDERS = ("popular", "ranker", "blend")  # cold.order: how cold users' top-popular items are ordered


def check_cold_order(order: str) -> None:
    if order not in COLD_ORDERS:
        raise PipelineError(f"params.yaml: cold.order={order!r} is out of range: must be one of "
                            f"{', '.join(COLD_ORDERS)}")


def is_cold(counts_total: np.ndarray, min_interactions: int) -> np.ndarray:
    """Cold: fewer than `min_interactions` events over both domains (counts_total: events per user)."""
    return counts_total < min_interactions


def segment_users(users: np.ndarray, counts_domain: np.ndarray, counts_total: np.ndarray, *,
                  min_interactions: int) -> np.ndarray:
    """Segment of each user in one domain: 'cold', 'cross' or 'warm' (see the module docstring)."""
    cold = is_cold(counts_total[users], min_interactions)
    has_domain = counts_domain[users] > 0
    return np.where(cold, "cold", np.where(has_domain, "warm", "cross"))


def segments_at_cutoff(matrix: sp.csr_matrix, items: pd.DataFrame, *, min_interactions: int,
                       users: dict[str, np.ndarray] | None = None) -> dict[str, pd.Series]:
    """Per domain, user_idx -> segment_users at a fold's cut-off (matrix: the fold's events before it), of
    users[domain] (None: every user of the matrix)."""
    counts_total = np.diff(matrix.indptr)
    out = {}
    for domain in DOMAINS:
        mine = np.arange(matrix.shape[0]) if users is None else users[domain]
        counts_domain = np.diff(domain_matrix(matrix, items, domain).indptr)
        out[domain] = pd.Series(segment_users(mine, counts_domain, counts_total, min_interactions=min_interactions),
                                index=mine)
    return out


def segments_of(segments: pd.Series, users: np.ndarray) -> np.ndarray:
    """The segment of each of `users` (segments: user_idx -> segment); a user missing there is cold."""
    return segments.reindex(users).fillna("cold").astype(str).to_numpy()


def _by_group_then_order(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The permutation that sorts rows by integer group, then ascending order; ties keep the rows' own order."""
    # np.lexsort((order, group)) in two stable sorts, the second (integer groups) through stable_argsort's packed
    # sort: 0.28 s against 0.40 s on 2M rows of 130 per group.
    by_order = np.argsort(order, kind="stable")
    return by_order[stable_argsort(group[by_order])]


def place_in_group(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Each row's place (0 first) within its group, by ascending order; ties keep the rows' own order."""
    ranked = _by_group_then_order(group, order)
    place = np.empty(len(group), dtype=np.int64)
    place[ranked] = _position_in_run(group[ranked])
    return place


def blended_rank(group: np.ndarray, scores: np.ndarray, pop_rank: np.ndarray) -> np.ndarray:
    """Order key (lower first) of `cold.order: blend` within each group (one cold user in one domain) of popular
    candidates: the mean of a row's place by ranker score and its place by pop_rank; a tie goes to the more
    popular item."""
    by_score, by_popularity = place_in_group(group, -scores), place_in_group(group, pop_rank)
    # Means are multiples of 0.5; the popularity place over 2 * (n + 1) adds less than that, so only breaks ties.
    return (by_score + by_popularity) / 2 + by_popularity / (2 * len(group) + 2)


def cold_popular_order(group: np.ndarray, scores: np.ndarray, pop_rank: np.ndarray, cold_order: str
                       ) -> np.ndarray:
    """Order key (lower first) of cold users' popular candidates under cold_order "ranker" or "blend"."""
    return blended_rank(group, scores, pop_rank) if cold_order == "blend" else -scores


def final_order(group: np.ndarray, scores: np.ndarray, pop_rank: np.ndarray | pd.Series | None, cold: np.ndarray,
                cold_order: str) -> np.ndarray:
    """Order key (lower first) of each candidate row in the final lists, NaN for a row left out: the ranker's
    order; for cold users' rows (cold), their popular candidates (pop_rank set) by cold_popular_order and the
    others left out, or under cold_order "popular" every row left out (their lists are filled from popularity).
    group: one value per (user, domain), as user_domain_group; pop_rank: read under "ranker" and "blend" only
    (may be None under "popular", where best_rows does not keep it)."""
    check_cold_order(cold_order)
    order = -np.asarray(scores, dtype=np.float64)
    if cold_order == "popular":
        order[cold] = np.nan
        return order
    if pop_rank is None:
        raise ValueError(f"cold.order {cold_order!r} orders cold users' popular candidates by pop_rank, "
                         "and none was given")
    pop_rank = np.asarray(pop_rank, dtype=np.float64)
    popular_candidate = ~np.isnan(pop_rank)
    mine = cold & popular_candidate
    order[mine] = cold_popular_order(group[mine], scores[mine], pop_rank[mine], cold_order)
    order[cold & ~popular_candidate] = np.nan
    return order


def fill_top_k(ranked: pd.DataFrame, users: np.ndarray, popular: np.ndarray, seen: sp.csr_matrix, k: int
               ) -> pd.DataFrame:
    """Top-k distinct unseen items per user: the ranked items first, then popular ones.

    Args:
        ranked: user_idx, item_idx, order (lower is better); may be empty or miss users.
        users: every user who must get a list.
        popular: item indices, most popular first.
        seen: users x items of the domain; non-zero = seen (never recommended).
        k: list length. Shorter only when the user has seen all but fewer than k of the popular items.

    Returns:
        user_idx, rank (1..k), item_idx.
    """
    user, item, order = (ranked[c].to_numpy() for c in (USER_IDX, ITEM_IDX, "order"))
    keep = np.isin(user, users) & ~seen_pairs(seen, user, item)
    user, item, order = user[keep].astype(np.int64), item[keep].astype(np.int64), order[keep].astype(np.float64)
    lists_user, lists_item = [], []
    todo, head_length = np.asarray(users, dtype=np.int64), k + 20
    # A popular head of k + 20 fills almost every list; users who have seen most of it go round again with a
    # head four times longer, until the list is full or the whole popularity order has been offered.
    while len(todo):
        mine = np.isin(user, todo)
        u, i = _first_k_distinct(user[mine], item[mine], order[mine], todo, popular[:head_length], seen, k)
        full = np.bincount(np.searchsorted(todo, u), minlength=len(todo)) >= k
        done = full | (head_length >= len(popular))
        finished = np.isin(u, todo[done])
        lists_user.append(u[finished])
        lists_item.append(i[finished])
        todo, head_length = todo[~done], head_length * 4
    user, item = np.concatenate(lists_user), np.concatenate(lists_item)
    by_user = stable_argsort(user)  # each user's items keep their order
    user, item = user[by_user], item[by_user]
    return pd.DataFrame({USER_IDX: user.astype(np.int32), "rank": (_position_in_run(user) + 1).astype(np.int8),
                         ITEM_IDX: item.astype(np.int32)})


def _first_k_distinct(user: np.ndarray, item: np.ndarray, order: np.ndarray, users: np.ndarray, head: np.ndarray,
                      seen: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user of `users` (sorted; every ranked row is of one of them): the ranked rows by order, then the
    unseen items of `head`; the first k distinct items, as (user, item) arrays sorted by user, list order
    within a user. Plain numpy sorts: pandas sort/drop_duplicates/groupby on millions of rows took minutes at
    full size."""
    ranked = _by_group_then_order(user, order)
    user, item = _first_of_each_pair(user[ranked], item[ranked], seen.shape[1])
    # Only a user with fewer than k distinct ranked items reaches the popular head; building users x head rows
    # for every user made this function several times slower.
    short = users[np.bincount(np.searchsorted(users, user), minlength=len(users)) < k]
    fallback_user, fallback_item = np.repeat(short, len(head)), np.tile(head, len(short)).astype(np.int64)
    unseen = ~seen_pairs(seen, fallback_user, fallback_item)
    # The fallback rows are by user, then popularity: a stable sort by user puts them after the user's ranked
    # rows, which come first in the concatenation.
    user = np.r_[user, fallback_user[unseen]]
    item = np.r_[item, fallback_item[unseen]]
    by_user = stable_argsort(user)
    user, item = _first_of_each_pair(user[by_user], item[by_user], seen.shape[1])
    in_list = _position_in_run(user) < k
    return user[in_list], item[in_list]


def _first_of_each_pair(user: np.ndarray, item: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of (user, item) that are the first place of their pair, in their order."""
    pair = user * n_items + item
    by_pair = stable_argsort(pair)
    first = np.zeros(len(pair), dtype=bool)
    first[by_pair[run_starts(pair[by_pair])]] = True
    return user[first], item[first]


def _position_in_run(sorted_values: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    starts = run_starts(sorted_values)
    return np.arange(len(sorted_values)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_values)]))


def best_rows(chunk: pd.DataFrame, scores: np.ndarray, k: int, models: tuple[str, ...] = MODELS,
              ranked_popular: np.ndarray | None = None, all_popular: bool = False) -> pd.DataFrame:
    """The rows of a features chunk that can still make a top-k list: per (user, domain), the k best by
    ranker score, (when `models` has "als") the k best by ALS rank and, for the users that `ranked_popular`
    (a boolean per user_idx: cold users under `cold.order` ranker or blend) marks, the k popular candidates
    (pop_rank set) best by ranker score, or all of them (`all_popular`: blend, where a place by score beyond k
    can still make the list). Taking them chunk by chunk and choosing again over the union gives the same
    lists as choosing over the whole table, which at full size (40M rows) does not fit."""
    group = user_domain_group(chunk[USER_IDX].to_numpy(), chunk[DOMAIN].cat.codes.to_numpy())
    keep = np.zeros(len(chunk), dtype=bool)
    orders = [-scores] + ([chunk["als_rank"].fillna(np.inf).to_numpy()] if "als" in models else [])
    for order in orders:
        keep[place_in_group(group, order) < k] = True
    if ranked_popular is not None:  # sorted apart: only the marked users' popular rows, not the whole chunk
        mine = np.flatnonzero(ranked_popular[chunk[USER_IDX].to_numpy()] & chunk["pop_rank"].notna().to_numpy())
        keep[mine if all_popular else mine[place_in_group(group[mine], -scores[mine]) < k]] = True
    columns = [USER_IDX, DOMAIN, ITEM_IDX, "als_rank", *(["pop_rank"] if ranked_popular is not None else [])]
    return chunk.loc[keep, columns].assign(score=scores[keep])


def recommend_domain(features: pd.DataFrame, ranker_scores: np.ndarray, users: np.ndarray, segments: np.ndarray,
                     popular: np.ndarray, seen: sp.csr_matrix, has_history: np.ndarray,
                     models: tuple[str, ...] = MODELS, cold_order: str = "popular") -> pd.DataFrame:
    """Lists of the given models (default all three) for one domain: user_idx, segment, model, rank, item_idx.
    Cold users' final lists: popularity order, or their popular candidates (pop_rank set) in ranker order
    (cold_order "ranker") or in blended_rank order ("blend"), as final_order keys them."""
    segment_of = pd.Series(segments, index=users)
    empty = pd.DataFrame({USER_IDX: np.array([], np.int32), ITEM_IDX: np.array([], np.int32),
                          "order": np.array([], np.float64)})
    als = features[features["als_rank"].notna()]
    als = als.assign(order=als["als_rank"].to_numpy())[[USER_IDX, ITEM_IDX, "order"]]
    user = features[USER_IDX].to_numpy()
    of_cold_user = segment_of.reindex(user).to_numpy() == "cold"
    # one domain: the user is the group
    order = final_order(user, ranker_scores, features.get("pop_rank"), of_cold_user, cold_order)
    in_final = ~np.isnan(order)
    final_rows = features.loc[in_final, [USER_IDX, ITEM_IDX]].assign(order=order[in_final])
    ranked = {"popular": empty, "als": als[has_history[als[USER_IDX].to_numpy()]], "final": final_rows}
    parts = []
    for model in models:
        lists = fill_top_k(ranked[model], users, popular, seen, K)
        lists.insert(1, "segment", pd.Categorical(segment_of.reindex(lists[USER_IDX].to_numpy()).to_numpy(),
                                                  categories=list(SEGMENTS)))
        lists.insert(2, "model", constant_category(model, len(lists), MODELS))
        parts.append(lists)
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=("holdout", "final"))
    parser.add_argument("--candidates", default="data/candidates")
    parser.add_argument("--out", default="data/recs")
    args = parser.parse_args(argv)
    cold = section_params(load_params(), "cold")
    min_interactions, cold_order = cold["min_interactions"], cold["order"]
    check_cold_order(cold_order)
    items = pd.read_parquet("data/merged/items.parquet")
    matrix = sp.load_npz(f"data/merged/matrix_{args.fold}.npz").tocsr()
    booster, meta = load_ranker(Path("models/ranker") / args.fold)
    models = MODELS if args.fold == "holdout" else ("final",)  # the submission needs the product alone
    # Scored a row group at a time, keeping only rows that can make a list: memory stays at one chunk.
    counts_total = np.diff(matrix.indptr)
    ranked_popular = is_cold(counts_total, min_interactions) if cold_order != "popular" else None
    features_file = pq.ParquetFile(f"data/features/{args.fold}.parquet")
    columns = list(dict.fromkeys([USER_IDX, DOMAIN, ITEM_IDX, "als_rank", "pop_rank", "als_score",
                                  *meta["features"]]))
    compiled = compile_models(booster, meta, features_file.metadata.num_rows)
    kept = []
    for group in progress(range(features_file.num_row_groups), desc="scoring", unit="row group"):
        chunk = features_file.read_row_group(group, columns=columns).to_pandas()
        chunk[DOMAIN] = pd.Categorical(chunk[DOMAIN], categories=list(DOMAINS))
        kept.append(best_rows(chunk, score_candidates(booster, meta, chunk, compiled), K, models, ranked_popular,
                              all_popular=cold_order == "blend"))
        del chunk
    features = pd.concat(kept, ignore_index=True)
    scores = features.pop("score").to_numpy()
    parts = []
    for domain in DOMAINS:
        seen = domain_matrix(matrix, items, domain)
        counts_domain = np.diff(seen.indptr)
        users = read_fold_users(args.candidates, args.fold, domain)
        segments = segment_users(users, counts_domain, counts_total, min_interactions=min_interactions)
        popular = read_popular(args.candidates, args.fold, domain)
        in_domain = (features[DOMAIN] == domain).to_numpy()
        recs = recommend_domain(features[in_domain], scores[in_domain], users, segments, popular, seen,
                                counts_total > 0, models, cold_order)
        recs.insert(1, DOMAIN, constant_category(domain, len(recs), DOMAINS))
        short = int((recs[recs["model"] == "final"].groupby(USER_IDX).size() < K).sum())
        log.info("cold-split %s %s: %d users (%s), ranker %s%s", args.fold, domain, len(users),
                 ", ".join(f"{s} {int((segments == s).sum())}" for s in SEGMENTS), meta["kind"],
                 f", {short} user(s) with fewer than {K} unseen items" if short else "")
        parts.append(recs)
    write_parquet(pd.concat(parts, ignore_index=True), Path(args.out) / f"{args.fold}.parquet")


if __name__ == "__main__":
    run_stage(main)
