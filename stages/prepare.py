"""Stage `prepare` (one run per domain): validate and normalise a domain's input, split its history by time.

In:  `<raw_dir>/train_<domain>.parquet`, `<raw_dir>/test_<domain>.parquet`, optional
     `<raw_dir>/targets_<domain>.parquet`
     (and the other domain's train/test timestamps, so both domains share one clock).
Out: `data/prepared/<domain>/events.parquet`: user_id, item_id, timestamp (int64 ns), rating (float64), window
     (history / label / holdout), one row per (user, item), sorted by time;
     `data/prepared/<domain>/targets.parquet`: user_id of every user who must get a submission row;
     `data/prepared/<domain>/windows.json`: the cut-off moments.

The windows, with h = eval.horizon_days and T = the last timestamp of both domains:
    history < T - 3h <= early < T - 2h <= label < T - h <= holdout <= T
(early: the labels of a second, earlier training fold; to every other fold it is history.)
Test files hold history rows copied from train; their union with train (exact copies dropped) is the history.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stages.common import (DOMAINS, ITEM, NS_PER_DAY, RATING, RAW_COLUMNS, TS, USER, WINDOW, WINDOW_NAMES,
                           PipelineError, check_section, load_params, run_stage, run_starts, section_params,
                           stable_argsort, write_json, write_parquet)

log = logging.getLogger("pipeline.prepare")

# Plausible timestamps in ns: 2000-01-01 .. 2100-01-01. Seconds or ms since epoch fall far below.
TS_MIN, TS_MAX = 946_684_800 * 10**9, 4_102_444_800 * 10**9
ID_MAX = 2**63 - 1


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet file, turning a missing or unreadable file into a PipelineError that names it."""
    if not path.exists():
        raise PipelineError(f"{path}: file not found")
    try:
        names = pq.read_schema(path).names
        missing = [c for c in columns or [] if c not in names]
        if not missing:
            return pq.read_table(path, columns=columns).to_pandas()
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise PipelineError(f"{path}: not a readable parquet file ({type(err).__name__})") from None
    raise PipelineError(f"{path}: missing column {missing[0]}")


def _as_int64(values: pd.Series, name: str, column: str) -> np.ndarray:
    """Convert ids or timestamps to int64 when that loses nothing; raise otherwise."""
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.dt.tz_localize(None) if getattr(values.dt, "tz", None) is not None else values
        return values.astype("datetime64[ns]").astype("int64").to_numpy()
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="int64")  # no copy when already int64
    if pd.api.types.is_float_dtype(values):
        array = values.to_numpy()
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)) or np.any(np.abs(array) > 2**53):
            raise PipelineError(f"{name}: column {column} has non-integer values (dtype {values.dtype})")
        return array.astype("int64")
    raise PipelineError(f"{name}: column {column} must be integer, got dtype {values.dtype}")


def validate_interactions(frame: pd.DataFrame, *, domain: str, name: str) -> pd.DataFrame:
    """Check one interactions file and return it normalised.

    Accepted: extra columns (dropped), any column order, ids of any integer width, datetime64 timestamps,
    float play counts that are whole numbers. Rejected with a PipelineError naming the file and column:
    a missing column, nulls, non-integer ids, timestamps outside 2000..2100, ratings that are not positive
    and finite.

    Returns:
        user_id int64, item_id int64, timestamp int64 (ns), rating float64, in that order: the frame itself
        when it is already so (validating twice costs no memory).
    """
    missing = [c for c in RAW_COLUMNS[domain] if c not in frame.columns]
    if missing:
        raise PipelineError(f"{name}: missing column {missing[0]} (expected {', '.join(RAW_COLUMNS[domain])})")
    for column in RAW_COLUMNS[domain]:
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise PipelineError(f"{name}: column {column} has {nulls} null value(s)")
    ids = {column: _as_int64(frame[column], name, column) for column in (USER, ITEM, TS)}
    for column in (USER, ITEM):
        if len(frame) and ids[column].min() < 0:
            raise PipelineError(f"{name}: column {column} has negative ids")
    if not pd.api.types.is_numeric_dtype(frame[RATING]) or pd.api.types.is_bool_dtype(frame[RATING]):
        raise PipelineError(f"{name}: column {RATING} must be numeric, got dtype {frame[RATING].dtype}")
    rating = frame[RATING].to_numpy(dtype="float64")
    bad = ~np.isfinite(rating) | (rating <= 0)
    if bad.any():
        raise PipelineError(f"{name}: column {RATING} has {int(bad.sum())} value(s) that are not positive and "
                            f"finite (e.g. {rating[bad][0]})")
    check_timestamps(ids[TS], name)
    normalised = (list(frame.columns) == [USER, ITEM, TS, RATING]
                  and all(frame[c].dtype == np.int64 for c in (USER, ITEM, TS)) and frame[RATING].dtype == np.float64)
    return frame if normalised else pd.DataFrame({**ids, RATING: rating}, copy=False)


