"""Stage `features` (one run per fold): what the ranker knows about each (user, candidate item) pair.

In:  `data/candidates/<fold>.parquet`, `data/merged/interactions.parquet`, `data/prepared/smm/windows.json`.
Out: `data/features/<fold>.parquet`: user_idx, domain, item_idx, the FEATURES columns and `label`.

Every feature is computed from events strictly before the fold's cut-off and is relative to that moment
(ages and recencies in days before it), so the ranker learns at one cut-off and serves at another
without shifting. label = 1 when the user had the item in the fold's label window (train: label window,
holdout: holdout window; final: unknown, 0).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.common import (DOMAIN, DOMAINS, FOLDS, ITEM_IDX, NS_PER_DAY, RATING, TS, USER_IDX, WINDOW, atomic_path,
                           fold_cutoff, fold_label_window, progress, read_json, run_stage)

log = logging.getLogger("pipeline.features")

FEATURES = [
    "domain_code",
    # candidate sources
    "als_score", "als_rank", "recent_rank", "pop_rank", "als_score_gap", "als_user_norm", "als_item_norm",
    "als_cosine", "recent_affinity", "recent_affinity_share",
    # item, in its domain, before the cut-off
    "item_share_1d", "item_share_3d", "item_share_7d", "item_share_30d", "item_share_all", "item_trend",
    "item_age_days", "item_idle_days",
    # user
    "user_count_domain", "user_count_other", "user_count_7d", "user_idle_days", "user_idle_days_domain",
    "user_rating_domain", "user_mainstream",
]


def _item_stats(before: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    age = (cutoff - before[TS].to_numpy()) / NS_PER_DAY
    frame = pd.DataFrame({DOMAIN: before[DOMAIN].array, ITEM_IDX: before[ITEM_IDX].to_numpy(), "age": age,
                          "in_1d": age <= 1, "in_3d": age <= 3, "in_7d": age <= 7, "in_30d": age <= 30})
    stats = frame.groupby([DOMAIN, ITEM_IDX], observed=True).agg(
        item_count_1d=("in_1d", "sum"), item_count_3d=("in_3d", "sum"), item_count_7d=("in_7d", "sum"),
        item_count_30d=("in_30d", "sum"), item_count_all=("age", "size"),
        item_age_days=("age", "max"), item_idle_days=("age", "min"))
    # Trend: last week against the weekly average of the last 30 days, smoothed for rare items.
    stats["item_trend"] = (stats["item_count_7d"] + 1.0) / (stats["item_count_30d"] * 7.0 / 30.0 + 1.0)
    # Popularity as a share of the domain's events in the window: counts grow with the service, shares
    # mean the same at the training cut-off and at the serving one.
    for window in ("1d", "3d", "7d", "30d", "all"):
        count = stats[f"item_count_{window}"]
        total = count.groupby(level=DOMAIN, observed=True).transform("sum")
        stats[f"item_share_{window}"] = count / total.where(total > 0, 1.0) * 1000.0  # per mille
    return stats.astype("float32").reset_index()


def _user_stats(before: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    """Per (user, domain): activity in that domain and in the other one, recency, rating strength, and how
    mainstream the user's items are (mean log count of their items: low = niche taste, trust ALS more)."""
    age = (cutoff - before[TS].to_numpy()) / NS_PER_DAY
    item_count = before.groupby([DOMAIN, ITEM_IDX], observed=True)[ITEM_IDX].transform("size").to_numpy()
    frame = pd.DataFrame({USER_IDX: before[USER_IDX].to_numpy(), DOMAIN: before[DOMAIN].array, "age": age,
                          "log_rating": np.log1p(before[RATING].to_numpy()), "log_pop": np.log1p(item_count)})
    per_domain = frame.groupby([USER_IDX, DOMAIN], observed=True).agg(
        count=("age", "size"), idle=("age", "min"), rating=("log_rating", "mean"),
        mainstream=("log_pop", "mean")).reset_index()
    overall = frame.assign(recent=age <= 7).groupby(USER_IDX).agg(
        user_count_7d=("recent", "sum"), user_idle_days=("age", "min"))
    counts = per_domain.pivot(index=USER_IDX, columns=DOMAIN, values="count").reindex(columns=list(DOMAINS))
    rows = []
    for domain in DOMAINS:
        other = DOMAINS[1 - DOMAINS.index(domain)]
        own = per_domain[per_domain[DOMAIN] == domain].set_index(USER_IDX)
        block = pd.DataFrame(index=overall.index)
        block[DOMAIN] = domain
        block["user_count_domain"] = counts[domain].reindex(block.index).fillna(0)
        block["user_count_other"] = counts[other].reindex(block.index).fillna(0)
        block["user_idle_days_domain"] = own["idle"].reindex(block.index)
        block["user_rating_domain"] = own["rating"].reindex(block.index)
        block["user_mainstream"] = own["mainstream"].reindex(block.index)
        rows.append(block.join(overall))
    stats = pd.concat(rows).reset_index()
    stats[DOMAIN] = pd.Categorical(stats[DOMAIN], categories=list(DOMAINS))
    value_cols = [c for c in stats.columns if c not in (USER_IDX, DOMAIN)]
    stats[value_cols] = stats[value_cols].astype("float32")
    return stats


@dataclass(frozen=True)
class FeatureTables:
    """What the features are joined from: per-item and per-(user, domain) statistics before the cut-off,
    and the labelled (user, domain, item) triples (None when the fold has no labels)."""

    items: pd.DataFrame
    users: pd.DataFrame
    truth: pd.DataFrame | None


