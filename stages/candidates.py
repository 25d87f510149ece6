"""Stage `candidates` (one run per fold): per domain, the items the ranker will choose from, for each user.

In:  `data/merged/{users,items,interactions}.parquet`, `data/merged/matrix_<fold>.npz`, `models/als/<fold>/*.npy`,
     `data/prepared/<domain>/windows.json`.
Out: `data/candidates/<fold>.parquet`: user_idx, domain, item_idx, als_rank, recent_rank, pop_rank (ranks from
     1; missing when the item did not come from that source), als_score, als_user_norm, als_item_norm (factor
     lengths), recent_affinity, als_centered_cosine, taste_plays, lift_same and lift_other (the user's mean lift
     with the item over their items in this domain and in the other, see lift_vectors).
     `data/candidates/<fold>_users.parquet` (domain, user_idx): the users the fold serves, with or without
     candidates; `data/candidates/<fold>_popular.parquet` (domain, rank, item_idx): the domain's recent
     popularity order. Later stages read these two small tables instead of the whole interactions table.
     `data/candidates/<fold>_newcomers.parquet`: the same columns as `<fold>.parquet` for simulated newcomers
     (labelled folds only; newcomer_candidates): users of both domains with their history in one hidden, extra
     ranker training groups that look like the cross-domain users the ranker serves.

Sources (their union; a candidate from several carries each rank):
- ALS: the `n_als` items of the domain with the highest user x item score, among its `als_pool` most
  recently popular items. Every user with history in either
  domain has a taste vector, so a user new to this domain gets candidates too: the cross-domain point.
- recent: the `n_recent` items that users with a taste like this user's took in the last `popular_days`
  (see recent_taste), among the `recent_pool` most recently popular items.
- popular: the `n_popular` items of the domain with the most events in the last `popular_days` before the cut-off.
Items the user already has in this domain are excluded from all; so are items with no event before the cut-off.

Users per fold: early, train, holdout -> users with events in the fold's label window (early, label, holdout;
capped at `max_labelled_users` per domain, drawn at random), and of those up to `newcomers` per domain with
history in both domains as simulated newcomers; final -> every target user (test files and targets files),
no newcomers. A fold that als-fit marked unused (common.UNUSED_FOLD_MARKER: the early fold when the holdout
ranker does not learn on it) serves no users: its four tables are empty.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # batched scoring is many small products: threads only fight

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from stages.common import (COL, DOMAIN, DOMAINS, FOLDS, ITEM_IDX, NS_PER_DAY, RATING, TS,  # noqa: E402
                           UNUSED_FOLD_MARKER, USER_IDX, WINDOW, constant_category, domain_matrix, fold_cutoff,
                           fold_label_window, load_params, other_domain, read_json, read_target_idx, run_stage,
                           run_starts, section_params, seen_pairs, write_parquet)
from stages.als_fit import solve_users  # noqa: E402

log = logging.getLogger("pipeline.candidates")


class _RowIndices:
    """A CSR matrix's rows in the one form implicit's topk reads them (`matrix[row].indices`), as plain numpy
    views: scipy builds a whole matrix object per row access, which was a fifth of this stage's time at full
    size (one access per user). topk's use of the argument is checked by tests/test_candidates.py."""

    __slots__ = ("indptr", "indices")

    def __init__(self, matrix: sp.csr_matrix) -> None:
        matrix = matrix.tocsr()
        self.indptr, self.indices = matrix.indptr, matrix.indices

    def __getitem__(self, row: int) -> SimpleNamespace:
        return SimpleNamespace(indices=self.indices[self.indptr[row]:self.indptr[row + 1]])


