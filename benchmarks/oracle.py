"""Benchmark: how close the pipeline comes to the best possible lists on the synthetic sample (a planted-truth oracle).

    dvc repro && python -m benchmarks.oracle

The sample is generated from a known model (stages/sample.py): an event of a user is drawn from their taste
cluster with probability `taste_strength`, else from the whole catalog, each item weighted by its popularity
of that day (base popularity times the trend of new items). The oracle regenerates the sample with the same
params, checks that it is the one in `data/sample`, and ranks each holdout user's unseen items by their
expected number of draws over the holdout window under that model. No recommender can do much better on
average, so the oracle's NDCG@10 is the ceiling that popular, ALS-only and final are judged against.
It knows more than any recommender could at the cut-off, though: the taste of users with no history yet,
and items first taken inside the holdout window. "oracle, knowable" takes both away (only items with an
event before the cut-off; a user with no event before it gets the scores averaged over the tastes): the
ceiling for a recommender that knew the generating model but only the data before the cut-off.
"oracle, counted" goes one step further: it keeps the tastes and the planted shape of every item's popularity
over time (flat, or the release burst and its decay) but estimates each item's level from the ratings of its
events before the cut-off (a row's rating counts its repeats), as any recommender must. What separates it from
"oracle, knowable" is the noise of those counts.
Users and truth are those of `stages.evaluate`; the oracle scores dense users x items arrays, so it is meant
for sample scales up to about 0.05.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.common import (DOMAIN, DOMAINS, ITEM, ITEM_IDX, K, NS_PER_DAY, RATING, TS, USER, USER_IDX,
                           domain_matrix, load_params, section_params)
from stages.candidates import read_fold_users
from stages.evaluate import per_user_metrics, scored_truth
from stages.sample import START_NS, make_sample


def oracle_scores(weights: np.ndarray, cluster: np.ndarray, days: np.ndarray, taste_strength: float,
                  n_tastes: int) -> np.ndarray:
    """Expected draws of each item over `days` for a user of each taste: tastes x items.

    Args:
        weights: days x items, the planted weight of each item on each day.
        cluster: taste cluster of each item.
        days: the day indices of the window.
    """
    window = weights[days]                                            # days x items
    overall = (window / window.sum(axis=1, keepdims=True)).sum(axis=0)
    scores = np.tile((1.0 - taste_strength) * overall, (n_tastes, 1))
    for taste in range(n_tastes):
        mine = cluster == taste
        in_cluster = window[:, mine].sum(axis=1, keepdims=True)
        share = np.divide(window[:, mine], in_cluster, out=np.zeros_like(window[:, mine]), where=in_cluster > 0)
        scores[taste, mine] += taste_strength * share.sum(axis=0)
    return scores


def counted_weights(weights: np.ndarray, daily_counts: np.ndarray) -> np.ndarray:
    """The planted weights with each item's level replaced by one estimated from its events: days x items.

    An item's weight is level x shape(day), the shape planted (flat, or the burst after release). Over the days
    of `daily_counts` (days x items, the events before the cut-off), an item's expected events are
    level x sum over days of shape(day) x events(day) / total weight(day). The estimate solves that for the
    level; an item without events gets 0. "Events" may be weighted (by rating) as long as both sides are.

    Args:
        weights: days x items, the planted weight of each item on each day (it gives the shapes only).
        daily_counts: the first days of the period x items, events of each item on each day.
    """
    n_days = daily_counts.shape[0]
    peak = weights.max(axis=0)
    shape = np.divide(weights, peak, out=np.zeros_like(weights), where=peak > 0)
    exposure = (shape[:n_days] * (daily_counts.sum(axis=1) / weights[:n_days].sum(axis=1))[:, None]).sum(axis=0)
    level = np.divide(daily_counts.sum(axis=0), exposure, out=np.zeros(weights.shape[1]), where=exposure > 0)
    return shape * level


def oracle_lists(scores: np.ndarray, user_taste: np.ndarray, seen: sp.csr_matrix, k: int = K) -> np.ndarray:
    """Top-k unseen items per user (users x k item positions), by the score row of the user's taste."""
    dense = scores[user_taste].copy()
    rows, cols = seen.nonzero()
    dense[rows, cols] = -np.inf
    return np.argsort(-dense, axis=1, kind="stable")[:, :k]


def _known_scores(scores: np.ndarray, position: pd.Series, known: np.ndarray) -> np.ndarray:
    """Scores (tastes x planted item positions) in the pipeline's item_idx order; -inf for unknown items."""
    out = np.full((scores.shape[0], len(position)), -np.inf)
    out[:, known] = scores[:, position.to_numpy()[known].astype(np.int64)]
    return out


def _knowable(scores: np.ndarray, unseen_items: np.ndarray) -> np.ndarray:
    """Scores a recommender could know at the cut-off: a last row for users without history (the mean over the
    tastes), and -inf for items with no event before it."""
    out = np.vstack([scores, scores.mean(axis=0)])
    out[:, unseen_items] = -np.inf
    return out


