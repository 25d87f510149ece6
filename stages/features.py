"""Stage `features` (one run per fold): what the ranker knows about each (user, candidate item) pair.

In:  `data/candidates/<fold>.parquet`, `data/candidates/<fold>_newcomers.parquet`,
     `data/merged/interactions.parquet`, `data/prepared/smm/windows.json`.
Out: `data/features/<fold>.parquet`: user_idx, domain, item_idx, the FEATURES columns and `label`;
     `data/features/<fold>_newcomers.parquet`: the same for the simulated newcomers (stages.candidates,
     newcomer_candidates), whose user features are those of a newcomer to the row's domain (join_features).

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
                           fold_cutoff, fold_label_window, horizon_of, progress, read_json, run_stage,
                           sorted_unique, stable_argsort, user_domain_group)

log = logging.getLogger("pipeline.features")

FEATURES = [
    "domain_code",
    # candidate sources
    "als_score", "als_rank", "recent_rank", "pop_rank", "als_score_gap", "als_user_norm", "als_item_norm",
    "als_cosine", "recent_affinity", "recent_affinity_share", "als_centered_cosine", "taste_plays",
    "lift_same", "lift_other",
    # item, in its domain, before the cut-off
    "item_share_1d", "item_share_3d", "item_share_7d", "item_share_30d", "item_share_all", "item_trend",
    "item_age_days", "item_idle_days", "item_plays_share_7d", "item_plays_share_30d", "item_plays_share_all",
    "item_forecast",
    # user
    "user_count_domain", "user_count_other", "user_count_7d", "user_idle_days", "user_idle_days_domain",
    "user_rating_domain", "user_mainstream",
]


WINDOW_DAYS = {"1d": 1, "3d": 3, "7d": 7, "30d": 30}
PLAYS_WINDOWS = ("7d", "30d", "all")
# Chain-ladder forecast: items first seen in the data's first days may be old items (their release is unknown),
# and a development factor needs enough items behind it.
FORECAST_MARGIN_DAYS = 7
FORECAST_MIN_ITEMS = 20


def _group_min(keys: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per key in 0..size-1, the smallest value (NaN for a key without values)."""
    out = np.full(size, np.inf)
    np.minimum.at(out, keys, values)
    out[np.isinf(out)] = np.nan
    return out


def chain_ladder_forecast(item: np.ndarray, age: np.ndarray, rating: np.ndarray, n_items: int,
                          horizon_days: int) -> np.ndarray:
    """Each item's expected share of its domain's ratings over the next `horizon_days` (daily shares summed,
    per mille), by the chain-ladder method of claims reserving: what an item took so far, times how much items
    first seen as long ago went on to take next.

    A new item's popularity bursts after its release and decays; a share over any one window mistakes where it
    stands on that curve. The curve is learnt from the data before the cut-off: the development factor of age
    a is the ratings share that items took in their first a+1 days over their first a days (items seen at least
    a+1 days, first seen after the data's first FORECAST_MARGIN_DAYS). An item first seen A days ago takes its
    share so far x (product of the factors of ages A..A+h-1, less one). Items first seen in the data's first
    days, and those whose factors rest on fewer than FORECAST_MIN_ITEMS items, are taken as flat: their mean
    daily share x h.

    Args:
        item: item_idx of each event before the cut-off (one domain).
        age: days from each event to the cut-off (> 0).
        rating: each event's rating (a row's repeats; the share is of the ratings, like item_plays_share_*).
        horizon_days: h, whole days.
    """
    forecast = np.zeros(n_items)
    if len(item) == 0:
        return forecast
    back = age.astype(np.int64)  # whole days before the cut-off, 0 = its last day (age > 0: floor)
    n_days = int(back.max()) + 1
    share = rating / np.bincount(back, rating, minlength=n_days)[back]
    first_back = np.full(n_items, -1, dtype=np.int64)
    np.maximum.at(first_back, item, back)
    observed = first_back + 1  # days from an item's first event to the cut-off (0: never seen)
    taken = np.bincount(item, share, minlength=n_items)
    new = (observed > 0) & (observed <= n_days - FORECAST_MARGIN_DAYS)
    # taken_by[a, A]: share taken at item ages < a by the new items observed A days, summed over A' >= A
    of_new = new[item]
    cell = (first_back[item] - back)[of_new] * (n_days + 1) + observed[item[of_new]]
    by_age = np.bincount(cell, share[of_new], minlength=(n_days + 1) ** 2).reshape(n_days + 1, n_days + 1)
    taken_by = np.vstack([np.zeros(n_days + 1), np.cumsum(by_age, axis=0)])
    taken_by = np.cumsum(taken_by[:, ::-1], axis=1)[:, ::-1]
    items_by = np.cumsum(np.bincount(observed[new], minlength=n_days + 1)[::-1])[::-1]  # new items seen >= A days
    ages = np.arange(1, n_days)
    before_a, before_a1 = taken_by[ages, ages + 1], taken_by[ages + 1, ages + 1]
    known = (items_by[ages + 1] >= FORECAST_MIN_ITEMS) & (before_a > 0)
    log_factor = np.zeros(n_days + 1)  # index a: log factor of age a (0 where unknown)
    log_factor[ages[known]] = np.log(before_a1[known] / before_a[known])
    unknown = np.ones(n_days + 1)
    unknown[ages[known]] = 0
    cum_log = np.r_[0.0, np.cumsum(log_factor)]  # cum_log[a] = sum of the log factors of ages < a
    cum_unknown = np.r_[0.0, np.cumsum(unknown)]
    seen = observed > 0
    forecast[seen] = taken[seen] / observed[seen] * horizon_days  # flat
    end = observed + horizon_days
    developed = new & (end <= n_days) & (cum_unknown[np.minimum(end, n_days)] == cum_unknown[observed])
    growth = np.exp(cum_log[end[developed]] - cum_log[observed[developed]]) - 1.0
    forecast[developed] = taken[developed] * growth
    return forecast * 1000.0


