"""Benchmark: ranker variants judged on the train fold only, so that settings are chosen without the holdout.

    dvc repro && python -m benchmarks.ranker_validation [--models 1,3,5,10] [--folds 5] [--set learning_rate=0.05 ...]
                                                        [--one-window | --two-windows] [--cold-orders popular,blend]
                                                        [--with-newcomers | --without-newcomers] [--forward]

The holdout ranker learns on `data/features/train.parquet` (labels: the label window) and
`data/features/early.parquet` (the early window before it). Here a fixed fifth of the train fold's users (a hash
of the user with a seed of its own) is kept out of every model; up to max(--models) models are fitted on the
other users' train-fold rows and on every user's early-fold rows (as the holdout ranker learns on the early
rows of the users it serves: their early window is history to the train fold), exactly as `stages.ranker_fit`
fits them (each early-stopped on its own held-out users), and the mean score of the first n models ranks the
kept-out users' candidates. The early rows join as they would join the holdout ranker (while the train fold
has fewer than `ranker.two_windows_below_groups` groups with a positive); `--one-window` leaves them out,
`--two-windows` takes them in any case (the early fold must then have been computed: stage early-gate computes
it only when the holdout ranker learns on it). For each n the table
gives two NDCG@10 figures of those rankings:
- stage two: against the labels, over the kept-out users with a positive among their candidates (a truth item
  that is not among the candidates counts for nobody): the score `ranker.n_models` was chosen by;
- whole model: against everything the kept-out users took in the label window (as `stages.evaluate` scores the
  holdout: every truth user, truth items outside the candidates are misses, cold users' lists as `cold.order`
  makes them), the geometric mean of the domains.
  This one also judges stage one, so candidate and ALS settings can be chosen on it (see docs/experiments.md).

A second table splits the whole model by domain and segment (warm, cross, cold as `stages.cold_split` names
them at the train fold's cut-off) for the largest n, next to popular and ALS-only lists made of the same
candidates (`pop_rank` order; `als_rank` order, popular ones after): where the holdout's segment table shows
the ranker behind ALS-only on a small segment, this tells noise from a weakness without looking at the holdout.
`--cold-orders` adds a final column for each `cold.order` named (the same models; only cold rows differ), to
choose that param from one set of fits.

The simulated newcomers of the train fold (and of the early fold when it joins) are fitted on as
`stages.ranker_fit` fits them (while the train fold has fewer than `ranker.newcomers_below_groups` groups with
a positive), a kept-out user's newcomer rows left out with the user's own (they carry the same labels);
`--without-newcomers` / `--with-newcomers` fit without any / with them whatever that param says, to judge them.
Only real users are scored.

`--folds 5` repeats this for each of the five fifths (the first is the fifth above), so that every user is
kept out once and scored by models that never saw them: five times the fits, and a score over all the users
instead of a fifth of them, for differences too small for one fifth to tell apart.

`--forward` judges the way serving works instead: the models learn on the early fold alone (its real users, and
its simulated newcomers as a ranker learning on that fold would take them: while it has fewer than
`ranker.newcomers_below_groups` groups with a positive) and score every user of the train fold, one label window
later, as the holdout ranker learns on the label window and serves the holdout window. The kept-out fifth shares
its label window with the rows fitted on; a choice that only helps within one window (a copy of a user whose
label-window events continue its own hidden history, say) shows there and not here. It needs the early fold
(computed only while the holdout ranker learns on it: at full size raise `ranker.two_windows_below_groups` and
`dvc repro` in a copy), and it cannot judge the number of windows itself.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from stages.cold_split import SEGMENTS, check_cold_order, final_order, segments_at_cutoff, segments_of
from stages.common import (DOMAIN, DOMAINS, ITEM_IDX, K, USER_IDX, WINDOW, load_params, read_json, section_params,
                           user_domain_group)
from stages.evaluate import fold_truth, per_user_metrics
from stages.ranker_fit import (HASH_BUCKETS, fit_ranker, learning_folds, model_scores, newcomer_folds, positive_groups,
                               read_newcomers, training_rows, user_bucket)

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


def whole_model_ndcg(frame: pd.DataFrame, scores: np.ndarray, truth: dict[str, pd.DataFrame], k: int = K) -> float:
    """Geometric mean over the domains of the mean NDCG@k of the truth users among frame's users (every
    labelled user has candidates: popular ones at least), the candidates ordered by `scores` (truth: user_idx,
    item_idx per domain; a truth user without candidates in one domain scores 0 there)."""
    ranked = frame[[USER_IDX, DOMAIN, ITEM_IDX]].assign(rank=-scores)
    users = np.unique(frame[USER_IDX].to_numpy())
    means = []
    for domain in DOMAINS:
        lists = ranked[ranked[DOMAIN] == domain]
        mine = truth[domain][np.isin(truth[domain][USER_IDX].to_numpy(), users)]
        means.append(float(per_user_metrics(lists, mine, k)["ndcg"].mean()) if len(mine) else 0.0)
    return float(np.sqrt(means[0] * means[1]))


def baseline_orders(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Scores (higher = better) that order each user's candidates as popular and as ALS-only lists: popular by
    `pop_rank` (other candidates last), ALS-only by `als_rank` with the popular candidates after, as the
    holdout's ALS-only lists are filled with popular items."""
    pop = frame["pop_rank"].to_numpy(dtype=np.float64)
    als = frame["als_rank"].to_numpy(dtype=np.float64)
    last = np.nanmax(np.concatenate([pop, als, [0.0]])) + 1
    pop_order = np.where(np.isnan(pop), 2 * last, pop)
    als_order = np.where(np.isnan(als), last + pop_order, als)
    return {"popular": -pop_order, "als": -als_order}


