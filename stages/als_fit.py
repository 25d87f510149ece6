"""Stage `als-fit` (one run per fold): implicit ALS on the merged users x items matrix of both domains.

In:  `data/merged/matrix_<fold>.npz` (confidence weights, see merge_domains).
Out: `models/als/<fold>/user_factors.npy`, `models/als/<fold>/item_factors.npy` (float32).

Because both domains sit in one matrix, a user with history in only one domain still gets a taste vector,
and that vector scores the other domain's items: the cross-domain recommendation.
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
import scipy.sparse as sp  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from stages.common import FOLDS, check_section, load_params, run_stage, section_params, write_npy  # noqa: E402

log = logging.getLogger("pipeline.als")


def fit_als(user_items: sp.csr_matrix, *, factors: int, regularization: float, iterations: int, alpha: float,
            seed: int, num_threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit ALS (Hu, Koren, Volinsky 2008) on the CPU.

    Args:
        user_items: users x items confidence weights; a zero is an implied negative with confidence 1.
        factors, regularization, iterations: the usual ALS hyper-parameters.
        alpha: multiplies every observed weight (how much more an observed event counts than a missing one).
        seed: random initialisation of the factors.
        num_threads: implicit's own worker threads (BLAS is pinned to one thread meanwhile).

    Returns:
        (user_factors users x factors, item_factors items x factors), float32. A user or item with no
        observed event gets a zero vector, so it scores 0 against everything.
    """
    check_section("als", factors=factors, regularization=regularization, iterations=iterations, alpha=alpha,
                  seed=seed)
    from implicit.cpu.als import AlternatingLeastSquares

    if user_items.nnz == 0:
        return (np.zeros((user_items.shape[0], factors), np.float32),
                np.zeros((user_items.shape[1], factors), np.float32))
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=int(factors), regularization=float(regularization),
                                        iterations=int(iterations), alpha=float(alpha), random_state=int(seed),
                                        num_threads=num_threads, calculate_training_loss=False)
        model.fit(user_items.tocsr().astype(np.float32), show_progress=False)
    user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    # implicit initialises every row randomly and the solver leaves a row with no events near its start
    # value; zero them so that "no history" means "no personal score", not noise.
    user_factors[np.diff(user_items.indptr) == 0] = 0.0
    item_factors[np.bincount(user_items.indices, minlength=user_items.shape[1]) == 0] = 0.0
    return user_factors, item_factors


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fold", choices=FOLDS)
    parser.add_argument("--merged", default="data/merged")
    parser.add_argument("--out", default="models/als")
    args = parser.parse_args(argv)
    params = section_params(load_params(), "als")
    matrix = sp.load_npz(Path(args.merged) / f"matrix_{args.fold}.npz").tocsr()
    log.info("als-fit %s: %d users x %d items, %d non-zeros, %d factors, %d iterations", args.fold,
             *matrix.shape, matrix.nnz, params["factors"], params["iterations"])
    user_factors, item_factors = fit_als(matrix, **params)
    out = Path(args.out) / args.fold
    write_npy(user_factors, out / "user_factors.npy")
    write_npy(item_factors, out / "item_factors.npy")


if __name__ == "__main__":
    run_stage(main)
