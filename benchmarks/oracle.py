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
"oracle, inferred" is "oracle, knowable" without the given taste: each user's taste is the posterior over the
tastes given their events of both domains before the cut-off (taste_log_likelihood), as a recommender that knew
the generating model could infer it. Where it falls short of "knowable", the taste is not in the data yet.
A second table splits every column by domain and segment (warm, cross, cold, as `cold-split` assigns them), to
show where the room left is: a segment whose final is far below its knowable oracle.
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

COLUMNS = ["truth users", "popular", "als", "final", "oracle", "oracle, knowable", "oracle, inferred",
           "oracle, counted"]
FORMATS = ("", ".0f") + (".4f",) * (len(COLUMNS) - 1)  # the index, the users, the NDCGs


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


def taste_log_likelihood(user: np.ndarray, day: np.ndarray, item_pos: np.ndarray, weights: np.ndarray,
                         cluster: np.ndarray, taste_strength: float, n_tastes: int, n_users: int) -> np.ndarray:
    """log P(the items of each user's events | taste), up to a term common to every taste: users x tastes.

    Under the generator an event of day d takes item i from the user's taste cluster c with probability
    taste_strength (i's share of c's weight that day), else from the whole catalog (i's share of all weight);
    a cluster with no weight that day falls back to the whole catalog. Item i's own weight is common to every
    taste and left out. A row counts as one event: repeats of a pair and the rating, which the generator also
    ties to the taste, are not used, so the taste is inferred a little less sharply than it could be.

    Args:
        user, day, item_pos: one entry an event (row): user index, day of the period, planted item position.
        weights: days x items, the planted weights; cluster: each item's taste cluster.
    """
    total = weights.sum(axis=1)
    per_cluster = np.stack([weights[:, cluster == taste].sum(axis=1) for taste in range(n_tastes)], axis=1)
    on_day = per_cluster[day]                                             # events x tastes
    likelihood = np.where(on_day > 0, (1.0 - taste_strength) / total[day][:, None], 1.0 / total[day][:, None])
    own = cluster[item_pos]
    likelihood[np.arange(len(day)), own] += taste_strength / on_day[np.arange(len(day)), own]
    out = np.zeros((n_users, n_tastes))
    np.add.at(out, user, np.log(likelihood))
    return out


def taste_posterior(log_likelihood: np.ndarray) -> np.ndarray:
    """P(taste | events), users x tastes, from a uniform prior (the generator draws tastes uniformly); a user
    without events keeps the prior."""
    shifted = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


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


def segment_means(per_user: dict[str, pd.Series], segment: pd.Series) -> pd.DataFrame:
    """Mean NDCG of each list maker (model or oracle) over the truth users of each segment.

    Args:
        per_user: name -> NDCG@10 indexed by user_idx, every truth user of the domain.
        segment: the truth users' segments (warm, cross, cold), indexed by user_idx.

    Returns:
        one row a segment: segment, truth users, one column a name.
    """
    rows = [{"segment": name_of_segment, "truth users": len(users),
             **{name: float(ndcg.reindex(users).mean()) for name, ndcg in per_user.items()}}
            for name_of_segment, users in segment.groupby(segment).groups.items()]
    return pd.DataFrame(rows)


def _planted_positions(items: pd.DataFrame, domain: str, item_ids: np.ndarray) -> pd.Series:
    """The planted position of each of the domain's items, in the pipeline's item_idx order (NaN: not planted)."""
    domain_items = items[items["domain"] == domain].sort_values(ITEM_IDX)
    return pd.Series(np.arange(len(item_ids)), index=item_ids).reindex(domain_items[ITEM].to_numpy())