def served_scores(frame: pd.DataFrame, scores: np.ndarray, segments: dict[str, pd.Series], cold_order: str
                  ) -> np.ndarray:
    """The ranker's scores with the cold users' rows ordered as `stages.cold_split` serves them: by
    cold_split.final_order, and the rows it leaves out after the others in popularity order (as cold-split
    fills a list from popularity). Only the order within a user's candidates matters to the scores that use
    this."""
    cold = np.zeros(len(frame), dtype=bool)
    for domain in DOMAINS:
        rows = (frame[DOMAIN] == domain).to_numpy()
        cold[rows] = segments_of(segments[domain], frame.loc[rows, USER_IDX].to_numpy()) == "cold"
    group = user_domain_group(frame[USER_IDX].to_numpy(), pd.Categorical(frame[DOMAIN], categories=list(DOMAINS)).codes)
    order = final_order(group, scores, frame["pop_rank"], cold, cold_order)
    after_all = np.nanmax(np.abs(np.r_[order, 0.0])) + 1  # a left-out row's key exceeds every kept one
    popular_place = -baseline_orders(frame)["popular"]  # by pop_rank, the other candidates last
    return -np.where(np.isnan(order), after_all + popular_place, order)


def segment_ndcg(frame: pd.DataFrame, scores: dict[str, np.ndarray], truth: dict[str, pd.DataFrame],
                 segments: dict[str, pd.Series], k: int = K) -> pd.DataFrame:
    """Mean NDCG@k per domain and segment of each model's lists (scores: model -> one score per frame row),
    over the truth users among frame's users, as whole_model_ndcg scores them (segments: per domain, user_idx ->
    segment; a user missing there counts as cold).

    Returns:
        one row per (domain, segment) with truth users: domain, segment, users, then one column per model.
    """
    users = np.unique(frame[USER_IDX].to_numpy())
    rows = []
    for domain in DOMAINS:
        mine = truth[domain][np.isin(truth[domain][USER_IDX].to_numpy(), users)]
        if not len(mine):
            continue
        in_domain = (frame[DOMAIN] == domain).to_numpy()
        lists = frame.loc[in_domain, [USER_IDX, ITEM_IDX]]
        ndcg = pd.DataFrame({model: per_user_metrics(lists.assign(rank=-score[in_domain]), mine, k)["ndcg"]
                             for model, score in scores.items()})  # one row per truth user, any model
        segment = segments_of(segments[domain], ndcg.index.to_numpy())
        for name in SEGMENTS:
            part = ndcg[segment == name]
            if len(part):
                rows.append({DOMAIN: domain, "segment": name, "users": len(part), **part.mean().to_dict()})
    return pd.DataFrame(rows)