def check_timestamps(ts: np.ndarray, name: str) -> None:
    """Reject timestamps that cannot be nanoseconds of this data: outside 2000..2100 (seconds or ms since epoch
    fall far below), or far from where the bulk of the file lies (one stray year would stretch every window)."""
    outside = (ts < TS_MIN) | (ts > TS_MAX)
    if outside.any():
        raise PipelineError(f"{name}: column {TS} has {int(outside.sum())} value(s) outside 2000..2100 "
                            f"(e.g. {int(ts[outside][0])}; expected nanoseconds since epoch)")
    if len(ts) >= 20:
        low, high = np.quantile(ts, [0.01, 0.99])
        margin = max(high - low, 30 * NS_PER_DAY)
        stray = (ts < low - margin) | (ts > high + margin)
        if stray.any():
            example = pd.Timestamp(int(ts[stray][0]))
            raise PipelineError(f"{name}: column {TS} has {int(stray.sum())} value(s) far outside the data's range "
                                f"(e.g. {example}, while 98% of rows lie in {pd.Timestamp(int(low)).date()}.."
                                f"{pd.Timestamp(int(high)).date()})")


def merge_history(parts: list[pd.DataFrame], *, name: str) -> tuple[pd.DataFrame, int]:
    """Union train and test history: exact copies dropped, repeated (user, item) pairs aggregated.

    A repeated pair keeps its last timestamp and the sum of its ratings (both are counts of events).
    Done with single-key sorts in numpy: pandas' drop_duplicates and groupby over four columns, and then a
    three-key lexsort, took most of this stage's time and memory at full size. The rows are sorted once, by
    (user, item) pair; a row is an exact copy when an earlier row of its pair has its timestamp and rating.
    The pairs are put back in the order of their first rows before the sort by time, so that a file already
    in time order (the hackathon's) needs almost none.

    Returns:
        (one row per (user, item) sorted by time, ties in the order of the pairs' first rows; number of pairs
        that were aggregated)
    """
    user = np.concatenate([p[USER].to_numpy(np.int64) for p in parts])
    item = np.concatenate([p[ITEM].to_numpy(np.int64) for p in parts])
    ts = np.concatenate([p[TS].to_numpy(np.int64) for p in parts])
    rating = np.concatenate([p[RATING].to_numpy(np.float64) for p in parts])
    user_codes, _ = pd.factorize(user)
    item_codes, item_uniques = pd.factorize(item)
    pair = user_codes.astype(np.int64) * max(len(item_uniques), 1) + item_codes  # exact for any int64 ids
    del user_codes, item_codes
    by_pair = stable_argsort(pair)  # each pair's rows together, in their input order
    pair = pair[by_pair]
    starts = run_starts(pair)
    del pair
    n_rows = len(ts)
    ts_by_pair, rating_by_pair = ts[by_pair], rating[by_pair]
    del ts, rating
    kept = ~_exact_copies(starts, ts_by_pair, rating_by_pair)
    ts_kept, rating_kept = ts_by_pair[kept], rating_by_pair[kept]
    del ts_by_pair, rating_by_pair
    # The first row of a pair is never a copy, so each pair still starts a run of kept rows.
    is_start = np.zeros(n_rows, dtype=bool)
    is_start[starts] = True
    kept_starts = np.flatnonzero(is_start[kept])
    del is_start, kept
    sizes = np.diff(np.r_[kept_starts, len(ts_kept)])
    n_repeated = int((sizes > 1).sum())
    if n_repeated:
        log.warning("%s: %d (user, item) pairs occur in more than one row; aggregated (rating summed, "
                    "last timestamp kept)", name, n_repeated)
    merged_ts = np.maximum.reduceat(ts_kept, kept_starts) if len(ts_kept) else ts_kept
    merged_rating = np.add.reduceat(rating_kept, kept_starts) if len(ts_kept) else rating_kept
    first = by_pair[starts]  # the input row that stands for each pair
    del by_pair, ts_kept, rating_kept
    # Pairs back in the order of their first rows: a scatter by row, not a sort.
    pair_at_row = np.full(n_rows, -1, dtype=np.int64)
    pair_at_row[first] = np.arange(len(first))
    in_input_order = pair_at_row[pair_at_row >= 0]
    del pair_at_row
    first, merged_ts, merged_rating = first[in_input_order], merged_ts[in_input_order], merged_rating[in_input_order]
    by_time = np.argsort(merged_ts, kind="stable")  # a merge of sorted runs when the input is in time order
    first = first[by_time]
    return pd.DataFrame({USER: user[first], ITEM: item[first], TS: merged_ts[by_time],
                         RATING: merged_rating[by_time]}, copy=False), n_repeated


