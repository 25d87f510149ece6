"""Stage `ranker-fit` (one run per ranker): LightGBM lambdarank over the candidates, rows grouped by (user, domain).

Two rankers, the same recipe at two moments, each learning on the latest labelled fold before its cut-off and,
while that one is short of training groups, on the fold before it too:
    holdout: learns on features/train (+ features/early)   (labels: label (+ early) window) -> judged on the holdout
    final:   learns on features/holdout (+ features/train) (labels: holdout (+ label) window) -> the submission
The earlier window doubles the training groups, which a ranker on a few thousand users is short of; its rows
are one horizon older, and their features are taken at their own fold's cut-off, so they mean what they mean
at serving. It joins only while the latest fold has fewer than `two_windows_below_groups` groups with a
positive: on the sample (about 3,000) it raised the whole model's validation score, at full size (about
17,700) it did not, and there it costs a fit on twice the rows (docs/experiments.md). A user's rows of the two
windows are two queries (grouped by label window, user, domain), and fall on the same side of the
early-stopping split (the split hashes the user).
In:  `data/features/<fold>.parquet` and `<fold>_newcomers.parquet` of the ranker's two folds (the earlier
     ones read only when it joins).
Out: `models/ranker/<name>/model_<m>.txt` (LightGBM text models; a note for the fallback),
     `models/ranker/<name>/meta.json` (kind, features, best iterations, counts), `metrics/ranker_<name>.json`
     (training summary) and `metrics/plots/importance_<name>.csv` (feature gain).

Each fold's simulated newcomers (`data/features/<fold>_newcomers.parquet`: users of both domains with their
history in one domain hidden, see stages.candidates.newcomer_candidates) join as queries of their own, next to
the same users' real ones; early stopping judges real queries only. A labelled fold of the sample holds few real
cross-domain users, and they are the users the product is for. Like the earlier window, they join only while
the latest fold has fewer than `newcomers_below_groups` groups with a positive: on the sample they raised the
whole model's validation score on five runs of five, at full size they did not (0.2318 against 0.2317) and the
holdout was lower with them on four ranker seeds of four (docs/experiments.md).
Groups with no positive are dropped (they teach lambdarank nothing). A share of users (`valid_share`, chosen
by a hash of the user so the split is stable) is held out for early stopping. `n_models` > 1 fits that many
models, each holding out a different share of users, and scores by their mean: each user then teaches most of
the models, and the noise of one early-stopping set of a few hundred users averages out. It pays on small
data (a few thousand training users) and costs n_models times the fit and the scoring, so the models are
capped at `budget_rows` training rows in all: on the built-in sample (about 800,000 rows of the two folds) all
of them, at full size (one fold, about 2.3 million rows: `candidates.max_labelled_users` caps them) one.
With fewer than two groups that have a positive there is nothing to learn: the ranker falls back to ordering
by ALS score, and says so.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.common import (DOMAIN, USER_IDX, WINDOW, check_section, fold_label_window, load_params, run_stage,
                           section_params, write_json, write_text)
from stages.features import FEATURES

log = logging.getLogger("pipeline.ranker")

GROUP_KEY = [USER_IDX, DOMAIN]  # one lambdarank query: a user's candidates in one domain (of one label window)
NEWCOMER = "newcomer"  # 1 on the rows of simulated newcomers (features/<fold>_newcomers.parquet): queries apart

TRAIN_FOLDS = {"holdout": ("train", "early"), "final": ("holdout", "train")}  # the latest first


HASH_BUCKETS = 10_000


def user_bucket(users: np.ndarray, seed: int) -> np.ndarray:
    """A stable hash of user and seed into 0..HASH_BUCKETS-1: the same user lands in the same bucket every run."""
    return (users.astype(np.uint64) * np.uint64(2654435761) + np.uint64(seed)) % np.uint64(HASH_BUCKETS)


def split_users(users: np.ndarray, valid_share: float, seed: int) -> np.ndarray:
    """True for users whose groups go to the early-stopping set."""
    return user_bucket(users, seed) < np.uint64(round(valid_share * HASH_BUCKETS))


def fit_ranker(features: pd.DataFrame, *, n_estimators: int, learning_rate: float, num_leaves: int,
               min_child_samples: int, truncation_level: int, early_stopping_rounds: int, valid_share: float,
               seed: int, n_models: int = 1, budget_rows: int = 0) -> tuple[list | None, dict]:
    """Fit up to `n_models` lambdarank models, model m holding out the users of split seed `seed + m`.

    Args:
        features: rows of (user_idx, domain, item_idx, FEATURES..., label), and of several label windows a
            `window` column (see training_rows): then a query is a user's candidates of one domain and window.
        truncation_level: lambdarank_truncation_level: how deep into each list the pairwise gradients reach.
        early_stopping_rounds: stop when NDCG@10 on the held-out users has not improved for this many rounds.
        valid_share: share of users held out for early stopping (by each model).
        n_models: models to fit at most; scores are their mean.
        budget_rows: fit only as many models as have this many training rows in all (at least one), the
            rows of real users counted (a NEWCOMER column's 1s not); 0 = no cap.

    Returns:
        (list of lightgbm Boosters, or None for the ALS-score fallback; meta dict)
    """
    check_section("ranker", n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                  min_child_samples=min_child_samples, truncation_level=truncation_level,
                  early_stopping_rounds=early_stopping_rounds, valid_share=valid_share, seed=seed,
                  n_models=n_models, budget_rows=budget_rows)
    key = query_key(features)
    positives = features.groupby(key, observed=True)["label"].transform("max") > 0
    rows = features[positives].sort_values(key, kind="stable")
    n_groups = int(rows.groupby(key, observed=True).ngroups)
    meta = {"features": FEATURES, "rows": int(len(rows)), "groups": n_groups,
            "positives": int(rows["label"].sum()), "dropped_groups_without_positive":
            int(features.groupby(key, observed=True).ngroups) - n_groups}
    if n_groups < 2:
        log.warning("ranker: %d group(s) with a positive label: falling back to ordering by ALS score", n_groups)
        return None, {**meta, "kind": "als_score", "best_iterations": []}

    if budget_rows:  # counted in real users' rows: the newcomers' come on top, capped by candidates.newcomers
        real_rows = int((rows[NEWCOMER] == 0).sum()) if NEWCOMER in rows.columns else len(rows)
        n_models = max(1, min(int(n_models), int(budget_rows) // max(real_rows, 1)))
    boosters, best, valid_ndcg, valid_users, gain = [], [], [], [], np.zeros(len(FEATURES))
    for m in range(int(n_models)):
        booster, valid = _fit_one(rows, seed=int(seed) + m, n_estimators=n_estimators, learning_rate=learning_rate,
                                  num_leaves=num_leaves, min_child_samples=min_child_samples,
                                  truncation_level=truncation_level, early_stopping_rounds=early_stopping_rounds,
                                  valid_share=valid_share)
        boosters.append(booster)
        best.append(int(booster.best_iteration or n_estimators))
        valid_users.append(int(valid[USER_IDX].nunique()))
        if len(valid):
            valid_ndcg.append(float(booster.best_score["early_stopping"]["ndcg@10"]))
        gain += booster.feature_importance(importance_type="gain", iteration=best[-1])
        log.info("ranker %d/%d: %d rows, %d groups, best iteration %d, early-stopping NDCG@10 %s", m + 1,
                 n_models, len(rows), n_groups, best[-1], f"{valid_ndcg[-1]:.4f}" if len(valid) else "n/a")
    # Of several models: the mean early-stopping NDCG@10, each on its own held-out users.
    meta.update(kind="lightgbm", n_models=int(n_models), best_iterations=best,
                early_stopping_users=int(np.mean(valid_users)),
                early_stopping_ndcg10=float(np.mean(valid_ndcg)) if valid_ndcg else None,
                importance_gain={f: round(float(g / n_models), 4) for f, g in zip(FEATURES, gain)})
    return boosters, meta


def positive_groups(features: pd.DataFrame) -> int:
    """How many queries (query_key) have a positive label: the ones a ranker can learn from."""
    return int(features.loc[features["label"] > 0, query_key(features)].drop_duplicates().shape[0])


def learning_folds(name: str, latest_groups: int, two_windows_below_groups: int) -> tuple[str, ...]:
    """The folds ranker `name` learns on: its latest labelled fold, and the one before while the latest has
    fewer than `two_windows_below_groups` groups with a positive (0: never)."""
    latest, earlier = TRAIN_FOLDS[name]
    return (latest, earlier) if latest_groups < two_windows_below_groups else (latest,)


def newcomer_folds(folds: tuple[str, ...], latest_groups: int, newcomers_below_groups: int) -> tuple[str, ...]:
    """The folds whose simulated newcomers the ranker learns on: all it learns on while the latest has fewer
    than `newcomers_below_groups` groups with a positive (0: never), else none."""
    return tuple(folds) if latest_groups < newcomers_below_groups else ()


def query_key(features: pd.DataFrame) -> list[str]:
    """The columns that make one lambdarank query: (window,) (newcomer,) user, domain."""
    return [column for column in (WINDOW, NEWCOMER) if column in features.columns] + GROUP_KEY


def training_rows(folds: dict[str, pd.DataFrame], newcomers: dict[str, pd.DataFrame] | None = None
                  ) -> pd.DataFrame:
    """The features of several labelled folds as one table, each row tagged with its fold's label window;
    with `newcomers` (fold -> the fold's simulated newcomers' features), their rows too, tagged NEWCOMER = 1
    (the folds' own rows 0), so that a user's real and simulated groups are two queries."""
    names = {fold: fold_label_window(fold) for fold in folds}
    parts = [(fold, frame, 0) for fold, frame in folds.items()]
    parts += [(fold, frame, 1) for fold, frame in (newcomers or {}).items() if len(frame)]  # an empty one: none
    frames = []
    for fold, frame, newcomer in parts:
        tags = {WINDOW: pd.Categorical([names[fold]] * len(frame), categories=list(names.values()))}
        if newcomers is not None:
            tags[NEWCOMER] = np.full(len(frame), newcomer, dtype=np.int8)
        frames.append(frame.assign(**tags))
    return pd.concat(frames, ignore_index=True)


def read_newcomers(folds: tuple[str, ...] | list[str], directory: str = "data/features") -> dict[str, pd.DataFrame]:
    """The simulated newcomers' features of each fold (`<directory>/<fold>_newcomers.parquet`), for training_rows."""
    return {fold: pd.read_parquet(f"{directory}/{fold}_newcomers.parquet") for fold in folds}


def _fit_one(rows: pd.DataFrame, *, seed: int, n_estimators: int, learning_rate: float, num_leaves: int,
             min_child_samples: int, truncation_level: int, early_stopping_rounds: int, valid_share: float
             ) -> tuple[Any, pd.DataFrame]:
    """One lambdarank model on rows sorted by group; returns (Booster, the rows held out for early stopping)."""
    import lightgbm as lgb

    in_valid = split_users(rows[USER_IDX].to_numpy(), valid_share, seed)
    if in_valid.all() or not in_valid.any():
        in_valid = np.zeros(len(rows), dtype=bool)  # too few users to hold some out: no early stopping
    fit_rows, valid_rows = rows[~in_valid], rows[in_valid]
    if NEWCOMER in rows.columns:  # early stopping judges real queries only, as serving meets them
        valid_rows = valid_rows[valid_rows[NEWCOMER].to_numpy() == 0]

    def group_sizes(frame: pd.DataFrame) -> np.ndarray:
        return frame.groupby(query_key(frame), observed=True, sort=False).size().to_numpy()

    # The native API: lambdarank without pulling in scikit-learn for the LGBMRanker wrapper.
    lgb_params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": learning_rate,
        "num_leaves": int(num_leaves), "min_data_in_leaf": int(min_child_samples),
        "lambdarank_truncation_level": int(truncation_level), "seed": int(seed), "num_threads": 2,
        "deterministic": True, "force_row_wise": True, "verbosity": -1}
    train_set = lgb.Dataset(fit_rows[FEATURES], fit_rows["label"], group=group_sizes(fit_rows),
                            feature_name=FEATURES, free_raw_data=True)
    valid_sets, callbacks = [], []
    if len(valid_rows):
        valid_sets = [lgb.Dataset(valid_rows[FEATURES], valid_rows["label"], group=group_sizes(valid_rows),
                                  reference=train_set)]
        callbacks = [lgb.early_stopping(int(early_stopping_rounds), verbose=False)]
    booster = lgb.train(lgb_params, train_set, num_boost_round=int(n_estimators), valid_sets=valid_sets,
                        valid_names=["early_stopping"], callbacks=callbacks)
    return booster, valid_rows


def model_scores(boosters: list, meta: dict, features: pd.DataFrame) -> list[np.ndarray]:
    """Each model's scores for candidate rows, at its best iteration."""
    X = features[meta["features"]]
    return [booster.predict(X, num_iteration=best) for booster, best in zip(boosters, meta["best_iterations"])]


def score_candidates(boosters: list | None, meta: dict, features: pd.DataFrame, compiled: list | None = None
                     ) -> np.ndarray:
    """Ranker scores for candidate rows (higher is better): the mean over the models, each at its best
    iteration; the fallback uses the ALS score. `compiled` (compile_models of the same boosters) scores the
    same trees in native code."""
    if meta["kind"] == "als_score" or not boosters:
        return features["als_score"].to_numpy(dtype=np.float64)
    if compiled:
        X = row_major_matrix(features, meta["features"])
        return np.mean([model.predict(X, n_jobs=PREDICT_THREADS) for model in compiled], axis=0)
    return np.mean(model_scores(boosters, meta, features), axis=0)


def row_major_matrix(frame: pd.DataFrame, columns: list[str], block_rows: int = 8192) -> np.ndarray:
    """frame[columns] as one C-ordered float64 matrix, the layout lleaves reads. DataFrame.to_numpy builds it
    column-major and lleaves then copies it into row order; filling it here a block of rows at a time (a block
    stays in cache while every column is written into it) writes the matrix once."""
    sources = [frame[column].to_numpy() for column in columns]
    matrix = np.empty((len(frame), len(columns)), dtype=np.float64)
    for start in range(0, len(frame), block_rows):
        block = matrix[start:start + block_rows]
        for j, source in enumerate(sources):
            block[:, j] = source[start:start + block_rows]
    return matrix


# LightGBM's own predictor walks the trees at about 1 s per million rows for 80 trees on this machine's two
# cores; the same trees compiled to native code by lleaves score about four times faster, and compiling costs
# about 2 s a model. That pays on millions of rows: the final fold at full size (40M rows), not the sample.
COMPILE_FROM_ROWS = 5_000_000
PREDICT_THREADS = 2


def compile_models(boosters: list | None, meta: dict, n_rows: int) -> list | None:
    """The models cut at their best iterations and compiled (lleaves), when there are at least
    COMPILE_FROM_ROWS rows to score; None otherwise (score_candidates then uses LightGBM). Scores agree with
    LightGBM's to about 1e-15: the trees are the same, only the order of the sum differs."""
    if meta["kind"] != "lightgbm" or not boosters or n_rows < COMPILE_FROM_ROWS:
        return None
    import tempfile

    import lleaves

    compiled = []
    with tempfile.TemporaryDirectory() as scratch:
        for m, (booster, best) in enumerate(zip(boosters, meta["best_iterations"])):
            path = Path(scratch) / f"model_{m}.txt"
            path.write_text(booster.model_to_string(num_iteration=best), encoding="utf-8")
            model = lleaves.Model(model_file=str(path))
            model.compile(raw_score=True)
            compiled.append(model)
    log.info("ranker: %d model(s) compiled for %d rows", len(compiled), n_rows)
    return compiled


def load_ranker(directory: str | Path) -> tuple[list | None, dict]:
    """Read a ranker written by this stage: (list of Boosters or None, meta)."""
    import json

    import lightgbm as lgb

    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta["kind"] != "lightgbm":
        return None, meta
    return [lgb.Booster(model_file=str(directory / f"model_{m}.txt")) for m in range(meta["n_models"])], meta


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(TRAIN_FOLDS))
    parser.add_argument("--out", default="models/ranker")
    args = parser.parse_args(argv)
    params = dict(section_params(load_params(), "ranker"))
    below_groups = params.pop("two_windows_below_groups")
    newcomers_below_groups = params.pop("newcomers_below_groups")
    latest = pd.read_parquet(f"data/features/{TRAIN_FOLDS[args.name][0]}.parquet")
    latest_groups = positive_groups(latest)
    folds = learning_folds(args.name, latest_groups, below_groups)
    frames = {folds[0]: latest, **{fold: pd.read_parquet(f"data/features/{fold}.parquet") for fold in folds[1:]}}
    for fold in folds[1:]:
        if not len(frames[fold]):  # tiny data, or a stage run by hand against early-gate's answer
            log.warning("ranker %s: the %s fold joins but has no rows (data/features/%s.parquet)", args.name, fold,
                        fold)
    newcomers = read_newcomers(newcomer_folds(folds, latest_groups, newcomers_below_groups))
    features = training_rows(frames, newcomers)
    log.info("ranker %s: learns on %s (%s rows, and %s rows of simulated newcomers; %d groups with a positive in "
             "%s, two_windows_below_groups %d, newcomers_below_groups %d)", args.name, " + ".join(folds),
             " + ".join(str(len(frame)) for frame in frames.values()),
             " + ".join(str(len(frame)) for frame in newcomers.values()) or "no", latest_groups, folds[0],
             below_groups, newcomers_below_groups)
    boosters, meta = fit_ranker(features, **params)
    meta["label_windows"] = len(folds)
    meta["newcomer_rows"] = int(sum(len(frame) for frame in newcomers.values()))
    out = Path(args.out) / args.name
    if out.exists():  # no model files of an earlier run with more models
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if boosters is None:  # a file all the same, so that the directory is never empty for DVC
        write_text("fallback: order by als_score\n", out / "model_0.txt")
    for m, booster in enumerate(boosters or []):
        write_text(booster.model_to_string(), out / f"model_{m}.txt")
    write_json(meta, out / "meta.json")
    summary = {k: v for k, v in meta.items() if k not in ("features", "importance_gain", "best_iterations")}
    # dvc metrics show prints numbers, not lists: the mean best iteration (of one model: its own).
    summary["best_iteration"] = float(np.mean(meta["best_iterations"])) if meta["best_iterations"] else 0.0
    write_json(summary, f"metrics/ranker_{args.name}.json")
    gain = meta.get("importance_gain", {})
    table = pd.DataFrame({"feature": list(gain), "gain": list(gain.values())}).sort_values("gain", ascending=False)
    write_text(table.to_csv(index=False), f"metrics/plots/importance_{args.name}.csv")


if __name__ == "__main__":
    run_stage(main)