def _item_stats(item: np.ndarray, age: np.ndarray, rating: np.ndarray, n_items: int, horizon_days: int
                ) -> dict[str, np.ndarray]:
    """Per item of one domain (index item_idx): event counts and shares in recent windows, shares of the
    ratings (plays, purchase strength), trend, age, idleness, and a forecast of the share over the horizon.

    Args: the domain's events before the cut-off: item_idx, days before the cut-off, rating (float64)."""
    # slice(None) for all time: a view, no copy of the whole domain's arrays
    recent = {"all": slice(None), **{window: age <= days for window, days in WINDOW_DAYS.items()}}
    counts = {window: np.bincount(item[mask], minlength=n_items).astype(np.float64) for window, mask in recent.items()}
    stats = {"item_count_7d": counts["7d"]}
    # Popularity as a share of the domain's events in the window: counts grow with the service, shares
    # mean the same at the training cut-off and at the serving one.
    for window, count in counts.items():
        stats[f"item_share_{window}"] = count / max(count.sum(), 1.0) * 1000.0  # per mille
    # A row is a (user, item) pair whatever its repeats; the rating counts them (zvuk plays, smm purchases), so
    # its sum is a less noisy measure of how much an item is taken.
    for window in PLAYS_WINDOWS:
        plays = np.bincount(item[recent[window]], rating[recent[window]], minlength=n_items)
        stats[f"item_plays_share_{window}"] = plays / max(plays.sum(), 1e-9) * 1000.0
    known = counts["all"] > 0
    # Trend: last week against the weekly average of the last 30 days, smoothed for rare items.
    stats["item_trend"] = np.where(known, (counts["7d"] + 1.0) / (counts["30d"] * 7.0 / 30.0 + 1.0), np.nan)
    stats["item_age_days"] = -_group_min(item, -age, n_items)
    stats["item_idle_days"] = _group_min(item, age, n_items)
    stats["item_forecast"] = chain_ladder_forecast(item, age, rating, n_items, horizon_days)
    return {name: values.astype(np.float32) for name, values in stats.items()}