def _exact_copies(starts: np.ndarray, ts: np.ndarray, rating: np.ndarray) -> np.ndarray:
    """Per row of rows grouped by pair (each group from `starts`, rows in input order): whether an earlier row of
    its group has the same timestamp and rating. Pairs of two rows (every test row that repeats a train row) are
    compared directly; the rare larger groups by a sort of their own rows."""
    copy = np.zeros(len(ts), dtype=bool)
    sizes = np.diff(np.r_[starts, len(ts)])
    two = starts[sizes == 2]
    copy[two + 1] = (ts[two + 1] == ts[two]) & (rating[two + 1] == rating[two])
    large = sizes > 2
    if large.any():
        rows = np.flatnonzero(np.repeat(large, sizes))
        group = np.repeat(np.flatnonzero(large), sizes[large])
        order = np.lexsort((rows, rating[rows], ts[rows], group))  # equal rows together, the earliest first
        rows, group = rows[order], group[order]
        same = (group[1:] == group[:-1]) & (ts[rows[1:]] == ts[rows[:-1]]) & (rating[rows[1:]] == rating[rows[:-1]])
        copy[rows[1:][same]] = True
    return copy


def time_windows(end_ns: int, *, horizon_days: float) -> dict[str, int]:
    """Cut-off moments: early, label and holdout windows, each `horizon_days` long, ending at `end_ns`."""
    h = int(round(horizon_days * NS_PER_DAY))
    return {"end": int(end_ns), "holdout_start": int(end_ns - h + 1), "label_start": int(end_ns - 2 * h + 1),
            "early_start": int(end_ns - 3 * h + 1)}


def split_windows(events: pd.DataFrame, windows: dict[str, int]) -> pd.DataFrame:
    """Tag each event with the window it falls in: history, early, label or holdout."""
    ts = events[TS].to_numpy()
    codes = ((ts >= windows["early_start"]).astype(np.int8) + (ts >= windows["label_start"])
             + (ts >= windows["holdout_start"]))
    out = events.copy(deep=False)  # a new frame, not new copies of the columns
    out[WINDOW] = pd.Categorical.from_codes(codes, categories=list(WINDOW_NAMES))
    return out