def kept_out_fold(users: np.ndarray) -> np.ndarray:
    """Which fifth (0..MAX_FOLDS-1) each user is kept out in: a hash of the user with the benchmark's own seed."""
    return user_bucket(users, KEPT_OUT_SEED) * MAX_FOLDS // HASH_BUCKETS


def kept_out_scores(features: pd.DataFrame, ranker_params: dict, models: list[int], folds: int = 1,
                    early: pd.DataFrame | None = None, newcomers: dict[str, pd.DataFrame] | None = None
                    ) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """The rows of the kept-out users of the first `folds` fifths, and for each n in `models` their scores by
    the mean of the first n models fitted without their train-fold rows (and with all of `early`, the early
    fold's rows, when given). newcomers: fold -> the simulated newcomers' features of that fold ("train", and
    "early" with `early`), fitted on as stages.ranker_fit fits them; a kept-out user's train-fold newcomer rows
    are left out with the user's own rows (they carry the same labels)."""
    if not 1 <= folds <= MAX_FOLDS:
        raise SystemExit(f"benchmarks.ranker_validation: --folds must be 1..{MAX_FOLDS}, got {folds}")
    fold_of = kept_out_fold(features[USER_IDX].to_numpy())
    newcomer_fold_of = {name: kept_out_fold(frame[USER_IDX].to_numpy()) for name, frame in (newcomers or {}).items()}
    tests, scores = [], {n: [] for n in models}
    for fold in range(folds):
        kept_out = fold_of == fold
        fit, test = features[~kept_out], features[kept_out]
        if early is not None or newcomers:
            extra = {name: frame[newcomer_fold_of[name] != fold] if name == "train" else frame
                     for name, frame in (newcomers or {}).items()}
            fit = training_rows({"train": fit, **({} if early is None else {"early": early})}, extra or None)
        tests.append(test)
        for n, score in fitted_scores(fit, test, ranker_params, models).items():
            scores[n].append(score)
    return pd.concat(tests), {n: np.concatenate(parts) for n, parts in scores.items()}


def fitted_scores(fit: pd.DataFrame, test: pd.DataFrame, ranker_params: dict, models: list[int]
                  ) -> dict[int, np.ndarray]:
    """For each n in `models`, test's scores by the mean of the first n of max(models) models fitted on `fit` as
    stages.ranker_fit fits them (each early-stopped on its own users; no row budget)."""
    boosters, meta = fit_ranker(fit, **{**ranker_params, "n_models": max(models), "budget_rows": 0})
    if boosters is None:
        raise SystemExit("benchmarks.ranker_validation: no group with a positive label to learn from")
    each = model_scores(boosters, meta, test)
    return {n: np.mean(each[:n], axis=0) for n in models}