def top_n_items(user_vectors: np.ndarray, item_vectors: np.ndarray, excluded: sp.csr_matrix, n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The n highest-scoring items per user, best first, by dot product.

    Scoring runs in implicit's top-k kernel: 100 users at a time, a partial selection in C (no sort of whole
    rows), two threads, so memory stays at a few 100-user blocks of scores whatever the number of users.

    Args:
        user_vectors: users x factors; item_vectors: items x factors.
        excluded: users x items, non-zero where an item must not be returned (seen items).
        n: how many items per user.

    Returns:
        (items users x n int32, scores users x n float32); slots beyond a user's available items hold
        item -1 and score -inf.
    """
    from implicit.cpu.topk import topk

    n_users, n_items = user_vectors.shape[0], item_vectors.shape[0]
    n_take = min(n, n_items)
    if n_take == 0 or n_users == 0:
        return np.full((n_users, n_take), -1, np.int32), np.full((n_users, n_take), -np.inf, np.float32)
    items, scores = topk(np.ascontiguousarray(item_vectors, dtype=np.float32),
                         np.ascontiguousarray(user_vectors, dtype=np.float32), n_take,
                         filter_query_items=_RowIndices(excluded), num_threads=2)
    missing = scores <= -np.finfo(np.float32).max  # the kernel marks filtered items with the lowest float
    items[missing], scores[missing] = -1, -np.inf
    return items.astype(np.int32), scores.astype(np.float32)


def popular_items(events: pd.DataFrame, *, cutoff: int, days: float, n_items: int) -> np.ndarray:
    """Item indices of a domain ordered by events in the `days` before `cutoff` (ties: all-time count, index).

    Items with no event before the cut-off are left out.
    """
    ts, item = events[TS].to_numpy(), events[ITEM_IDX].to_numpy()
    before = ts < cutoff
    recent = before & (ts >= cutoff - int(days * NS_PER_DAY))
    recent_count = np.bincount(item[recent], minlength=n_items)
    total_count = np.bincount(item[before], minlength=n_items)
    order = np.lexsort((np.arange(n_items), -total_count, -recent_count))
    return order[total_count[order] > 0].astype(np.int32)


def recent_taste(events: pd.DataFrame, user_factors: np.ndarray, *, cutoff: int, days: float, n_items: int
                 ) -> np.ndarray:
    """Per item, the sum of the taste vectors of the users who had it in the `days` before `cutoff`.

    user_vector . recent_taste[item] = sum over those users of their taste similarity to this user: "people
    like you took this lately". ALS alone is fitted on all history and misses what trends within a taste.

    Returns:
        items x factors, float32.
    """
    ts = events[TS].to_numpy()
    recent = (ts < cutoff) & (ts >= cutoff - int(days * NS_PER_DAY))
    rows, cols = events[ITEM_IDX].to_numpy()[recent], events[USER_IDX].to_numpy()[recent]
    taken = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, user_factors.shape[0]))
    taken.data[:] = 1.0  # a user counts once per item: the constructor summed repeated pairs
    return np.asarray(taken @ user_factors, dtype=np.float32)


def taste_plays(events: pd.DataFrame, taste: np.ndarray, *, cutoff: int, n_items: int) -> np.ndarray:
    """Per item, the sum over its events before `cutoff` of rating x the taker's taste vector, per 1,000 of the
    domain's ratings.

    taste_vector . taste_plays[item]: how much people of this user's taste play or buy the item. Rows count a
    (user, item) pair once however often it was taken; the rating counts the repeats (zvuk plays, smm
    purchases), and how much an item is taken within a taste is what the next weeks repeat.

    Args:
        taste: all users x factors (centered unit ALS vectors: the taste without the popularity direction).

    Returns:
        items x factors, float32.
    """
    before = events[TS].to_numpy() < cutoff  # arrays, not a copy of the domain's whole event frame
    rating = events[RATING].to_numpy()[before].astype(np.float32)
    plays = sp.csr_matrix((rating, (events[ITEM_IDX].to_numpy()[before], events[USER_IDX].to_numpy()[before])),
                          shape=(n_items, taste.shape[0]))
    return np.asarray(plays @ taste, dtype=np.float32) * np.float32(1000.0 / max(float(rating.sum()), 1e-9))


def _orthonormal_columns(block: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns' span, from their Gram matrix: a small eigenproblem and one product
    where a QR of a tall block cost as much as the sparse products around it. Directions of (numerically) zero
    length are dropped, so a block of lower rank than its width gives fewer columns."""
    gram = block.T.astype(np.float64) @ block.astype(np.float64)
    values, vectors = np.linalg.eigh(gram)
    keep = values > values.max(initial=0.0) * 1e-10
    return (block @ (vectors[:, keep] / np.sqrt(values[keep])).astype(block.dtype)).astype(np.float32)


