"""Benchmark: ranker variants judged on the train fold only, so that ranker settings are chosen without the holdout.

    dvc repro && python -m benchmarks.ranker_validation [--models 1,3,5,10] [--folds 5] [--set learning_rate=0.05 ...]

The holdout ranker learns on `data/features/train.parquet` (labels: the label window). Here a fixed fifth of its
users (a hash of the user with a seed of its own) is kept out of every model; up to max(--models) models are
fitted on the other users exactly as `stages.ranker_fit` fits them (each early-stopped on its own held-out
users), and the mean score of the first n models ranks the kept-out users' candidates. The table gives NDCG@10
of those rankings against the labels, over the kept-out users with a positive, for each n: the score
`ranker.n_models` was chosen by (see docs/experiments.md). It measures stage two only: a truth item that
is not among the candidates counts for nobody here.

`--folds 5` repeats this for each of the five fifths (the first is the fifth above), so that every user is
kept out once and scored by models that never saw them: five times the fits, and a score over all the users
instead of a fifth of them, for differences too small for one fifth to tell apart.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import yaml

from stages.common import DOMAIN, ITEM_IDX, K, USER_IDX, load_params, section_params
from stages.evaluate import per_user_metrics
from stages.ranker_fit import HASH_BUCKETS, fit_ranker, model_scores, user_bucket

KEPT_OUT_SHARE, KEPT_OUT_SEED = 0.2, 999
MAX_FOLDS = round(1 / KEPT_OUT_SHARE)


def candidate_ndcg(frame: pd.DataFrame, scores: np.ndarray, k: int = K) -> float:
    """Mean NDCG@k of each (user, domain) group's candidates ordered by `scores`, against `label`; groups
    without a positive are skipped. The lists and truth of `stages.evaluate.per_user_metrics`, a domain at a
    time, with each candidate row as its own item."""
    ranked = frame[[USER_IDX, DOMAIN, "label"]].assign(**{ITEM_IDX: np.arange(len(frame)), "rank": -scores})
    ndcg = [per_user_metrics(part, part[part["label"] > 0], k)["ndcg"]
            for _, part in ranked.groupby(DOMAIN, observed=True)]
    return float(pd.concat(ndcg).mean())


def kept_out_fold(users: np.ndarray) -> np.ndarray:
    """Which fifth (0..MAX_FOLDS-1) each user is kept out in: a hash of the user with the benchmark's own seed."""
    return user_bucket(users, KEPT_OUT_SEED) * MAX_FOLDS // HASH_BUCKETS


def validate(features: pd.DataFrame, ranker_params: dict, models: list[int], folds: int = 1) -> dict[int, float]:
    """NDCG@10 on the kept-out users for the mean of the first n models, for each n in `models`; with
    folds > 1, each of the first `folds` fifths of the users is kept out in turn and scored by its own models."""
    if not 1 <= folds <= MAX_FOLDS:
        raise SystemExit(f"benchmarks.ranker_validation: --folds must be 1..{MAX_FOLDS}, got {folds}")
    fold_of = kept_out_fold(features[USER_IDX].to_numpy())
    tests, scores = [], {n: [] for n in models}
    for fold in range(folds):
        kept_out = fold_of == fold
        fit, test = features[~kept_out], features[kept_out]
        boosters, meta = fit_ranker(fit, **{**ranker_params, "n_models": max(models), "budget_rows": 0})
        if boosters is None:
            raise SystemExit("benchmarks.ranker_validation: no group with a positive label to learn from")
        each = model_scores(boosters, meta, test)
        tests.append(test)
        for n in models:
            scores[n].append(np.mean(each[:n], axis=0))
    test = pd.concat(tests)
    return {n: candidate_ndcg(test, np.concatenate(scores[n])) for n in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1,3,5,10", help="numbers of models to compare (comma-separated)")
    parser.add_argument("--folds", type=int, default=1,
                        help=f"fifths of the users kept out in turn (1..{MAX_FOLDS}; {MAX_FOLDS}: every user once)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ranker.* param for this run, e.g. learning_rate=0.05")
    args = parser.parse_args()
    params = dict(section_params(load_params(), "ranker"))
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in params:
            raise SystemExit(f"benchmarks.ranker_validation: ranker.{key} is not a ranker param")
        params[key] = yaml.safe_load(value)
    models = sorted({int(n) for n in args.models.split(",")})
    features = pd.read_parquet("data/features/train.parquet")
    scores = validate(features, params, models, args.folds)
    overrides = ", ".join(args.set) or "params.yaml as it is"
    print(f"Ranker validation on the train fold ({overrides}, {args.folds} of {MAX_FOLDS} fifths kept out in "
          f"turn): NDCG@10 of the candidates of the kept-out users\n")
    print("| models | NDCG@10 |\n|---:|---:|")
    for n, score in scores.items():
        print(f"| {n} | {score:.4f} |")


if __name__ == "__main__":
    main()
