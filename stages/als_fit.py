"""Stage `als-fit` (one run per fold): implicit ALS on the merged users x items matrix of both domains.

In:  `data/merged/matrix_<fold>.npz` (confidence weights, see merge_domains), `data/merged/items.parquet` (which
     columns are which domain).
Out: `models/als/<fold>/user_factors.npy`, `models/als/<fold>/item_factors.npy` (float32). The early fold reads
     `data/gate/early.json` first: when the holdout ranker does not learn on it (stage early-gate), nothing is
     fitted and `models/als/early/unused.json` says so (common.UNUSED_FOLD_MARKER).

Because both domains sit in one matrix, a user with history in only one domain still gets a taste vector,
and that vector scores the other domain's items: the cross-domain recommendation.

Implied negatives across domains (`als.other_domain_weight`, w). Plain implicit ALS takes every item a user has
no event with as a negative of confidence 1. For a user of one service, that makes every item of the other
service a negative, and their vector is fitted to score the whole other catalog near zero: the very scores a
cross-domain recommendation is made of. With w < 1, a user's implied negatives among the items of a domain
where the user has no event count w instead of 1 (w = 0: a user's negatives are the items of the domains they
use). Items keep plain ALS's negatives (every user), so that each item is still told apart from the users who
do not take it. w = 1 is plain implicit ALS.
"""
from __future__ import annotations

import os

# BLAS must run one thread while implicit runs its own threads, or ALS runs far slower; set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from stages.common import (COL, DOMAIN, FOLDS, UNUSED_FOLD_MARKER, PipelineError, check_section,  # noqa: E402
                           load_params, read_json, run_stage, section_params, write_json, write_npy)

log = logging.getLogger("pipeline.als")

CG_STEPS = 3  # implicit's default conjugate-gradient steps per half-iteration


