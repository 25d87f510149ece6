"""Stage `submit`: the hackathon submission files, from the final fold's lists.

In:  `data/recs/final.parquet`, `data/merged/{users,items}.parquet`, `data/merged/matrix_final.npz`,
     `data/prepared/<domain>/targets.parquet`.
Out: `data/submission/submission_<domain>.parquet`: user_id int64, item_id list<int64> of exactly 10 distinct
     items of that domain, best first, none already in the user's history of that domain; one row per target
     user (every user of test_<domain>.parquet and of the optional targets_<domain>.parquet), by user_id.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.common import (DOMAIN, DOMAINS, ITEM, ITEM_IDX, K, USER, USER_IDX, PipelineError, domain_matrix,
                           run_stage, seen_pairs, write_parquet)

log = logging.getLogger("pipeline.submit")


def make_submission(recs: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, targets: np.ndarray) -> pd.DataFrame:
    """One domain's submission with external ids.

    Args:
        recs: the domain's final lists: user_idx, rank, item_idx.
        users: user_id -> user_idx; items: the domain's item_id -> item_idx.
        targets: user_id of every user who must get a row.

    Raises:
        PipelineError: a target user without a list, or a list shorter than K (the catalog minus the user's
        history has fewer than K items).
    """
    recs = recs.sort_values([USER_IDX, "rank"], kind="stable")
    item_ids = items.sort_values(ITEM_IDX)[ITEM].to_numpy()
    user_ids = users.sort_values(USER_IDX)[USER].to_numpy()
    frame = pd.DataFrame({USER: user_ids[recs[USER_IDX].to_numpy()],
                          ITEM: item_ids[recs[ITEM_IDX].to_numpy()].astype("int64")})
    lists = frame.groupby(USER, sort=True)[ITEM].agg(list)
    missing = np.setdiff1d(targets, lists.index.to_numpy())
    if len(missing):
        raise PipelineError(f"{len(missing)} target user(s) got no recommendations (e.g. user_id {missing[0]})")
    lists = lists.reindex(np.unique(targets))
    lengths = lists.map(len).to_numpy()
    if (lengths < K).any():
        user = lists.index[np.argmax(lengths < K)]
        raise PipelineError(f"user_id {user} has only {lengths.min()} unseen item(s) in a catalog of "
                            f"{len(item_ids)}: cannot recommend {K} distinct unseen items")
    return pd.DataFrame({USER: lists.index.to_numpy().astype("int64"), ITEM: list(lists.to_numpy())})


def check_submission(submission: pd.DataFrame, targets: np.ndarray, catalog: np.ndarray,
                     seen: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Assert the submission contract; raise PipelineError naming the first violation.

    Args:
        seen: (user_ids, item_ids) -> True where the user already has the item (it must not be recommended).
    """
    if list(submission.columns) != [USER, ITEM] or submission[USER].dtype != np.int64:
        raise PipelineError(f"submission columns/dtypes wrong: {submission.dtypes.to_dict()}")
    if not submission[USER].is_unique or set(submission[USER]) != set(targets.tolist()):
        raise PipelineError("submission users are not exactly the target users, once each")
    users, lists = submission[USER].to_numpy(), submission[ITEM].to_numpy()
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    for first in np.flatnonzero(lengths != K)[:1]:
        raise PipelineError(f"user_id {users[first]}: {lengths[first]} items, {len(set(lists[first]))} distinct "
                            f"(need {K})")
    grid = np.array([list(items) for items in lists], dtype=np.int64).reshape(len(lists), K)
    distinct = np.sort(grid, axis=1)
    for first in np.flatnonzero((distinct[:, 1:] == distinct[:, :-1]).any(axis=1))[:1]:
        raise PipelineError(f"user_id {users[first]}: {K} items, {len(set(lists[first]))} distinct (need {K})")
    for first in np.flatnonzero(~np.isin(grid, catalog).all(axis=1))[:1]:
        raise PipelineError(f"user_id {users[first]}: an item is not in the domain's catalog")
    already = seen(np.repeat(users, K), grid.ravel()).reshape(grid.shape).any(axis=1)
    for first in np.flatnonzero(already)[:1]:
        raise PipelineError(f"user_id {users[first]}: recommends an item already in the user's history")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/submission")
    args = parser.parse_args(argv)
    recs = pd.read_parquet("data/recs/final.parquet")
    recs = recs[recs["model"] == "final"]
    users = pd.read_parquet("data/merged/users.parquet")
    items = pd.read_parquet("data/merged/items.parquet")
    matrix = sp.load_npz("data/merged/matrix_final.npz").tocsr()
    user_ids, user_idx = users[USER].to_numpy(), users[USER_IDX].to_numpy()
    by_user = np.argsort(user_ids)  # external user id -> user_idx by a sorted search, for both domains
    for domain in DOMAINS:
        domain_items = items[items[DOMAIN] == domain]
        targets = pd.read_parquet(f"data/prepared/{domain}/targets.parquet")[USER].to_numpy()
        submission = make_submission(recs[recs[DOMAIN] == domain], users, domain_items, targets)
        domain_seen = domain_matrix(matrix, items, domain)
        item_ids = domain_items.sort_values(ITEM_IDX)[ITEM].to_numpy()
        by_item = np.argsort(item_ids)

        def seen(u: np.ndarray, i: np.ndarray) -> np.ndarray:  # external ids -> indices -> the history matrix
            rows = user_idx[by_user[np.searchsorted(user_ids, u, sorter=by_user)]]
            cols = by_item[np.minimum(np.searchsorted(item_ids, i, sorter=by_item), len(item_ids) - 1)]
            return seen_pairs(domain_seen, rows, cols) & (item_ids[cols] == i)

        check_submission(submission, targets, item_ids, seen)
        write_parquet(submission, Path(args.out) / f"submission_{domain}.parquet")
        log.info("submit %s: %d users x %d items, contract checked", domain, len(submission), K)


if __name__ == "__main__":
    run_stage(main)
