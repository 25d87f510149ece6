"""Stage `sample`: a synthetic two-domain data set in the real hackathon schema, with planted structure.

Out: `data/sample/{train,test,targets}_{smm,zvuk}.parquet`, column order and dtypes exactly as DATA.md describes.

What is planted, so that every later stage has something real to find:
- one taste per user (a cluster index) shared by both domains; items of each domain belong to clusters;
  a share `taste_strength` of a user's interactions comes from their cluster, the rest from global popularity;
- Zipf-like item popularity; `new_item_share` of the items are released during the period and trend
  (a popularity burst that decays after release);
- users in one domain only, users in both, and among the latter some who start the second domain late;
- log-normal activity, so many users have very little history;
- repeats of a (user, item) pair become one row with a larger rating (smm: 1.554808 or k x 2.802427,
  zvuk: an integer play count), so rating strength carries signal.

`scale=1.0` gives the full hackathon size (about 300,000 users, 274,000 items, 52 million rows).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stages.common import (DOMAINS, ITEM, NS_PER_DAY, RATING, RAW_COLUMNS, TS, USER,
                           check_section, load_params, other_domain, progress, run_stage, run_starts, section_params,
                           stable_argsort, write_parquet)

log = logging.getLogger("pipeline.sample")

# Full-size figures of DATA.md.
FULL_USERS = 300_000
FULL_ITEMS = {"smm": 167_512, "zvuk": 106_634}
FULL_ROWS = {"smm": 20_689_590, "zvuk": 30_957_060}
FULL_DOMAIN_USERS = {"smm": 183_048, "zvuk": 161_988}
START_NS = 1_673_740_800 * 10**9  # 2023-01-15 00:00 UTC
END_NS = {"smm": 1_682_414_016 * 10**9, "zvuk": 1_682_478_336 * 10**9}  # 2023-04-25 09:13, 2023-04-26 03:05
SMM_VIEW, SMM_UNIT = 1.554808, 2.802427
TEST_USER_SHARE = 0.73  # zvuk: 118,069 test users of 161,988


@dataclass(frozen=True)
class _Users:
    ids: np.ndarray          # int64 external ids
    taste: np.ndarray        # cluster index per user
    in_domain: dict          # domain -> bool mask
    start_day: dict          # domain -> first active day (float)
    end_day: dict            # domain -> last active day (float)


def make_sample(*, scale: float, seed: int, taste_strength: float, n_tastes: int, share_both: float,
                late_start_share: float, new_item_share: float, planted: dict | None = None
                ) -> dict[str, pd.DataFrame]:
    """Generate the hackathon files.

    Args:
        planted: if given, filled with what was planted, for an oracle (benchmarks/oracle.py): "users" ->
            (user ids, taste cluster of each), and per domain -> (item ids, cluster of each, item weight of
            each day: days x items). Filling it draws no random numbers, so the files stay the same.

    Returns:
        {"train_smm": ..., "test_smm": ..., "targets_smm": ..., "train_zvuk": ..., ...}: train and test in the
        real schema (test = the train rows of the test users), targets with one `user_id` column.
    """
    check_section("sample", scale=scale, seed=seed, taste_strength=taste_strength, n_tastes=n_tastes,
                  share_both=share_both, late_start_share=late_start_share, new_item_share=new_item_share)
    rng = np.random.default_rng(seed)
    n_days = {d: (END_NS[d] - START_NS) / NS_PER_DAY for d in DOMAINS}
    users = _make_users(rng, max(60, round(FULL_USERS * scale)), n_tastes, share_both, late_start_share,
                        min(n_days.values()))
    if planted is not None:
        planted["users"] = (users.ids, users.taste)
    out: dict[str, pd.DataFrame] = {}
    for domain in DOMAINS:
        n_items = max(30, round(FULL_ITEMS[domain] * scale))
        rows_per_user = FULL_ROWS[domain] / FULL_DOMAIN_USERS[domain]
        train = _make_domain(rng, domain, users, n_items, rows_per_user, taste_strength, n_tastes,
                             new_item_share, n_days[domain], planted)
        out[f"train_{domain}"] = train
        domain_users = train[USER].unique()
        test_users = rng.choice(domain_users, size=max(1, round(TEST_USER_SHARE * len(domain_users))),
                                replace=False)
        out[f"test_{domain}"] = train[train[USER].isin(test_users)]
        # Targets: a few users known only in the other domain, and a few nobody has seen (cold).
        other_only = users.ids[~users.in_domain[domain] & users.in_domain[other_domain(domain)]]
        n_targets = max(1, len(test_users) // 20)
        cross = rng.choice(other_only, size=min(n_targets, len(other_only)), replace=False)
        unknown = _fresh_ids(rng, users.ids, max(1, n_targets // 5))
        out[f"targets_{domain}"] = pd.DataFrame({USER: np.concatenate([cross, unknown]).astype("int64")})
        log.info("sample %s: %d rows, %d users, %d items, %d test users, %d targets", domain, len(train),
                 len(domain_users), train[ITEM].nunique(), len(test_users), len(out[f"targets_{domain}"]))
    return out


def _fresh_ids(rng: np.random.Generator, taken: np.ndarray, n: int) -> np.ndarray:
    candidates = rng.integers(1_000_010, 9_999_983, size=n * 4 + 8)
    candidates = np.unique(candidates[~np.isin(candidates, taken)])
    return rng.permutation(candidates)[:n]


def _make_users(rng: np.random.Generator, n_users: int, n_tastes: int, share_both: float,
                late_start_share: float, n_days: float) -> _Users:
    ids = np.unique(rng.integers(1_000_010, 9_999_983, size=int(n_users * 1.05) + 16))
    ids = rng.permutation(ids)[:n_users].astype(np.int64)
    taste = rng.integers(0, n_tastes, size=n_users)
    # Real shares: of the users of one domain only, smm is a bit more common (183K vs 162K users).
    kind = rng.choice(3, size=n_users, p=[share_both, (1 - share_both) * 0.53, (1 - share_both) * 0.47])
    in_domain = {"smm": kind != 2, "zvuk": kind != 1}
    start_day, end_day = {}, {}
    late = (kind == 0) & (rng.random(n_users) < late_start_share)
    late_domain = rng.integers(0, 2, size=n_users)  # which domain a late user starts late
    for d_index, domain in enumerate(DOMAINS):
        # Most users are customers from before the period; the others join at a steady pace.
        start = np.where(rng.random(n_users) < 0.6, 0.0, rng.random(n_users) * n_days * 0.9)
        is_late = late & (late_domain == d_index)
        start[is_late] = n_days - rng.random(is_late.sum()) * 24.0  # the second service in the last weeks
        churn = rng.random(n_users) < 0.2
        end = np.full(n_users, n_days)
        end[churn] = start[churn] + (n_days - start[churn]) * rng.random(churn.sum())
        start_day[domain], end_day[domain] = start, end
    return _Users(ids, taste, in_domain, start_day, end_day)


def _make_domain(rng: np.random.Generator, domain: str, users: _Users, n_items: int, rows_per_user: float,
                 taste_strength: float, n_tastes: int, new_item_share: float, n_days: float,
                 planted: dict | None = None) -> pd.DataFrame:
    # Items, stored sorted by taste cluster so that a cluster is a contiguous range of positions.
    cluster = np.sort(rng.integers(0, n_tastes, size=n_items))
    bounds = np.searchsorted(cluster, np.arange(n_tastes + 1))
    population = n_items + max(5, n_items // 500)  # gaps in the id range, like the real ids
    item_ids = rng.permutation(np.sort(rng.choice(np.arange(1, population + 1), size=n_items, replace=False)))
    base = (1.0 + rng.permutation(n_items)) ** -0.9
    release = np.where(rng.random(n_items) < new_item_share, rng.random(n_items) * n_days, -1.0)

    # Interactions per user: log-normal, so many users have very little history.
    members = np.flatnonzero(users.in_domain[domain])
    sigma = 1.3
    raw_mean = rows_per_user * 1.45  # repeats of a pair collapse into one row
    # A user's events grow with the days they are active (a steady rate per user), so the daily volume
    # stays about level over the period, as in the real data.
    span = np.maximum(users.end_day[domain][members] - users.start_day[domain][members], 0.5)
    rate = np.exp(rng.normal(-sigma**2 / 2, sigma, size=len(members)))
    n_events = rate * span * (raw_mean / span.mean())
    n_events = np.clip(np.round(n_events), 1, max(1, n_items // 3)).astype(np.int64)

    # Item weights of every day: base popularity times the trend of items released during the period.
    days = np.arange(int(n_days) + 1)[:, None]
    age = days - release[None, :]
    trend = np.where(release < 0, 1.0, np.where(age < 0, 0.0, 1.0 + 8.0 * np.exp(-np.maximum(age, 0) / 10.0)))
    weights = base[None, :] * trend
    cum_by_day = np.cumsum(weights, axis=1)
    if planted is not None:
        planted[domain] = (item_ids, cluster, weights)
    del age, trend, weights

    # Users in chunks: a (user, item) pair never spans two chunks, so each chunk is final on its own and
    # memory stays bounded at full scale.
    parts = []
    chunks = np.array_split(np.arange(len(members)), max(1, len(members) // CHUNK_USERS))
    for chunk in progress(chunks, desc=f"sample {domain}", unit="chunk"):
        parts.append(_chunk_pairs(rng, members[chunk], n_events[chunk], users, domain, cum_by_day, bounds,
                                  taste_strength, n_items, n_days))
    u, i, t, n, taste = (np.concatenate(column) for column in zip(*parts))
    extra = rng.geometric(0.5, size=len(u)) - 1 + taste * rng.integers(0, 3, len(u))
    if domain == "smm":
        view_only = (n == 1) & (rng.random(len(u)) < 0.72)
        rating = np.where(view_only, SMM_VIEW, (n + extra) * SMM_UNIT).astype("float64")
    else:
        rating = (n + extra).astype("int64")
    order = np.argsort(t, kind="stable")
    columns = {USER: users.ids[u[order]], ITEM: item_ids[i[order]].astype("int64"), TS: t[order],
               RATING: rating[order]}
    # In the file's column order, one array a column: selecting columns of a consolidated frame, at 36M rows,
    # copied them twice.
    return pd.DataFrame({name: columns[name] for name in RAW_COLUMNS[domain]}, copy=False)


CHUNK_USERS = 20_000


def _chunk_pairs(rng: np.random.Generator, members: np.ndarray, n_events: np.ndarray, users: _Users, domain: str,
                 cum_by_day: np.ndarray, bounds: np.ndarray, taste_strength: float, n_items: int, n_days: float
                 ) -> tuple[np.ndarray, ...]:
    """Events of some users, collapsed to one row per (user, item): (user, item, ts, events, from taste)."""
    user_pos = np.repeat(members, n_events)
    start, end = users.start_day[domain][user_pos], users.end_day[domain][user_pos]
    day = start + (end - start) * rng.random(len(user_pos))
    from_taste = rng.random(len(user_pos)) < taste_strength
    source = users.taste[user_pos]
    day_index = np.minimum(day.astype(np.int64), int(n_days))
    # Cumulative weight (on the event's own day) at the edges of the range to draw from: the user's cluster,
    # or the whole catalog.
    lo_pos = np.where(from_taste, bounds[source], 0)
    hi_pos = np.where(from_taste, bounds[source + 1], n_items)
    lo = np.where(lo_pos > 0, cum_by_day[day_index, np.maximum(lo_pos - 1, 0)], 0.0)
    hi = cum_by_day[day_index, np.maximum(hi_pos - 1, 0)]
    empty = hi <= lo  # a cluster with nothing released yet: fall back to global popularity
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, cum_by_day[day_index, -1], hi)
    target = lo + (hi - lo) * rng.random(len(user_pos))
    item_pos = np.empty(len(user_pos), dtype=np.int64)
    # searchsorted needs one sorted row: group events by day. As int16 the stable sort is a radix sort (the
    # same order, a third of the time); days fit easily.
    by_day = np.argsort(day_index.astype(np.int16), kind="stable")
    day_bounds = np.searchsorted(day_index[by_day], np.arange(cum_by_day.shape[0] + 1))
    for d in range(cum_by_day.shape[0]):
        rows = by_day[day_bounds[d]:day_bounds[d + 1]]
        item_pos[rows] = np.searchsorted(cum_by_day[d], target[rows], side="right")
    item_pos = np.minimum(item_pos, n_items - 1)
    ts = START_NS + (day * NS_PER_DAY).astype(np.int64)

    # Repeats of a pair become one row at the time of one of its events (the last one would pile rows up at
    # the end of the period); more events -> a higher rating.
    key = user_pos * n_items + item_pos
    order = stable_argsort(key)
    sorted_key = key[order]
    starts = run_starts(sorted_key)
    first = order[starts]
    count = np.diff(np.r_[starts, len(sorted_key)])
    taste = np.maximum.reduceat(from_taste[order].astype(np.int64), starts)
    return user_pos[first], item_pos[first], ts[first], count, taste


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/sample")
    args = parser.parse_args(argv)
    params = section_params(load_params(), "sample")
    files = make_sample(**params)
    for name, frame in files.items():
        write_parquet(frame, f"{args.out}/{name}.parquet")


if __name__ == "__main__":
    run_stage(main)