def truncated_svd(matrix: sp.csr_matrix, k: int, *, seed: int = 0, power_iterations: int = 1,
                  oversample: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Up to k of the largest singular values and their right singular vectors (items x k) of a sparse matrix,
    by randomized range finding (Halko, Martinsson and Tropp 2011): a fixed number of sparse x dense products,
    so the cost is known in advance, and the seed makes it repeatable. On a 10.4M-entry random matrix the
    lift vectors took 3.7 s this way and 13.4 s with scipy's ARPACK svds (docs/experiments.md). One power
    iteration: on the strong-taste sample a second gave the same taste separation (AUC within 0.002)."""
    rng = np.random.default_rng(seed)
    width = min(k + oversample, min(matrix.shape))
    block = np.asarray(matrix @ rng.standard_normal((matrix.shape[1], width)).astype(np.float32))
    for _ in range(power_iterations):  # each pass widens the gap between the kept and the dropped directions
        block = np.asarray(matrix @ _orthonormal_columns(np.asarray(matrix.T @ _orthonormal_columns(block))))
    basis = _orthonormal_columns(block)
    _, singular, vt = np.linalg.svd(np.asarray(matrix.T @ basis).T.astype(np.float64), full_matrices=False)
    return singular[:k].astype(np.float32), np.ascontiguousarray(vt[:k].T, dtype=np.float32)


def taken_matrix(matrix: sp.spmatrix) -> sp.csr_matrix:
    """A float32 copy with every stored entry 1: whether a user took an item, not how much."""
    taken = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    taken.data[:] = 1.0
    return taken


def lift_vectors(taken: sp.csr_matrix, factors: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors for the lift of item pairs: lift(i, j) ~ weighted_i . vectors_j (both items x k, float32).

    lift(i, j) = N n_ij / (n_i n_j): how much more often than by chance the users who took item i took item j
    too (N: users with an event; n_ij: users who took both). Divided by the counts, popularity drops out and
    what is left is taste. With X the users x items matrix of `taken` and D its column counts, the lift matrix
    is N (X D^-1)^T (X D^-1); a rank-k SVD X D^-1 ~ U S V^T makes it N V S^2 V^T, so weighted = N V S^2 and
    vectors = V. The low rank also smooths the counts of rare pairs. Items of both domains are in one matrix,
    so the lift links a smm item to a zvuk item through the users of both services (see lift_profiles).

    Args:
        taken: users x items (all domains), 1 where the user took the item before the cut-off (taken_matrix).
        factors: k (capped below the matrix's smaller side and at its rank; 0 = no vectors).
    """
    k = min(factors, min(taken.shape) - 1)
    if k < 1 or taken.nnz == 0:
        return np.zeros((taken.shape[1], 0), np.float32), np.zeros((taken.shape[1], 0), np.float32)
    counts = np.asarray(taken.sum(axis=0)).ravel()
    scaled = taken.copy()
    scaled.data *= (1.0 / np.maximum(counts, 1.0)).astype(np.float32)[scaled.indices]
    singular, vectors = truncated_svd(scaled, k, seed=seed)
    n_users = float((np.diff(taken.indptr) > 0).sum())
    return vectors * (n_users * singular ** 2), vectors


def lift_profiles(history: sp.csr_matrix, weighted: np.ndarray) -> np.ndarray:
    """users x k: the mean of `weighted` (the part's rows of lift_vectors' first table) over each user's items in
    `history` (users x a part of the items, 1 where taken), so that profile_u . vectors_j is the user's mean lift
    with item j over those items (0 for a user with none).

    Called once with a domain's own items and once with the other domain's: for a user new to the domain, the
    second is the whole of what they tell about their taste there. ALS fits such a user's vector to score
    the domain they never used low throughout; the lift has no such term."""
    size = np.maximum(np.diff(history.indptr), 1).astype(np.float32)
    return np.asarray(history @ weighted, dtype=np.float32) / size[:, None]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The mean of the non-zero rows (zero rows are users or items without events)."""
    alive = np.abs(vectors).sum(axis=1) > 0
    return vectors[alive].mean(axis=0) if alive.any() else np.zeros(vectors.shape[1], vectors.dtype)


def _top_n_in_pool(user_vectors: np.ndarray, item_vectors: np.ndarray, seen: sp.csr_matrix, n: int,
                   pool: np.ndarray) -> np.ndarray:
    """top_n_items over the items of `pool` only; item indices of the whole domain, -1 for empty slots."""
    items, _ = top_n_items(user_vectors, item_vectors[pool], seen[:, pool], n)
    return np.where(items >= 0, pool[np.maximum(items, 0)], -1)


def _pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rank from 1) of a users x n table of items, padding (-1) dropped."""
    n = items.shape[1]
    user = np.repeat(users, n).astype(np.int32)
    rank = np.tile(np.arange(1, n + 1, dtype=np.float32), len(users))
    item = items.ravel()
    keep = item >= 0
    return user[keep], item[keep].astype(np.int32), rank[keep]


# Rows per chunk of the row dots: the gathered rows of a chunk (a few MB) are still in cache when the products read
# them. With 1M-row chunks they went out to memory and back: 4x the time on 20M rows (docs/experiments.md).
ROW_DOTS_CHUNK = 16_384


def _row_dots(left: np.ndarray, right: np.ndarray, rows_left: np.ndarray, rows_right: np.ndarray,
              chunk: int = ROW_DOTS_CHUNK) -> np.ndarray:
    """left[rows_left[k]] . right[rows_right[k]] for every k, a chunk at a time (no n x factors copies)."""
    return _row_dots_many(left, [right], rows_left, rows_right, chunk)[0]


def _row_dots_many(left: np.ndarray, rights: list[np.ndarray], rows_left: np.ndarray, rows_right: np.ndarray,
                   chunk: int = ROW_DOTS_CHUNK) -> list[np.ndarray]:
    """_row_dots of one left table with each of several right tables: the rows of `left` are gathered once
    (at full size the gathers, not the products, are most of the candidates stage's time)."""
    right = np.hstack(rights) if len(rights) > 1 else rights[0]
    width = left.shape[1]
    outs = [np.empty(len(rows_left), dtype=np.float32) for _ in rights]
    for lo in range(0, len(rows_left), chunk):
        hi = lo + chunk
        # np.take, not fancy indexing: the same rows, a third faster on 2-D gathers of this size
        left_rows, right_rows = np.take(left, rows_left[lo:hi], axis=0), np.take(right, rows_right[lo:hi], axis=0)
        for k, out in enumerate(outs):
            out[lo:hi] = np.einsum("ij,ij->i", left_rows, right_rows[:, k * width:(k + 1) * width])
    return outs


def make_candidates(users: np.ndarray, seen: sp.csr_matrix, user_factors: np.ndarray, item_factors: np.ndarray,
                    item_recent_taste: np.ndarray, popular: np.ndarray, has_history: np.ndarray, *, n_als: int,
                    n_recent: int, n_popular: int, recent_pool: int = 0, als_pool: int = 0,
                    user_taste: np.ndarray | None = None, item_mean: np.ndarray | float = 0.0,
                    item_taste_plays: np.ndarray | None = None, lift_same: np.ndarray | None = None,
                    lift_other: np.ndarray | None = None, item_lift: np.ndarray | None = None) -> pd.DataFrame:
    """Candidates of one domain for the given users.

    Args:
        users: user_idx values to make candidates for.
        seen: all users x the domain's items; non-zero = seen in this domain (excluded).
        user_factors: all users x factors; item_factors: the domain's items x factors.
        item_recent_taste: the domain's items x factors (see recent_taste).
        popular: the domain's items by recent popularity (see popular_items).
        has_history: per user, True when the user has any event in either domain (ALS can score them).
        recent_pool: the recent source scores only this many of the most recently popular items (0 = all):
            what many similar users took lately is near the top of recent popularity anyway, and at full
            size scoring every item twice (ALS and recent) doubled the stage's time.
        als_pool: likewise for the ALS source (0 = all). Scoring every user against every item grows with
            the square of the data; a fixed pool keeps the stage's cost linear in the number of users.
        user_taste: all users x factors, the users' ALS vectors with the mean user vector removed, at unit
            length (see taste_plays); None: user_factors at unit length.
        item_mean: the mean item vector, removed for als_centered_cosine.
        item_taste_plays: the domain's items x factors (see taste_plays, made with `user_taste`); None: the
            column is NaN.
        lift_same, lift_other: all users x k, lift_profiles of each user's items in this domain and in the
            other; item_lift: the domain's items x k, the vectors of lift_vectors. None: the columns are NaN.

    Returns:
        user_idx, item_idx, als_rank, recent_rank, pop_rank, als_score, als_user_norm, als_item_norm,
        recent_affinity, als_centered_cosine, taste_plays, lift_same, lift_other: one row per (user, candidate
        item).
    """
    als_users = users[has_history[users]]
    als_vectors, als_seen = user_factors[als_users], seen[als_users]
    # `popular` holds every item with an event before the cut-off, most popular first: the pools are its heads.
    als_items = _top_n_in_pool(als_vectors, item_factors, als_seen, n_als, popular[:als_pool or None])
    sources = {"als_rank": _pairs(als_users, als_items)}
    recent_items = _top_n_in_pool(als_vectors, item_recent_taste, als_seen, n_recent, popular[:recent_pool or None])
    user, item, rank = _pairs(als_users, recent_items)
    taken = _row_dots(user_factors, item_recent_taste, user, item) > 0  # someone like the user took it
    sources["recent_rank"] = (user[taken], item[taken], rank[taken])

    # Popular: the top list minus what the user has seen; a few extra slots absorb the seen ones.
    n_items = seen.shape[1]
    top = popular[: n_popular + 20]
    unseen = ~seen_pairs(seen, np.repeat(users, len(top)), np.tile(top, len(users))).reshape(len(users), len(top))
    keep = unseen & (np.cumsum(unseen, axis=1) <= n_popular)  # rank stays the global position
    rows, positions = np.nonzero(keep)
    sources["pop_rank"] = (users[rows].astype(np.int32), top[positions].astype(np.int32),
                           (positions + 1).astype(np.float32))

    # The union, one row per (user, item), sorted by user then item: one int64 key per pair, sorted once.
    keys = {name: u.astype(np.int64) * n_items + i for name, (u, i, _) in sources.items()}
    union = np.concatenate(list(keys.values()))
    union.sort()
    union = union[run_starts(union)]
    cands = pd.DataFrame({USER_IDX: (union // n_items).astype(np.int32),
                          ITEM_IDX: (union % n_items).astype(np.int32)})
    for name, (_, _, rank) in sources.items():
        column = np.full(len(union), np.nan, dtype=np.float32)
        column[np.searchsorted(union, keys[name])] = rank
        cands[name] = column
    u, i = cands[USER_IDX].to_numpy(), cands[ITEM_IDX].to_numpy()
    als_score, recent_affinity = _row_dots_many(user_factors, [item_factors, item_recent_taste], u, i)
    cands["als_score"] = als_score
    # How sure ALS is: a short user vector means little or conflicting history, a long item vector a
    # well-known item. The ranker uses them to decide how far to trust als_score over popularity.
    cands["als_user_norm"] = np.linalg.norm(user_factors, axis=1)[u].astype(np.float32)
    cands["als_item_norm"] = np.linalg.norm(item_factors, axis=1)[i].astype(np.float32)
    cands["recent_affinity"] = recent_affinity
    # Taste match without the direction every vector shares: ALS vectors of all users and items have a common
    # (popularity) component, and with it removed the cosine tells a user's taste cluster apart better.
    if user_taste is None:
        user_taste = _unit_rows(user_factors)
    taste_tables = [_unit_rows(item_factors - item_mean)]
    if item_taste_plays is not None:
        taste_tables.append(item_taste_plays)
    taste_dots = _row_dots_many(user_taste, taste_tables, u, i)
    cands["als_centered_cosine"] = taste_dots[0]
    cands["taste_plays"] = taste_dots[1] if len(taste_dots) > 1 else np.full(len(cands), np.nan, np.float32)
    for name, profiles in (("lift_same", lift_same), ("lift_other", lift_other)):
        cands[name] = (_row_dots(profiles, item_lift, u, i) if profiles is not None and item_lift is not None
                       else np.full(len(cands), np.nan, np.float32))
    return cands


def target_users(fold: str, domain: str, interactions: pd.DataFrame, targets: np.ndarray, *, max_users: int = 0,
                 seed: int = 0) -> np.ndarray:
    """user_idx of the users a fold makes candidates for in a domain (see the module docstring), sorted.

    The labelled folds (early, train, holdout) keep at most `max_users` of them (0 = all), drawn at random with
    `seed`: ranker training and evaluation need tens of thousands of users, not every user of a full-size data set.
    The final fold always keeps every target user.
    """
    if fold == "final":
        return np.unique(targets).astype(np.int32)
    window = fold_label_window(fold)
    mask = (interactions[DOMAIN] == domain) & (interactions[WINDOW] == window)
    users = np.unique(interactions.loc[mask, USER_IDX].to_numpy()).astype(np.int32)
    if 0 < max_users < len(users):
        rng = np.random.default_rng([seed, DOMAINS.index(domain), FOLDS.index(fold)])
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    return users


def newcomer_users(users: np.ndarray, uses_domain: np.ndarray, uses_other: np.ndarray, *, max_users: int,
                   seed: int | list[int] = 0) -> np.ndarray:
    """Of a labelled fold's users of a domain, the ones to simulate as newcomers to it: users with history
    in both domains before the cut-off (hiding the domain's part leaves a real other-domain history), at
    most `max_users` of them drawn at random with `seed` (0 = none), sorted.

    Args:
        users: the fold's users of the domain (target_users).
        uses_domain, uses_other: per user_idx, whether the user has an event before the cut-off in the domain
            and in the other one.
    """
    both = users[uses_domain[users] & uses_other[users]]
    if max_users <= 0:
        return both[:0]
    if max_users < len(both):
        both = np.sort(np.random.default_rng(seed).choice(both, size=max_users, replace=False))
    return both.astype(np.int32)


def newcomer_candidates(newcomers: np.ndarray, matrix: sp.csr_matrix, cols: np.ndarray, seen: sp.csr_matrix,
                        item_factors: np.ndarray, *, alpha: float, regularization: float, other_domain_weight: float,
                        user_mean: np.ndarray, lift_other: np.ndarray, **sources) -> pd.DataFrame:
    """Candidates of one domain for users as if they were new to it: the ranker's extra training groups.

    A real cross-domain user's taste in a domain comes only from their other domain's events, and a labelled
    fold holds few of them (about 150 groups with a positive of some 3,000 on the sample), too few for the
    ranker to learn how that taste predicts a domain. A user of both services is made one: their taste vector
    is solved again from their other domain's events alone, with the fold's item factors and the implied
    negatives that als-fit gives a user of one domain (stages.als_fit.solve_users); their candidates come from
    that vector; lift_same is 0 (no items here), lift_other is theirs. Items they really had in the domain
    stay excluded: the labels (their label-window events) count only new items.

    Args:
        newcomers: user_idx of the users (newcomer_users).
        matrix: all users x all items, the fold's merged matrix (confidence weights before als.alpha).
        cols: the domain's columns of the merged matrix, in item_idx order.
        seen: all users x the domain's items (as make_candidates).
        item_factors: all items x factors (the fold's ALS).
        user_mean: the mean ALS user vector, removed from the taste as for every other user.
        lift_other: all users x k, the lift_profiles of their other domain's items.
        sources: the rest of make_candidates' arguments (item_recent_taste, popular, item_taste_plays,
            item_lift, n_als, ...).

    Returns:
        make_candidates' columns, user_idx the real user's.
    """
    in_domain = np.zeros(matrix.shape[1], dtype=bool)
    in_domain[cols] = True
    rows = (matrix[newcomers] * np.float32(alpha)).tocsr()
    rows.data[in_domain[rows.indices]] = 0.0  # their history in this domain, hidden
    rows.eliminate_zeros()
    scale = np.where(in_domain, np.sqrt(other_domain_weight), 1.0)
    vectors = solve_users(rows, item_factors, regularization=regularization, item_scale=scale)
    local = np.arange(len(newcomers), dtype=np.int32)  # make_candidates indexes its user tables by this
    cands = make_candidates(local, seen[newcomers], vectors, item_factors[cols],
                            has_history=np.ones(len(newcomers), dtype=bool), user_taste=_unit_rows(vectors - user_mean),
                            lift_same=np.zeros((len(newcomers), lift_other.shape[1]), np.float32),
                            lift_other=lift_other[newcomers], **sources)
    cands[USER_IDX] = newcomers[cands[USER_IDX].to_numpy()]
    return cands


def read_fold_users(directory: str | Path, fold: str, domain: str) -> np.ndarray:
    """user_idx of the users the fold serves in the domain (this stage's `<fold>_users.parquet`), sorted."""
    frame = pd.read_parquet(Path(directory) / f"{fold}_users.parquet")
    return frame.loc[frame[DOMAIN] == domain, USER_IDX].to_numpy()


def read_popular(directory: str | Path, fold: str, domain: str) -> np.ndarray:
    """The domain's item_idx by recent popularity at the fold's cut-off (this stage's `<fold>_popular.parquet`)."""
    frame = pd.read_parquet(Path(directory) / f"{fold}_popular.parquet")
    return frame.loc[frame[DOMAIN] == domain].sort_values("rank")[ITEM_IDX].to_numpy()


def _events_before(interactions: pd.DataFrame, domain: str, cutoff: int) -> pd.DataFrame:
    """The domain's events before the cut-off, in the columns the item tables read: arrays masked once, where
    boolean selections of the whole frame took pandas 3.7 s on the full-size train fold (both domains)."""
    keep = (interactions[DOMAIN] == domain).to_numpy() & (interactions[TS].to_numpy() < cutoff)
    columns = (USER_IDX, ITEM_IDX, TS, RATING)
    return pd.DataFrame({column: interactions[column].to_numpy()[keep] for column in columns}, copy=False)


def _by_domain(arrays: dict[str, np.ndarray], column: str, *, with_rank: bool = False) -> pd.DataFrame:
    """One long table of per-domain arrays: domain, [rank from 1,] column."""
    frame = pd.DataFrame({DOMAIN: pd.Categorical(np.repeat(list(arrays), [len(a) for a in arrays.values()]),
                                                 categories=list(DOMAINS)),
                          column: np.concatenate(list(arrays.values())).astype(np.int32)})
    if with_rank:
        frame.insert(1, "rank", np.concatenate([np.arange(1, len(a) + 1) for a in arrays.values()]).astype(np.int32))
    return frame


def no_candidates() -> pd.DataFrame:
    """An empty candidates table in the schema of a computed one (make_candidates of no users)."""
    one_item = np.zeros((1, 1), dtype=np.float32)
    empty = make_candidates(np.zeros(0, dtype=np.int32), sp.csr_matrix((1, 1), dtype=np.float32), one_item,
                            one_item, one_item, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool), n_als=1,
                            n_recent=1, n_popular=1)
    empty.insert(1, DOMAIN, constant_category(DOMAINS[0], 0, DOMAINS))
    return empty


def _write_fold(out: Path, fold: str, candidates: pd.DataFrame, users: dict[str, np.ndarray],
                popular: dict[str, np.ndarray], newcomers: pd.DataFrame) -> None:
    write_parquet(candidates, out / f"{fold}.parquet")
    write_parquet(newcomers, out / f"{fold}_newcomers.parquet")
    write_parquet(_by_domain(users, USER_IDX), out / f"{fold}_users.parquet")
    write_parquet(_by_domain(popular, ITEM_IDX, with_rank=True), out / f"{fold}_popular.parquet")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=FOLDS)
    parser.add_argument("--out", default="data/candidates")
    args = parser.parse_args(argv)
    all_params = load_params()
    params, als = section_params(all_params, "candidates"), section_params(all_params, "als")
    if (Path("models/als") / args.fold / UNUSED_FOLD_MARKER).exists():
        log.info("candidates %s: the fold is not needed (models/als/%s/%s): empty tables", args.fold, args.fold,
                 UNUSED_FOLD_MARKER)
        none = {domain: np.zeros(0, dtype=np.int32) for domain in DOMAINS}
        _write_fold(Path(args.out), args.fold, no_candidates(), none, none, no_candidates())
        return
    windows = read_json("data/prepared/smm/windows.json")
    cutoff = fold_cutoff(windows, args.fold)
    users_map = pd.read_parquet("data/merged/users.parquet")
    items = pd.read_parquet("data/merged/items.parquet")
    interactions = pd.read_parquet("data/merged/interactions.parquet",
                                   columns=[USER_IDX, DOMAIN, ITEM_IDX, TS, RATING, WINDOW])
    matrix = sp.load_npz(f"data/merged/matrix_{args.fold}.npz").tocsr()
    user_factors = np.load(f"models/als/{args.fold}/user_factors.npy")
    item_factors = np.load(f"models/als/{args.fold}/item_factors.npy")
    has_history = np.diff(matrix.indptr) > 0
    user_mean = mean_vector(user_factors)
    user_taste = _unit_rows(user_factors - user_mean)  # once for both domains
    item_mean = mean_vector(item_factors)
    taken = taken_matrix(matrix)
    lift_weighted, item_lift = lift_vectors(taken, params["lift_factors"], seed=params["seed"])
    domain_cols = {domain: items.loc[items[DOMAIN] == domain, COL].to_numpy() for domain in DOMAINS}
    # A profile over a user's items of one domain gives lift_same in that domain and lift_other in the other.
    lift_by_domain = {domain: lift_profiles(domain_matrix(taken, items, domain), lift_weighted[cols])
                      for domain, cols in domain_cols.items()}
    del taken
    log.info("candidates %s: lift vectors of rank %d", args.fold, item_lift.shape[1])
    max_newcomers = 0 if args.fold == "final" else params["newcomers"]
    # Who has history in which domain: needed only to draw newcomers (the final fold has none).
    uses = ({domain: np.diff(domain_matrix(matrix, items, domain).indptr) > 0 for domain in DOMAINS}
            if max_newcomers else None)
    parts, newcomer_parts, fold_users, fold_popular = [], [], {}, {}
    for domain in DOMAINS:
        cols = domain_cols[domain]
        domain_events = _events_before(interactions, domain, cutoff)
        users = target_users(args.fold, domain, interactions, read_target_idx(users_map, domain),
                             max_users=params["max_labelled_users"], seed=params["seed"])
        popular = popular_items(domain_events, cutoff=cutoff, days=params["popular_days"], n_items=len(cols))
        seen = domain_matrix(matrix, items, domain)
        recent = recent_taste(domain_events, user_factors, cutoff=cutoff, days=params["popular_days"],
                              n_items=len(cols))
        plays = taste_plays(domain_events, user_taste, cutoff=cutoff, n_items=len(cols))
        sources = dict(item_recent_taste=recent, popular=popular, item_mean=item_mean, item_taste_plays=plays,
                       item_lift=item_lift[cols], n_als=params["n_als"], n_recent=params["n_recent"],
                       n_popular=params["n_popular"], recent_pool=params["recent_pool"], als_pool=params["als_pool"])
        cands = make_candidates(users, seen, user_factors, item_factors[cols], has_history=has_history,
                                user_taste=user_taste, lift_same=lift_by_domain[domain],
                                lift_other=lift_by_domain[other_domain(domain)], **sources)
        cands.insert(1, DOMAIN, constant_category(domain, len(cands), DOMAINS))
        log.info("candidates %s %s: %d users (%d with history), %d candidates, %.1f per user", args.fold,
                 domain, len(users), int(has_history[users].sum()), len(cands), len(cands) / max(len(users), 1))
        newcomers = (newcomer_users(users, uses[domain], uses[other_domain(domain)], max_users=max_newcomers,
                                    seed=[params["seed"], DOMAINS.index(domain), FOLDS.index(args.fold)])
                     if uses else [])
        if len(newcomers):
            extra = newcomer_candidates(newcomers, matrix, cols, seen, item_factors, alpha=als["alpha"],
                                        regularization=als["regularization"],
                                        other_domain_weight=als["other_domain_weight"], user_mean=user_mean,
                                        lift_other=lift_by_domain[other_domain(domain)], **sources)
            extra.insert(1, DOMAIN, constant_category(domain, len(extra), DOMAINS))
            newcomer_parts.append(extra)
            log.info("candidates %s %s: %d simulated newcomers (users of both domains, history here hidden), "
                     "%d candidates", args.fold, domain, len(newcomers), len(extra))
        del seen, recent, plays, domain_events, sources
        parts.append(cands)
        fold_users[domain], fold_popular[domain] = users, popular
    _write_fold(Path(args.out), args.fold, pd.concat(parts, ignore_index=True), fold_users, fold_popular,
                pd.concat(newcomer_parts, ignore_index=True) if newcomer_parts else no_candidates())


if __name__ == "__main__":
    run_stage(main)