def _posterior_at_cutoff(planted: dict, positions: dict[str, pd.Series], interactions: pd.DataFrame, n_users: int,
                         cutoff: int, sample_params: dict) -> np.ndarray:
    """P(taste | events before the cut-off in both domains), every user_idx x tastes (positions: per domain, as
    _planted_positions)."""
    log_likelihood = np.zeros((n_users, sample_params["n_tastes"]))
    before = interactions[(interactions[TS] < cutoff).to_numpy()]
    for domain in DOMAINS:
        _, cluster, weights = planted[domain]
        position = positions[domain]
        events = before[(before[DOMAIN] == domain).to_numpy()]
        day = np.minimum((events[TS].to_numpy() - START_NS) // NS_PER_DAY, weights.shape[0] - 1)
        log_likelihood += taste_log_likelihood(
            events[USER_IDX].to_numpy(), day, position.to_numpy()[events[ITEM_IDX].to_numpy()].astype(np.int64),
            weights, cluster, sample_params["taste_strength"], sample_params["n_tastes"], n_users)
    return taste_posterior(log_likelihood)


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
    positions = {domain: _planted_positions(items, domain, planted[domain][0]) for domain in DOMAINS}
    posterior = _posterior_at_cutoff(planted, positions, interactions, len(users), windows["holdout_start"],
                                     sample_params)
    rows, segment_rows = [], []
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
        position = positions[domain]
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
        # What it could know of the taste too: the posterior over tastes given the user's events of both domains.
        taste_scores = knowable_scores[:-1]
        inferred_scores = posterior[truth_users] @ np.where(np.isfinite(taste_scores), taste_scores, 0.0)
        inferred_scores[:, ~np.isfinite(taste_scores[0])] = -np.inf
        row = {"domain": domain, "truth users": len(truth_users)}
        per_user = {}  # model or oracle -> NDCG@10 of each truth user
        for name, (table_, taste_) in {"oracle": (item_scores, user_taste),
                                       "oracle, knowable": (knowable_scores, knowable_taste),
                                       "oracle, inferred": (inferred_scores, np.arange(len(truth_users))),
                                       "oracle, counted": (counted_scores, knowable_taste)}.items():
            top = oracle_lists(table_, taste_, domain_seen[truth_users])
            lists = pd.DataFrame({USER_IDX: np.repeat(truth_users, K),
                                  "rank": np.tile(np.arange(1, K + 1), len(truth_users)), ITEM_IDX: top.ravel()})
            per_user[name] = per_user_metrics(lists, truth)["ndcg"]
        domain_recs = recs[recs["domain"] == domain]
        for model in ("popular", "als", "final"):
            per_user[model] = per_user_metrics(domain_recs[domain_recs["model"] == model], truth)["ndcg"]
        row.update({name: float(ndcg.mean()) for name, ndcg in per_user.items()})
        rows.append(row)
        segment = domain_recs.drop_duplicates(USER_IDX).set_index(USER_IDX)["segment"].astype(str)
        segment_rows.append(segment_means(per_user, segment.reindex(truth_users)).assign(domain=domain))
    table = pd.DataFrame(rows).set_index("domain")
    score = np.sqrt(table.loc["smm"] * table.loc["zvuk"])
    score["truth users"] = table["truth users"].sum()
    table.loc["score (geometric mean)"] = score
    print(f"Holdout NDCG@10 on the sample ({', '.join(f'{k}={v}' for k, v in sample_params.items())})\n")
    print(table[COLUMNS].to_markdown(floatfmt=FORMATS))
    print("\nBy segment (where is the room left: the oracles against final, per domain and segment)\n")
    print(pd.concat(segment_rows)[["domain", "segment", *COLUMNS]].to_markdown(index=False,
                                                                            floatfmt=("",) + FORMATS))
    best = max(score["popular"], score["als"])
    print(f"\nfinal / best baseline {score['final'] / best:.3f}; oracle / best baseline {score['oracle'] / best:.3f}; "
          f"knowable oracle / best baseline {score['oracle, knowable'] / best:.3f}; "
          f"inferred oracle / best baseline {score['oracle, inferred'] / best:.3f}; "
          f"counted oracle / best baseline {score['oracle, counted'] / best:.3f}; "
          f"final / knowable oracle {score['final'] / score['oracle, knowable']:.3f}")


if __name__ == "__main__":
    main()