def forward_scores(earlier: pd.DataFrame, later: pd.DataFrame, ranker_params: dict, models: list[int],
                   newcomers: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Every row of `later` (the train fold's features) and for each n in `models` its scores by the mean of the
    first n models fitted on `earlier` (the early fold's features, one label window before) and, when given and
    not empty, the early fold's simulated newcomers, as stages.ranker_fit fits them."""
    fit = training_rows({"early": earlier}, {"early": newcomers}) if newcomers is not None and len(newcomers) \
        else earlier
    return later, fitted_scores(fit, later, ranker_params, models)


def validate(features: pd.DataFrame, ranker_params: dict, models: list[int], folds: int = 1,
             early: pd.DataFrame | None = None, newcomers: dict[str, pd.DataFrame] | None = None
             ) -> dict[int, float]:
    """Stage-two NDCG@10 (candidate_ndcg) on the kept-out users for the mean of the first n models, for each n
    in `models`; with folds > 1, each of the first `folds` fifths of the users is kept out in turn."""
    test, scores = kept_out_scores(features, ranker_params, models, folds, early, newcomers)
    return {n: candidate_ndcg(test, score) for n, score in scores.items()}


def train_fold_truth(seen: sp.csr_matrix, items: pd.DataFrame, directory: str = "data") -> dict[str, pd.DataFrame]:
    """What the train fold's users took in the label window, on items new to them (as stages.evaluate;
    seen: the train fold's matrix)."""
    interactions = pd.read_parquet(f"{directory}/merged/interactions.parquet",
                                   columns=[USER_IDX, DOMAIN, ITEM_IDX, WINDOW])
    return fold_truth(interactions, seen, items, "train", f"{directory}/candidates")


EARLY_NOT_COMPUTED = ("benchmarks.ranker_validation: the early fold was not computed (data/gate/early.json: the "
                      "holdout ranker does not learn on it); for {option} raise ranker.two_windows_below_groups above "
                      "the train fold's groups with a positive and run dvc repro")


def read_early(option: str) -> pd.DataFrame:
    """The early fold's features; a clear stop when early-gate left them empty (the fold was not computed)."""
    early = pd.read_parquet("data/features/early.parquet")
    if not len(early) and not read_json("data/gate/early.json")["needed"]:
        raise SystemExit(EARLY_NOT_COMPUTED.format(option=option))
    return early


def kept_out_run(features: pd.DataFrame, params: dict, models: list[int], folds: int, below_groups: int,
                 newcomers_below_groups: int, two_windows: bool | None = None, with_newcomers: bool | None = None
                 ) -> tuple[pd.DataFrame, dict[int, np.ndarray], list[str]]:
    """The kept-out fifths' rows, their scores per number of models, and what was fitted on (for the heading).
    two_windows / with_newcomers: True or False forces the choice, None takes it as the holdout ranker would."""
    train_groups = positive_groups(features)
    if two_windows is not None:
        two = two_windows
    else:  # as the early rows would join the holdout ranker
        two = len(learning_folds("holdout", train_groups, below_groups)) == 2
    early = read_early("--two-windows") if two else None
    learned_on = ("train", "early") if two else ("train",)
    if with_newcomers is not None:
        folds_of_newcomers = learned_on if with_newcomers else ()
    else:  # as the holdout ranker learns on them
        folds_of_newcomers = newcomer_folds(learned_on, train_groups, newcomers_below_groups)
    newcomers = read_newcomers(folds_of_newcomers)
    newcomers = {fold: frame for fold, frame in newcomers.items() if len(frame)}  # named in the heading
    test, scores = kept_out_scores(features, params, models, folds, early, newcomers or None)
    return test, scores, ["two windows" if two else "one window",
                          f"simulated newcomers of {' and '.join(newcomers)}" if newcomers else "no newcomers"]


def forward_run(features: pd.DataFrame, params: dict, models: list[int], newcomers_below_groups: int,
                with_newcomers: bool | None = None) -> tuple[pd.DataFrame, dict[int, np.ndarray], list[str]]:
    """The train fold's rows scored by models of the early fold (forward_scores), and what was fitted on;
    with_newcomers as in kept_out_run."""
    early = read_early("--forward")
    early_groups = positive_groups(early)
    if with_newcomers is not None:
        take = with_newcomers
    else:  # as a ranker learning on the early fold would take them
        take = bool(newcomer_folds(("early",), early_groups, newcomers_below_groups))
    newcomers = read_newcomers(("early",))["early"] if take else None
    test, scores = forward_scores(early, features, params, models, newcomers)
    taken = newcomers is not None and len(newcomers)
    return test, scores, [f"fitted on the early fold ({early_groups} groups with a positive)",
                          "its simulated newcomers" if taken else "no newcomers"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1,3,5,10", help="numbers of models to compare (comma-separated)")
    parser.add_argument("--folds", type=int, default=1,
                        help=f"fifths of the users kept out in turn (1..{MAX_FOLDS}; {MAX_FOLDS}: every user once)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ranker.* param for this run, e.g. learning_rate=0.05")
    windows = parser.add_mutually_exclusive_group()
    windows.add_argument("--one-window", action="store_true",
                         help="fit on the train fold alone, without the early fold's rows")
    windows.add_argument("--two-windows", action="store_true",
                         help="fit with the early fold's rows whatever ranker.two_windows_below_groups says")
    newcomer_choice = parser.add_mutually_exclusive_group()
    newcomer_choice.add_argument("--with-newcomers", action="store_true",
                                 help="fit with the simulated newcomers' rows (features/<fold>_newcomers.parquet) "
                                      "whatever ranker.newcomers_below_groups says")
    newcomer_choice.add_argument("--without-newcomers", action="store_true",
                                 help="fit without the simulated newcomers' rows")
    parser.add_argument("--forward", action="store_true",
                        help="fit on the early fold alone and score every user of the train fold, one label window "
                             "later (not with --folds, --one-window, --two-windows)")
    parser.add_argument("--cold-orders", default="", metavar="ORDER,...",
                        help="also score the final model with cold users ordered each of these ways (cold.order "
                             "values), as more columns of the segment table")
    args = parser.parse_args()
    extra_cold_orders = [order for order in args.cold_orders.split(",") if order]
    for order in extra_cold_orders:
        check_cold_order(order)
    all_params = load_params()
    params = dict(section_params(all_params, "ranker"))
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in params:
            raise SystemExit(f"benchmarks.ranker_validation: ranker.{key} is not a ranker param")
        params[key] = yaml.safe_load(value)
    models = sorted({int(n) for n in args.models.split(",")})
    below_groups = params.pop("two_windows_below_groups")
    newcomers_below_groups = params.pop("newcomers_below_groups")
    features = pd.read_parquet("data/features/train.parquet")
    # None: as the ranker would choose (the params' gates); True / False: forced by a flag
    two_windows = True if args.two_windows else False if args.one_window else None
    with_newcomers = True if args.with_newcomers else False if args.without_newcomers else None
    if args.forward:
        if args.folds != 1 or args.one_window or args.two_windows:
            raise SystemExit("benchmarks.ranker_validation: --forward fits on the early fold and scores the whole "
                             "train fold: no --folds, --one-window or --two-windows with it")
        test, scores, overrides = forward_run(features, params, models, newcomers_below_groups, with_newcomers)
        heading = f"Forward validation ({', '.join(args.set + overrides)}): NDCG@10 of every train-fold user"
    else:
        test, scores, overrides = kept_out_run(features, params, models, args.folds, below_groups,
                                               newcomers_below_groups, two_windows, with_newcomers)
        heading = (f"Ranker validation on the train fold ({', '.join(args.set + overrides)}, {args.folds} of "
                   f"{MAX_FOLDS} fifths kept out in turn): NDCG@10 of the kept-out users")
    items = pd.read_parquet("data/merged/items.parquet")
    seen = sp.load_npz("data/merged/matrix_train.npz").tocsr()
    truth = train_fold_truth(seen, items)
    print(heading + "\n")
    cold = section_params(all_params, "cold")
    segments = segments_at_cutoff(seen, items, min_interactions=cold["min_interactions"])
    served = {n: served_scores(test, score, segments, cold["order"]) for n, score in scores.items()}
    print("| models | stage two (candidates) | whole model |\n|---:|---:|---:|")
    for n, score in scores.items():
        print(f"| {n} | {candidate_ndcg(test, score):.4f} | {whole_model_ndcg(test, served[n], truth):.4f} |")
    finals = {"final": served[models[-1]],
              **{f"final, cold {order}": served_scores(test, scores[models[-1]], segments, order)
                 for order in extra_cold_orders}}
    table = segment_ndcg(test, {**baseline_orders(test), **finals}, truth, segments)
    print(f"\nWhole model by domain and segment ({models[-1]} models, cold users ordered by {cold['order']}; popular "
          f"and ALS-only from the same candidates)\n")
    print("| domain | segment | users | popular | ALS-only | " + " | ".join(finals) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(finals))
    for _, row in table.iterrows():
        values = " | ".join(f"{row[model]:.4f}" for model in ["popular", "als", *finals])
        print(f"| {row[DOMAIN]} | {row['segment']} | {row['users']} | {values} |")


if __name__ == "__main__":
    main()