def _daily_counts(interactions: pd.DataFrame, domain: str, position: pd.Series, n_days: int,
                  n_positions: int) -> np.ndarray:
    """Ratings of each planted item position summed over each of the first n_days days (before the cut-off)."""
    events = interactions[(interactions[DOMAIN] == domain).to_numpy()]
    day = ((events[TS].to_numpy() - START_NS) // NS_PER_DAY).astype(np.int64)
    events = events[day < n_days]
    day = day[day < n_days]
    item_pos = position.to_numpy()[events[ITEM_IDX].to_numpy()].astype(np.int64)  # every event's item is known
    counts = np.zeros((n_days, n_positions))
    np.add.at(counts, (day, item_pos), events[RATING].to_numpy().astype(np.float64))
    return counts


def main() -> None:
    params = load_params()
    sample_params = section_params(params, "sample")
    planted: dict = {}
    files = make_sample(**sample_params, planted=planted)
    on_disk = pd.read_parquet(Path(params["data"]["raw_dir"]) / "train_smm.parquet")
    if params["data"]["raw_dir"] != "data/sample" or not on_disk.equals(files["train_smm"]):
        raise SystemExit("benchmarks.oracle: data/sample is not the sample of params.yaml (run `dvc repro` first)")
    windows = json.loads(Path("data/prepared/smm/windows.json").read_text())
    users = pd.read_parquet("data/merged/users.parquet")
    items = pd.read_parquet("data/merged/items.parquet")
    interactions = pd.read_parquet("data/merged/interactions.parquet")
    seen = sp.load_npz("data/merged/matrix_holdout.npz").tocsr()
    recs = pd.read_parquet("data/recs/holdout.parquet")
    user_ids, tastes = planted["users"]
    taste_of = pd.Series(tastes, index=user_ids)
    rows = []
    for domain in DOMAINS:
        item_ids, cluster, weights = planted[domain]
        first = int((windows["holdout_start"] - START_NS) // NS_PER_DAY)
        last = int((windows["end"] - START_NS) // NS_PER_DAY)
        days = np.arange(first, min(last, weights.shape[0] - 1) + 1)
        scores = oracle_scores(weights, cluster, days, sample_params["taste_strength"], sample_params["n_tastes"])
        truth = scored_truth(interactions, seen, items, domain, "holdout",
                             read_fold_users("data/candidates", "holdout", domain))
        truth_users = np.unique(truth[USER_IDX].to_numpy())
        # The model's item positions in the pipeline's item_idx order, and each truth user's taste.
        domain_items = items[items["domain"] == domain].sort_values(ITEM_IDX)
        position = pd.Series(np.arange(len(item_ids)), index=item_ids).reindex(domain_items[ITEM].to_numpy())
        known = position.notna().to_numpy()
        item_scores = _known_scores(scores, position, known)
        user_taste = taste_of.reindex(users.set_index(USER_IDX).loc[truth_users, USER].to_numpy()).to_numpy()
        user_taste = user_taste.astype(np.int64)
        domain_seen = domain_matrix(seen, items, domain)
        # What a recommender could know at the cut-off: only items with an event before it, and no taste for
        # a user with no event before it (their row: the scores averaged over the tastes).
        unseen_items = np.bincount(domain_seen.indices, minlength=domain_seen.shape[1]) == 0
        knowable_scores = _knowable(item_scores, unseen_items)
        knowable_taste = np.where(np.diff(seen.indptr)[truth_users] > 0, user_taste, len(item_scores))
        # The same, with each item's level estimated from the ratings before the cut-off.
        counted = counted_weights(weights, _daily_counts(interactions, domain, position, first, len(item_ids)))
        counted_scores = oracle_scores(counted, cluster, days, sample_params["taste_strength"],
                                       sample_params["n_tastes"])
        counted_scores = _knowable(_known_scores(counted_scores, position, known), unseen_items)
        row = {"domain": domain, "truth users": len(truth_users)}
        for name, (table_, taste_) in {"oracle": (item_scores, user_taste),
                                       "oracle, knowable": (knowable_scores, knowable_taste),
                                       "oracle, counted": (counted_scores, knowable_taste)}.items():
            top = oracle_lists(table_, taste_, domain_seen[truth_users])
            lists = pd.DataFrame({USER_IDX: np.repeat(truth_users, K),
                                  "rank": np.tile(np.arange(1, K + 1), len(truth_users)), ITEM_IDX: top.ravel()})
            row[name] = float(per_user_metrics(lists, truth)["ndcg"].mean())
        for model in ("popular", "als", "final"):
            mine = recs[(recs["model"] == model) & (recs["domain"] == domain)]
            row[model] = float(per_user_metrics(mine, truth)["ndcg"].mean())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("domain")
    score = np.sqrt(table.loc["smm"] * table.loc["zvuk"])
    score["truth users"] = table["truth users"].sum()
    table.loc["score (geometric mean)"] = score
    print(f"Holdout NDCG@10 on the sample ({', '.join(f'{k}={v}' for k, v in sample_params.items())})\n")
    print(table[["truth users", "popular", "als", "final", "oracle", "oracle, knowable", "oracle, counted"]]
          .to_markdown(floatfmt=".4f"))
    best = max(score["popular"], score["als"])
    print(f"\nfinal / best baseline {score['final'] / best:.3f}; oracle / best baseline {score['oracle'] / best:.3f}; "
          f"knowable oracle / best baseline {score['oracle, knowable'] / best:.3f}; "
          f"counted oracle / best baseline {score['oracle, counted'] / best:.3f}; "
          f"final / knowable oracle {score['final'] / score['oracle, knowable']:.3f}")


if __name__ == "__main__":
    main()