def fit_als(user_items: sp.csr_matrix, *, factors: int, regularization: float, iterations: int, alpha: float,
            seed: int, other_domain_weight: float, item_domain: np.ndarray | None = None, num_threads: int = 2
            ) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit ALS (Hu, Koren, Volinsky 2008) on the CPU.

    Args:
        user_items: users x items confidence weights; a zero is an implied negative with confidence 1.
        factors, regularization, iterations: the usual ALS hyper-parameters.
        alpha: multiplies every observed weight (how much more an observed event counts than a missing one).
        seed: random initialisation of the factors.
        other_domain_weight: how much a user's implied negatives count among the items of a domain where the
            user has no event (see the module docstring); 1 = plain implicit ALS.
        item_domain: the domain (any integer code) of each column; None = one domain.
        num_threads: implicit's own worker threads (BLAS is pinned to one thread meanwhile).

    Returns:
        (user_factors users x factors, item_factors items x factors), float32. A user or item with no
        observed event gets a zero vector, so it scores 0 against everything.
    """
    check_section("als", factors=factors, regularization=regularization, iterations=iterations, alpha=alpha,
                  seed=seed, other_domain_weight=other_domain_weight)
    if item_domain is not None and len(item_domain) != user_items.shape[1]:
        raise PipelineError(f"als-fit: {len(item_domain)} item domains for a matrix of {user_items.shape[1]} items")
    if user_items.nnz == 0:
        return (np.zeros((user_items.shape[0], factors), np.float32),
                np.zeros((user_items.shape[1], factors), np.float32))
    user_items = user_items.tocsr().astype(np.float32)
    with threadpool_limits(1, "blas"):
        if other_domain_weight == 1 or item_domain is None or len(np.unique(item_domain)) < 2:
            user_factors, item_factors = _fit_implicit(user_items, factors, regularization, iterations, alpha,
                                                       seed, num_threads)
        else:
            user_factors, item_factors = _fit_weighted(user_items, np.asarray(item_domain), other_domain_weight,
                                                       factors, regularization, iterations, alpha, seed,
                                                       num_threads)
    # implicit initialises every row randomly and the solver leaves a row with no events near its start
    # value; zero them so that "no history" means "no personal score", not noise.
    user_factors[np.diff(user_items.indptr) == 0] = 0.0
    item_factors[np.bincount(user_items.indices, minlength=user_items.shape[1]) == 0] = 0.0
    return user_factors, item_factors


def _fit_implicit(user_items: sp.csr_matrix, factors: int, regularization: float, iterations: int, alpha: float,
                  seed: int, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=int(factors), regularization=float(regularization),
                                    iterations=int(iterations), alpha=float(alpha), random_state=int(seed),
                                    num_threads=num_threads, calculate_training_loss=False)
    model.fit(user_items, show_progress=False)
    return (np.ascontiguousarray(model.user_factors, dtype=np.float32),
            np.ascontiguousarray(model.item_factors, dtype=np.float32))


def _fit_weighted(user_items: sp.csr_matrix, item_domain: np.ndarray, other_domain_weight: float, factors: int,
                  regularization: float, iterations: int, alpha: float, seed: int, num_threads: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """implicit's own ALS loop (same start values, same conjugate-gradient solver), with the users solved in
    groups of the domains they use.

    A user's normal equations hold Y'Y, the sum over all items of y y': the implied negatives. For the users
    of one group the rows of Y of the other domains are scaled by sqrt(w), so that sum counts those items w
    times; their observed items all lie in their own domains, whose rows are unscaled. Users with no event at
    all are solved as plain ALS solves them (their vectors are zeroed afterwards). With w = 1 every group sees
    the same Y and the result is implicit's, bit for bit (tests/test_als_fit.py).
    """
    from implicit.cpu import _als  # the solver AlternatingLeastSquares.fit calls

    confidence = user_items * np.float32(alpha) if alpha != 1.0 else user_items
    item_users = confidence.T.tocsr()
    rng = np.random.default_rng(int(seed))  # as implicit's check_random_state(seed)
    user_factors = rng.random((confidence.shape[0], factors), dtype=np.float32) * np.float32(0.01)
    item_factors = rng.random((confidence.shape[1], factors), dtype=np.float32) * np.float32(0.01)
    groups = _user_groups(confidence, item_domain, other_domain_weight)
    for _ in range(int(iterations)):
        for rows, block, item_scale in groups:
            vectors = user_factors[rows]
            _als.least_squares_cg(block, vectors, item_factors * item_scale[:, None], float(regularization),
                                  num_threads=num_threads, cg_steps=CG_STEPS)
            user_factors[rows] = vectors
        _als.least_squares_cg(item_users, item_factors, user_factors, float(regularization), num_threads=num_threads,
                              cg_steps=CG_STEPS)
    return user_factors, item_factors


def _user_groups(confidence: sp.csr_matrix, item_domain: np.ndarray, other_domain_weight: float
                 ) -> list[tuple[np.ndarray, sp.csr_matrix, np.ndarray]]:
    """Users by the set of domains they have events in: (rows, their rows of the matrix, per-item scale of Y:
    1 for the items of their domains, sqrt(w) for the others)."""
    domains = np.unique(item_domain)
    code = np.searchsorted(domains, item_domain).astype(np.int8)
    row_of = np.repeat(np.arange(confidence.shape[0], dtype=np.int32), np.diff(confidence.indptr))
    uses = np.zeros((confidence.shape[0], len(domains)), dtype=bool)
    uses[row_of, code[confidence.indices]] = True
    uses[~uses.any(axis=1)] = True  # no event at all: solved as plain ALS solves them
    pattern = uses.astype(np.int64) @ (1 << np.arange(len(domains), dtype=np.int64))
    other = np.float32(np.sqrt(other_domain_weight))
    groups = []
    for value in np.unique(pattern):
        rows = np.flatnonzero(pattern == value)
        own = ((value >> code) & 1).astype(bool)
        groups.append((rows, confidence[rows], np.where(own, np.float32(1.0), other).astype(np.float32)))
    return groups


def solve_users(confidence: sp.csr_matrix, item_factors: np.ndarray, *, regularization: float,
                item_scale: np.ndarray | None = None) -> np.ndarray:
    """ALS user vectors for fixed item factors, each row solved exactly: the least squares whose solution
    ALS's user step approaches by conjugate gradient (implicit's user_linear_equation).

    Args:
        confidence: users x items, alpha x weight where observed (as fit_als multiplies it).
        item_scale: per item, how the item's row of Y counts in the implied negatives (as _fit_weighted
            scales it: sqrt(w) in a domain the users have no event in); None = 1 for every item.

    Returns:
        users x factors, float32; a row with no event gets a zero vector (as fit_als zeroes it).
    """
    y = item_factors.astype(np.float64)
    scaled = y if item_scale is None else y * np.asarray(item_scale, dtype=np.float64)[:, None]
    negatives = scaled.T @ scaled + regularization * np.eye(y.shape[1])
    confidence = confidence.tocsr()
    out = np.zeros((confidence.shape[0], y.shape[1]), np.float32)
    for row in range(confidence.shape[0]):
        lo, hi = confidence.indptr[row], confidence.indptr[row + 1]
        if hi == lo:
            continue
        taken, weight = y[confidence.indices[lo:hi]], confidence.data[lo:hi].astype(np.float64)
        out[row] = np.linalg.solve(negatives + (taken.T * (weight - 1.0)) @ taken, taken.T @ weight)
    return out


def item_domains(items: pd.DataFrame) -> np.ndarray:
    """The domain code of each column of the merged matrix (merge-domains' items table)."""
    return items.sort_values(COL)[DOMAIN].cat.codes.to_numpy()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=FOLDS)
    parser.add_argument("--merged", default="data/merged")
    parser.add_argument("--out", default="models/als")
    parser.add_argument("--gate", default="data/gate/early.json", help="read by the early fold only")
    args = parser.parse_args(argv)
    params = section_params(load_params(), "als")
    out = Path(args.out) / args.fold
    if args.fold == "early" and not read_json(args.gate)["needed"]:
        log.info("als-fit early: not needed (%s): the holdout ranker learns on the train fold alone", args.gate)
        write_json({"fold": "early", "reason": f"not needed by the holdout ranker ({args.gate})"},
                   out / UNUSED_FOLD_MARKER)
        return
    matrix = sp.load_npz(Path(args.merged) / f"matrix_{args.fold}.npz").tocsr()
    domains = item_domains(pd.read_parquet(Path(args.merged) / "items.parquet"))
    log.info("als-fit %s: %d users x %d items, %d non-zeros, %d factors, %d iterations, other-domain negatives "
             "x %g", args.fold, *matrix.shape, matrix.nnz, params["factors"], params["iterations"],
             params["other_domain_weight"])
    user_factors, item_factors = fit_als(matrix, **params, item_domain=domains)
    write_npy(user_factors, out / "user_factors.npy")
    write_npy(item_factors, out / "item_factors.npy")


if __name__ == "__main__":
    run_stage(main)