def prepare_domain(train: pd.DataFrame, test: pd.DataFrame, targets: pd.DataFrame | None, *, domain: str,
                   end_ns: int, start_ns: int, horizon_days: float) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Validate, merge and split one domain.

    Args:
        train, test: the raw files of the domain; targets: optional extra users (column user_id).
        end_ns, start_ns: first and last timestamp over both domains.
        horizon_days: length of the label window and of the holdout window.

    Returns:
        (events with a window column, target users, windows dict)
    """
    check_section("eval", horizon_days=horizon_days)
    span_days = (end_ns - start_ns) / NS_PER_DAY
    if 2 * horizon_days >= span_days:
        raise PipelineError(f"params.yaml: eval.horizon_days={horizon_days} is out of range: the label and "
                            f"holdout windows (2 x {horizon_days} days) must be shorter than the data "
                            f"({span_days:.1f} days)")
    if 3 * horizon_days >= span_days:
        log.warning("%s: the early window (3 x %s days before the end) starts before the data (%.1f days): the "
                    "early fold has no history, and the rankers learn little from it", domain, horizon_days,
                    span_days)
    train = validate_interactions(train, domain=domain, name=f"train_{domain}.parquet")
    test = validate_interactions(test, domain=domain, name=f"test_{domain}.parquet")
    if len(train) == 0:
        raise PipelineError(f"train_{domain}.parquet: the file has no rows")
    if len(test) == 0:
        log.warning("test_%s.parquet: the file has no rows; only targets_%s.parquet users get recommendations",
                    domain, domain)
    events, _ = merge_history([train, test], name=f"train_{domain}.parquet + test_{domain}.parquet")
    windows = time_windows(end_ns, horizon_days=horizon_days)
    events = split_windows(events, windows)
    users = [test[USER].to_numpy()]
    if targets is not None:
        if USER not in targets.columns:
            raise PipelineError(f"targets_{domain}.parquet: missing column {USER}")
        if targets[USER].isna().any():
            raise PipelineError(f"targets_{domain}.parquet: column {USER} has null values")
        users.append(_as_int64(targets[USER], f"targets_{domain}.parquet", USER))
    target_users = pd.DataFrame({USER: np.unique(np.concatenate(users)).astype("int64")})
    counts = events[WINDOW].value_counts()
    log.info("prepare %s: %d events (%d history, %d early, %d label, %d holdout), %d users, %d items, "
             "%d target users", domain, len(events), *(counts.get(name, 0) for name in WINDOW_NAMES),
             events[USER].nunique(), events[ITEM].nunique(), len(target_users))
    return events, target_users, windows


def _time_range(raw_dir: Path) -> tuple[int, int]:
    """First and last timestamp over the train and test files of both domains (one clock for both)."""
    lows, highs = [], []
    for domain in DOMAINS:
        for kind in ("train", "test"):
            path = raw_dir / f"{kind}_{domain}.parquet"
            ts = read_parquet(path, columns=[TS])[TS]
            ts = pd.Series(_as_int64(ts.dropna(), path.name, TS))
            check_timestamps(ts.to_numpy(), path.name)
            if len(ts):
                lows.append(ts.min())
                highs.append(ts.max())
    if not highs:
        raise PipelineError(f"{raw_dir}: no interactions in any train or test file")
    return int(min(lows)), int(max(highs))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain", choices=DOMAINS)
    parser.add_argument("--out", default="data/prepared")
    args = parser.parse_args(argv)
    params = load_params()
    eval_params = section_params(params, "eval")
    raw_dir = Path(params["data"]["raw_dir"])
    start_ns, end_ns = _time_range(raw_dir)
    # Validated as read, so each raw frame is freed at once (prepare_domain's own validation then copies nothing).
    train, test = (validate_interactions(read_parquet(raw_dir / f"{kind}_{args.domain}.parquet"), domain=args.domain,
                                         name=f"{kind}_{args.domain}.parquet") for kind in ("train", "test"))
    targets_path = raw_dir / f"targets_{args.domain}.parquet"
    targets = read_parquet(targets_path) if targets_path.exists() else None
    events, target_users, windows = prepare_domain(train, test, targets, domain=args.domain, end_ns=end_ns,
                                                   start_ns=start_ns, **eval_params)
    out = Path(args.out) / args.domain
    del train, test
    write_parquet(events, out / "events.parquet")
    write_parquet(target_users, out / "targets.parquet")
    write_json(windows, out / "windows.json")


if __name__ == "__main__":
    run_stage(main)
