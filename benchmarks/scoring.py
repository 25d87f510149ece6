"""Benchmark: candidate scoring (stages.candidates.top_n_items) against the machine's sgemm and implicit's recommend.

    python -m benchmarks.scoring [--users 20000] [--items 167000] [--factors 64] [--n 200]

Prints one table; each time is the best of three runs. Useful work is users x items x factors multiply-adds; each
row reports its rate as a share of numpy's float32 matrix multiply on matrices of the same shape, measured in the
same run. BLAS is pinned to one thread for the scorers (as the pipeline runs them; implicit's kernels use their own
two threads); sgemm is measured both on one thread and on all of the machine's cores.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from stages.candidates import top_n_items

BLOCK = 2000  # users per sgemm block: the reference multiply, without any selection


def _seen(n_users: int, n_items: int, per_user: int, rng: np.random.Generator) -> sp.csr_matrix:
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.integers(0, n_items, size=len(rows))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))


def _best_of(run, repeats: int = 3) -> float:
    """The shortest of a few timed runs: the machine is shared, and the slow runs measure the neighbours."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def scoring_table(n_users: int = 20_000, n_items: int = 167_000, factors: int = 64, n: int = 200
                  ) -> tuple[str, dict[str, float]]:
    """Time every scorer on random factors of the given shape.

    Returns:
        (a markdown table with a line above it, seconds of "sgemm" (all threads), "ours" and "implicit")
    """
    rng = np.random.default_rng(0)
    users = rng.standard_normal((n_users, factors), dtype=np.float32)
    items = rng.standard_normal((n_items, factors), dtype=np.float32)
    seen = _seen(n_users, n_items, 50, rng)
    madds = n_users * n_items * factors
    rows = []

    def sgemm_only() -> None:
        for lo in range(0, n_users, BLOCK):
            users[lo:lo + BLOCK] @ items.T

    sgemm = _best_of(sgemm_only)
    rows.append((f"numpy sgemm only (reference, {os.cpu_count()} BLAS threads)", sgemm))
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, num_threads=2)
    model.user_factors, model.item_factors = users, items
    results = {}
    with threadpool_limits(1, "blas"):
        rows.append(("numpy sgemm only (1 BLAS thread)", _best_of(sgemm_only)))
        rows.append(("stages.candidates.top_n_items (top-N, seen excluded)",
                     _best_of(lambda: results.update(ours=top_n_items(users, items, seen, n)[0]))))
        rows.append(("implicit recommend (top-N, seen excluded)", _best_of(lambda: results.update(
            theirs=model.recommend(np.arange(n_users), seen, N=n, filter_already_liked_items=True)[0]))))
        ours, theirs = results["ours"], results["theirs"]

        subset = min(n_users, 4 * BLOCK)  # slow: timed on a subset, scaled to all users
        start = time.perf_counter()
        for lo in range(0, subset, BLOCK):
            scores = users[lo:lo + BLOCK] @ items.T
            np.argpartition(-scores, n, axis=1)[:, :n]
        rows.append(("numpy matmul + argpartition (no exclusion)", (time.perf_counter() - start) * n_users / subset))

    same = np.mean([len(set(a) & set(b)) / n for a, b in zip(ours[:500], theirs[:500])])
    lines = [f"{n_users:,} users x {n_items:,} items x {factors} factors, top {n}; {madds / 1e9:.1f} G "
             f"multiply-adds; top-N overlap ours vs implicit: {same:.3f}", "",
             "| scorer | seconds | G madd/s | share of sgemm |", "|---|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} | {madds / seconds / 1e9:.1f} | {sgemm / seconds:.0%} |"
              for name, seconds in rows]
    seconds = {"sgemm": sgemm, "ours": rows[2][1], "implicit": rows[3][1]}
    return "\n".join(lines), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=167_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print(scoring_table(args.users, args.items, args.factors, args.n)[0])


if __name__ == "__main__":
    main()