def _user_stats(user: np.ndarray, domain: np.ndarray, item: np.ndarray, age: np.ndarray, rating: np.ndarray,
                n_users: int) -> dict[str, np.ndarray]:
    """Per user (index user_idx; column = domain code where there are two): activity in each domain, recency,
    rating strength, and how mainstream the user's items are (mean log count of their items: low = niche
    taste, trust ALS more).

    Args: the events before the cut-off: user_idx and domain code (int64), item_idx, days before the cut-off,
    rating."""
    log_pop = np.empty(len(user))
    for code in range(len(DOMAINS)):  # log count of each event's item, within its domain
        mine = domain == code
        log_pop[mine] = np.log1p(np.bincount(item[mine])[item[mine]])
    key, size = user_domain_group(user, domain), n_users * len(DOMAINS)
    count = np.bincount(key, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rating = np.bincount(key, np.log1p(rating), minlength=size) / count
        mainstream = np.bincount(key, log_pop, minlength=size) / count
    shape = (n_users, len(DOMAINS))
    count_7d = np.bincount(key[age <= 7], minlength=size).astype(np.float64).reshape(shape)
    stats = {"count": count.reshape(shape), "idle_domain": _group_min(key, age, size).reshape(shape),
             "count_7d": count_7d, "rating": rating.reshape(shape), "mainstream": mainstream.reshape(shape),
             "user_count_7d": count_7d.sum(axis=1), "user_idle_days": _group_min(user, age, n_users)}
    return {name: values.astype(np.float32) for name, values in stats.items()}


@dataclass(frozen=True)
class FeatureTables:
    """What the features are looked up in: per-item statistics of each domain (arrays by item_idx),
    per-user statistics (arrays by user_idx), all from events before the cut-off, and the sorted keys of the
    labelled (user, domain, item) triples (None when the fold has no labels)."""

    items: dict[str, dict[str, np.ndarray]]
    users: dict[str, np.ndarray]
    truth: np.ndarray | None


def _triple_key(user: np.ndarray, domain_code: np.ndarray, item: np.ndarray, item_slots: int = 2**31
                ) -> np.ndarray:
    """One int64 per (user, domain, item), in that order of precedence, for items below `item_slots`: the labels
    take the widest range, sorted_by_user the narrowest its candidates allow (so stable_argsort can pack it)."""
    return user_domain_group(user, domain_code) * item_slots + item


def feature_tables(interactions: pd.DataFrame, *, cutoff: int, label_window: str | None,
                   horizon_days: int) -> FeatureTables:
    """Statistics from events with timestamp < cutoff (forecasts over `horizon_days`), and the labels of
    `label_window`."""
    # Arrays masked once, not boolean selections of the whole frame: at full size (60M events) those copied
    # every column of it three times.
    before = interactions[TS].to_numpy() < cutoff
    user = interactions[USER_IDX].to_numpy()[before].astype(np.int64)
    domain = interactions[DOMAIN].cat.codes.to_numpy()[before].astype(np.int64)
    item = interactions[ITEM_IDX].to_numpy()[before]
    age = (cutoff - interactions[TS].to_numpy()[before]) / NS_PER_DAY
    rating = interactions[RATING].to_numpy()[before].astype(np.float64)
    all_items = interactions[ITEM_IDX].to_numpy()
    all_domains = interactions[DOMAIN].cat.codes.to_numpy()
    items = {}
    for code, domain_name in enumerate(DOMAINS):
        in_domain = all_items[all_domains == code]
        n_items = int(in_domain.max()) + 1 if len(in_domain) else 0
        mine = domain == code
        items[domain_name] = _item_stats(item[mine], age[mine], rating[mine], n_items, horizon_days)
    n_users = int(interactions[USER_IDX].max()) + 1 if len(interactions) else 0
    truth = None
    if label_window is not None:
        labelled = (interactions[WINDOW] == label_window).to_numpy()
        truth = sorted_unique(_triple_key(interactions[USER_IDX].to_numpy()[labelled], all_domains[labelled],
                                          all_items[labelled]))
    return FeatureTables(items, _user_stats(user, domain, item, age, rating, n_users), truth)


def _take(values: np.ndarray, index: np.ndarray, fill: float) -> np.ndarray:
    """values[index], `fill` where the index is beyond the table (users with no event at all)."""
    inside = index < len(values)
    out = np.full(len(index), fill, dtype=np.float32)
    out[inside] = values[index[inside]]
    return out


def join_features(candidates: pd.DataFrame, tables: FeatureTables, *, newcomers: bool = False) -> pd.DataFrame:
    """Candidates with FEATURES columns and an int8 `label`, same row order. Every (user, domain) group of
    candidates must be whole in `candidates` (als_score_gap compares within it). newcomers: the candidates are
    simulated newcomers' (stages.candidates.newcomer_candidates), so each row's user features are those of a
    user without history in the row's domain: what a real newcomer's are at the cut-off.

    Plain array lookups by item_idx and user_idx: pandas merges of 40M candidates with the statistics took
    most of this stage's time at full size. The columns are gathered as arrays and framed once (copying the
    candidates, adding columns one by one and then selecting the output's copied every array twice)."""
    domain = pd.Categorical(candidates[DOMAIN], categories=list(DOMAINS))
    code = domain.codes.astype(np.int64)
    user = candidates[USER_IDX].to_numpy().astype(np.int64)
    item = candidates[ITEM_IDX].to_numpy()
    n_rows = len(candidates)
    columns = {name: candidates[name].to_numpy() for name in FEATURES if name in candidates.columns}
    item_columns = next(iter(tables.items.values())).keys()
    for name in item_columns:
        values = np.full(n_rows, np.nan, dtype=np.float32)
        for c, domain_name in enumerate(DOMAINS):
            mine = code == c
            values[mine] = _take(tables.items[domain_name][name], item[mine], np.nan)
        columns[name] = values
    users = tables.users
    # rows of the raveled users x domains tables: the row's own domain, and the other
    own, other = user_domain_group(user, code), user_domain_group(user, 1 - code)
    for name, table, group, fill in (("user_count_domain", "count", own, 0.0),
                                     ("user_count_other", "count", other, 0.0),
                                     ("user_idle_days_domain", "idle_domain", own, np.nan),
                                     ("user_rating_domain", "rating", own, np.nan),
                                     ("user_mainstream", "mainstream", own, np.nan)):
        columns[name] = _take(users[table].ravel(), group, fill)
    columns["user_count_7d"] = _take(users["user_count_7d"], user, 0.0)
    columns["user_idle_days"] = _take(users["user_idle_days"], user, np.nan)
    if newcomers:  # their events in the row's domain hidden: the other domain's are all they have
        for name, fill in (("user_count_domain", 0.0), ("user_idle_days_domain", np.nan),
                           ("user_rating_domain", np.nan), ("user_mainstream", np.nan)):
            columns[name] = np.full(n_rows, fill, dtype=np.float32)
        columns["user_count_7d"] = _take(users["count_7d"].ravel(), other, 0.0)
        columns["user_idle_days"] = _take(users["idle_domain"].ravel(), other, np.nan)
    columns["domain_code"] = code.astype(np.float32)
    score = columns["als_score"]
    best = pd.Series(score).groupby(own).transform("max").to_numpy()
    columns["als_score_gap"] = (best - score).astype(np.float32)  # how far below the user's best candidate
    # Taste match without popularity: ALS scores grow with item popularity, the cosine does not.
    norms = columns["als_user_norm"] * columns["als_item_norm"]
    columns["als_cosine"] = (score / np.where(norms > 0, norms, np.float32(np.nan))).astype(np.float32)
    for name in ("item_count_7d", *[f for f in FEATURES if f.startswith(("item_share_", "item_plays_share_"))]):
        columns[name] = np.where(np.isnan(columns[name]), np.float32(0), columns[name]).astype(np.float32)
    # Of the item's recent takers, how much are they like this user (recent_affinity sums their similarity).
    columns["recent_affinity_share"] = (columns["recent_affinity"] / (columns["item_count_7d"] + np.float32(1.0))
                                       ).astype(np.float32)
    if tables.truth is None or len(tables.truth) == 0:
        label = np.zeros(n_rows, dtype=np.int8)
    else:
        keys = _triple_key(user, code, item)
        found = np.minimum(np.searchsorted(tables.truth, keys), len(tables.truth) - 1)
        label = (tables.truth[found] == keys).astype(np.int8)
    return pd.DataFrame({USER_IDX: candidates[USER_IDX].to_numpy(), DOMAIN: domain, ITEM_IDX: item,
                         **{name: columns[name] for name in FEATURES}, "label": label},
                        index=candidates.index, copy=False)


def make_features(candidates: pd.DataFrame, interactions: pd.DataFrame, *, cutoff: int,
                  label_window: str | None, horizon_days: int) -> pd.DataFrame:
    """Join candidates with item, user and source features, and label them.

    Args:
        candidates: user_idx, domain, item_idx and the source columns of the candidates stage.
        interactions: user_idx, domain, item_idx, timestamp, rating, window (all events).
        cutoff: features use events with timestamp < cutoff only.
        label_window: the window whose events are the labels, or None for no labels.
        horizon_days: how far ahead the recommendations must hold (the item_forecast window).

    Returns:
        candidates with FEATURES columns and an int8 `label`, same row order.
    """
    return join_features(candidates, feature_tables(interactions, cutoff=cutoff, label_window=label_window,
                                                       horizon_days=horizon_days))


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


def sorted_by_user(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates ordered by (user, domain, item), stably, with a fresh index: the order of
    `sort_values([USER_IDX, DOMAIN, ITEM_IDX], kind="stable")`, through one int64 key per row (at full size
    40M rows: about 8 s against 20 s for pandas' three-column sort and its reset_index copy)."""
    domain = candidates[DOMAIN]
    # pandas sorts a categorical by its codes and strings by value, which astype("category") turns into codes
    domain = domain if isinstance(domain.dtype, pd.CategoricalDtype) else domain.astype("category")
    item = candidates[ITEM_IDX].to_numpy()
    key = _triple_key(candidates[USER_IDX].to_numpy(), domain.cat.codes.to_numpy(), item,
                      item_slots=int(item.max()) + 1 if len(item) else 1)
    ordered = candidates.take(stable_argsort(key))
    ordered.index = pd.RangeIndex(len(ordered))
    return ordered


def write_features(candidates_path: str | Path, out: Path, tables: FeatureTables, *, newcomers: bool = False
                   ) -> None:
    """join_features of a candidates file, written to `out` a chunk of users at a time (row groups of one
    file): the joined table of a full-size fold (40M rows x 30 features) does not fit in memory at once."""
    candidates = pd.read_parquet(candidates_path)
    candidates = sorted_by_user(candidates)
    rows = positives = 0
    writer = None
    with atomic_path(out) as tmp:
        try:
            for part in progress(_user_chunks(candidates[USER_IDX].to_numpy(), CHUNK_ROWS), desc="features",
                                 unit="chunk"):
                table = pa.Table.from_pandas(join_features(candidates.iloc[part], tables, newcomers=newcomers),
                                             preserve_index=False)
                # Float columns of many distinct values: dictionary encoding is wasted work, and lz4 is the
                # fastest codec (writing was the largest part of this stage at full size).
                writer = writer or pq.ParquetWriter(tmp, table.schema, use_dictionary=False, compression="lz4")
                writer.write_table(table)
                rows += table.num_rows
                positives += int(pc.sum(table["label"]).as_py() or 0)
            if writer is None:  # no candidates at all: still a valid, empty file
                join_features(candidates, tables, newcomers=newcomers).to_parquet(tmp, index=False)
        finally:
            if writer is not None:
                writer.close()
    log.info("features %s: %d rows, %d users, %d positive labels", out.name, rows, candidates[USER_IDX].nunique(),
             positives)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=FOLDS)
    parser.add_argument("--out", default="data/features")
    args = parser.parse_args(argv)
    windows = read_json("data/prepared/smm/windows.json")
    candidates_path = f"data/candidates/{args.fold}.parquet"
    columns = [USER_IDX, DOMAIN, ITEM_IDX, TS, RATING, WINDOW]
    if pq.ParquetFile(candidates_path).metadata.num_rows:
        interactions = pd.read_parquet("data/merged/interactions.parquet", columns=columns)
    else:  # a fold with no candidates (early-gate's unused early fold): an empty file, at no cost at full size
        interactions = pq.ParquetFile("data/merged/interactions.parquet").schema_arrow.empty_table().select(
            columns).to_pandas()
    tables = feature_tables(interactions, cutoff=fold_cutoff(windows, args.fold),
                            label_window=fold_label_window(args.fold), horizon_days=horizon_of(windows))
    del interactions
    # The candidates are read after the interactions are freed: at full size holding both took the peak from
    # 9.0 to 10.0 GB.
    write_features(candidates_path, Path(args.out) / f"{args.fold}.parquet", tables)
    write_features(f"data/candidates/{args.fold}_newcomers.parquet", Path(args.out) / f"{args.fold}_newcomers.parquet",
                   tables, newcomers=True)


if __name__ == "__main__":
    run_stage(main)