def feature_tables(interactions: pd.DataFrame, *, cutoff: int, label_window: str | None) -> FeatureTables:
    """Statistics from events with timestamp < cutoff, and the labels of `label_window`."""
    before = interactions[interactions[TS] < cutoff]
    truth = None
    if label_window is not None:
        truth = interactions.loc[interactions[WINDOW] == label_window, [USER_IDX, DOMAIN, ITEM_IDX]]
        truth = truth.drop_duplicates().assign(label=np.int8(1))
    return FeatureTables(_item_stats(before, cutoff), _user_stats(before, cutoff), truth)


def join_features(candidates: pd.DataFrame, tables: FeatureTables) -> pd.DataFrame:
    """Candidates with FEATURES columns and an int8 `label`, same row order. Every (user, domain) group of
    candidates must be whole in `candidates` (als_score_gap compares within it)."""
    out = candidates.merge(tables.items, on=[DOMAIN, ITEM_IDX], how="left")
    out = out.merge(tables.users, on=[USER_IDX, DOMAIN], how="left")
    out[DOMAIN] = pd.Categorical(out[DOMAIN], categories=list(DOMAINS))
    out["domain_code"] = out[DOMAIN].cat.codes.astype("float32")
    best = out.groupby([USER_IDX, DOMAIN], observed=True)["als_score"].transform("max")
    out["als_score_gap"] = (best - out["als_score"]).astype("float32")  # how far below the user's best candidate
    # Taste match without popularity: ALS scores grow with item popularity, the cosine does not.
    norms = out["als_user_norm"] * out["als_item_norm"]
    out["als_cosine"] = (out["als_score"] / norms.where(norms > 0)).astype("float32")
    for column in ("item_count_7d", *[f for f in FEATURES if f.startswith("item_share_")],
                   "user_count_domain", "user_count_other", "user_count_7d"):
        out[column] = out[column].fillna(0).astype("float32")
    # Of the item's recent takers, how much are they like this user (recent_affinity sums their similarity).
    out["recent_affinity_share"] = (out["recent_affinity"] / (out["item_count_7d"] + 1.0)).astype("float32")
    if tables.truth is None:
        out["label"] = np.int8(0)
    else:
        out = out.merge(tables.truth, on=[USER_IDX, DOMAIN, ITEM_IDX], how="left")
        out["label"] = out["label"].fillna(0).astype("int8")
    return out[[USER_IDX, DOMAIN, ITEM_IDX, *FEATURES, "label"]]


def make_features(candidates: pd.DataFrame, interactions: pd.DataFrame, *, cutoff: int,
                  label_window: str | None) -> pd.DataFrame:
    """Join candidates with item, user and source features, and label them.

    Args:
        candidates: user_idx, domain, item_idx and the source columns of the candidates stage.
        interactions: user_idx, domain, item_idx, timestamp, rating, window (all events).
        cutoff: features use events with timestamp < cutoff only.
        label_window: the window whose events are the labels, or None for no labels.

    Returns:
        candidates with FEATURES columns and an int8 `label`, same row order.
    """
    return join_features(candidates, feature_tables(interactions, cutoff=cutoff, label_window=label_window))


CHUNK_ROWS = 2_000_000


def _user_chunks(users: np.ndarray, rows: int) -> list[slice]:
    """Slices of about `rows` rows of a sorted user column, never splitting a user."""
    bounds = [0]
    while bounds[-1] < len(users):
        target = bounds[-1] + rows
        if target >= len(users):
            bounds.append(len(users))
            break
        stop = int(np.searchsorted(users, users[target], side="left"))  # where the user at `target` begins
        if stop <= bounds[-1]:  # one user with more than `rows` rows: take all of theirs
            stop = int(np.searchsorted(users, users[target], side="right"))
        bounds.append(stop)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=FOLDS)
    parser.add_argument("--out", default="data/features")
    args = parser.parse_args(argv)
    windows = read_json("data/prepared/smm/windows.json")
    interactions = pd.read_parquet("data/merged/interactions.parquet",
                                   columns=[USER_IDX, DOMAIN, ITEM_IDX, TS, RATING, WINDOW])
    tables = feature_tables(interactions, cutoff=fold_cutoff(windows, args.fold),
                            label_window=fold_label_window(args.fold))
    del interactions
    candidates = pd.read_parquet(f"data/candidates/{args.fold}.parquet")
    candidates = candidates.sort_values([USER_IDX, DOMAIN, ITEM_IDX], kind="stable").reset_index(drop=True)
    # A chunk of users at a time, written as row groups of one file: the joined table of a full-size fold
    # (40M rows x 30 features) does not fit in memory at once.
    rows = positives = 0
    writer = None
    with atomic_path(Path(args.out) / f"{args.fold}.parquet") as tmp:
        try:
            for part in progress(_user_chunks(candidates[USER_IDX].to_numpy(), CHUNK_ROWS), desc="features",
                                 unit="chunk"):
                table = pa.Table.from_pandas(join_features(candidates.iloc[part], tables), preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                rows += table.num_rows
                positives += int(pc.sum(table["label"]).as_py() or 0)
            if writer is None:  # no candidates at all: still a valid, empty file
                join_features(candidates, tables).to_parquet(tmp, index=False)
        finally:
            if writer is not None:
                writer.close()
    log.info("features %s: %d rows, %d users, %d positive labels", args.fold, rows, candidates[USER_IDX].nunique(),
             positives)


if __name__ == "__main__":
    run_stage(main)
