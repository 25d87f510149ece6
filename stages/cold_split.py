"""Stage `cold-split` (folds holdout and final): the final top-10 of every user, warm by ranker, cold by popularity.

In:  `data/features/<fold>.parquet`, `models/ranker/<fold>/`, `data/merged/*`, `data/prepared/*/targets.parquet`.
Out: `data/recs/<fold>.parquet`, long format: user_idx, domain, segment, model, rank (1..10), item_idx.

A user is cold when they have fewer than `cold.min_interactions` events over both domains before the cut-off;
cold users get the domain's recent top-popular. Everyone else gets the ranker's order. Seen items of the domain
are never recommended; a list the ranker cannot fill to 10 is completed from popularity.

Segments, per (user, domain): cold; cross (not cold, no history in this domain, history in the other: the
cross-domain case); warm (not cold, history in this domain).

Three models are written so that every run shows what the ranker adds:
    popular: recent top-popular;  als: ALS order (popular for users with no history);  final: the product.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.candidates import popular_items, target_users
from stages.common import (DOMAIN, DOMAINS, ITEM_IDX, K, TS, USER_IDX, WINDOW, constant_category, domain_matrix,
                           fold_cutoff, load_params, read_json, read_target_idx, run_stage, section_params,
                           write_parquet)
from stages.ranker_fit import load_ranker, score_candidates

log = logging.getLogger("pipeline.cold_split")

MODELS = ("popular", "als", "final")
SEGMENTS = ("warm", "cross", "cold")


def segment_users(users: np.ndarray, counts_domain: np.ndarray, counts_total: np.ndarray, *,
                  min_interactions: int) -> np.ndarray:
    """Segment of each user in one domain: 'cold', 'cross' or 'warm' (see the module docstring)."""
    cold = counts_total[users] < min_interactions
    has_domain = counts_domain[users] > 0
    return np.where(cold, "cold", np.where(has_domain, "warm", "cross"))


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
    n_items = seen.shape[1]
    head = popular[: k + 20]
    fallback = pd.DataFrame({USER_IDX: np.repeat(users, len(head)), ITEM_IDX: np.tile(head, len(users)),
                             "order": np.tile(np.arange(len(head), dtype=np.float64) + 1e9, len(users))})
    rows = pd.concat([ranked[[USER_IDX, ITEM_IDX, "order"]], fallback], ignore_index=True)
    rows = rows[np.isin(rows[USER_IDX].to_numpy(), users)]
    sub = seen[users].tocoo()
    seen_keys = users[sub.row].astype(np.int64) * n_items + sub.col
    keys = rows[USER_IDX].to_numpy(np.int64) * n_items + rows[ITEM_IDX].to_numpy()
    rows = rows[~np.isin(keys, seen_keys)]
    rows = rows.sort_values([USER_IDX, "order"], kind="stable").drop_duplicates([USER_IDX, ITEM_IDX])
    rows = rows[rows.groupby(USER_IDX).cumcount() < k]
    counts = rows.groupby(USER_IDX).size().reindex(users, fill_value=0)
    short = counts.index[counts.to_numpy() < k].to_numpy()
    extra = []
    for user in short:  # rare: the user has seen most of the popular head; walk the whole popularity order
        have = set(rows.loc[rows[USER_IDX] == user, ITEM_IDX].tolist())
        have.update(seen[user].indices.tolist())
        need = k - int(counts.loc[user])
        add = [i for i in popular if i not in have][:need]
        extra.append(pd.DataFrame({USER_IDX: user, ITEM_IDX: np.array(add, dtype=np.int64),
                                   "order": 2e9 + np.arange(len(add))}))
    if extra:
        rows = pd.concat([rows, *extra], ignore_index=True).sort_values([USER_IDX, "order"], kind="stable")
    out = rows[[USER_IDX, ITEM_IDX]].astype(np.int32)
    out.insert(1, "rank", (out.groupby(USER_IDX).cumcount() + 1).astype(np.int8))
    return out.reset_index(drop=True)


def recommend_domain(features: pd.DataFrame, ranker_scores: np.ndarray, users: np.ndarray, segments: np.ndarray,
                     popular: np.ndarray, seen: sp.csr_matrix, has_history: np.ndarray) -> pd.DataFrame:
    """Lists of the three models for one domain: user_idx, segment, model, rank, item_idx."""
    segment_of = pd.Series(segments, index=users)
    empty = pd.DataFrame({USER_IDX: np.array([], np.int32), ITEM_IDX: np.array([], np.int32),
                          "order": np.array([], np.float64)})
    als = features[features["als_rank"].notna()]
    als = als.assign(order=als["als_rank"].to_numpy())[[USER_IDX, ITEM_IDX, "order"]]
    warm_rows = features.assign(order=-ranker_scores)
    warm_rows = warm_rows[segment_of.reindex(warm_rows[USER_IDX].to_numpy()).to_numpy() != "cold"]
    ranked = {"popular": empty, "als": als[has_history[als[USER_IDX].to_numpy()]], "final": warm_rows}
    parts = []
    for model in MODELS:
        lists = fill_top_k(ranked[model], users, popular, seen, K)
        lists.insert(1, "segment", pd.Categorical(segment_of.reindex(lists[USER_IDX].to_numpy()).to_numpy(),
                                                  categories=list(SEGMENTS)))
        lists.insert(2, "model", constant_category(model, len(lists), MODELS))
        parts.append(lists)
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=("holdout", "final"))
    parser.add_argument("--out", default="data/recs")
    args = parser.parse_args(argv)
    params = load_params()
    min_interactions = section_params(params, "cold")["min_interactions"]
    popular_days = section_params(params, "candidates")["popular_days"]
    windows = read_json("data/prepared/smm/windows.json")
    cutoff = fold_cutoff(windows, args.fold)
    users_map = pd.read_parquet("data/merged/users.parquet")
    items = pd.read_parquet("data/merged/items.parquet")
    interactions = pd.read_parquet("data/merged/interactions.parquet", columns=[USER_IDX, DOMAIN, ITEM_IDX, TS, WINDOW])
    matrix = sp.load_npz(f"data/merged/matrix_{args.fold}.npz").tocsr()
    features = pd.read_parquet(f"data/features/{args.fold}.parquet")
    booster, meta = load_ranker(Path("models/ranker") / args.fold)
    scores = score_candidates(booster, meta, features)
    counts_total = np.diff(matrix.indptr)
    parts = []
    for domain in DOMAINS:
        seen = domain_matrix(matrix, items, domain)
        counts_domain = np.diff(seen.indptr)
        users = target_users(args.fold, domain, interactions, read_target_idx(users_map, domain))
        segments = segment_users(users, counts_domain, counts_total, min_interactions=min_interactions)
        popular = popular_items(interactions[interactions[DOMAIN] == domain], cutoff=cutoff,
                                days=popular_days, n_items=seen.shape[1])
        in_domain = (features[DOMAIN] == domain).to_numpy()
        recs = recommend_domain(features[in_domain], scores[in_domain], users, segments, popular, seen,
                                counts_total > 0)
        recs.insert(1, DOMAIN, constant_category(domain, len(recs), DOMAINS))
        short = int((recs[recs["model"] == "final"].groupby(USER_IDX).size() < K).sum())
        log.info("cold-split %s %s: %d users (%s), ranker %s%s", args.fold, domain, len(users),
                 ", ".join(f"{s} {int((segments == s).sum())}" for s in SEGMENTS), meta["kind"],
                 f", {short} user(s) with fewer than {K} unseen items" if short else "")
        parts.append(recs)
    write_parquet(pd.concat(parts, ignore_index=True), Path(args.out) / f"{args.fold}.parquet")


if __name__ == "__main__":
    run_stage(main)
