"""Stage `merge-domains`: one user index over both domains, one item index per domain, and the merged matrices.

In:  `data/prepared/<domain>/{events,targets}.parquet` for both domains.
Out: `data/merged/users.parquet` (user_id -> user_idx), `data/merged/items.parquet` (domain, item_id -> item_idx
     within the domain, col = column in the merged matrix), `data/merged/interactions.parquet` (every event with
     internal ids and its confidence weight), and `data/merged/matrix_<fold>.npz` (users x all items, CSR) for
     each fold, holding only what that fold may see:
         early: history window;  train: + early window;  holdout: + label window;  final: everything.

The maps are explicit tables built once: ids are never shifted or offset arithmetically (the organisers'
baseline shifted zvuk ids by the smm item count, and the highest smm ids collided with zvuk ids).

Confidence weight of an event (what ALS treats as the strength of an observed preference):
    binary: 1;  log: log2(1 + rating / median);  linear: rating / median
where median is the domain's median rating (smm: 1.554808, a plain view; zvuk: one play), so a typical event
weighs 1 in either domain; then times `merge.<domain>_weight`. ALS multiplies it by `als.alpha`.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.common import (COL, DOMAIN, DOMAINS, FOLDS, ITEM, ITEM_IDX, RATING, TS, USER, USER_IDX, WINDOW,
                           PipelineError, check_section, constant_category, load_params, run_stage, section_params,
                           write_npz_sparse, write_parquet)

log = logging.getLogger("pipeline.merge")

WEIGHTINGS = ("binary", "log", "linear")
FOLD_WINDOWS = {"early": ("history",), "train": ("history", "early"), "holdout": ("history", "early", "label"),
                "final": ("history", "early", "label", "holdout")}


def build_maps(events: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The user map over both domains (events and target users) and the per-domain item maps.

    Returns:
        users: user_id, user_idx (0..n-1, by ascending user_id);
        items: domain, item_id, item_idx (0..n_domain-1), col (0..n_all-1; smm first, then zvuk).
    """
    all_users = np.concatenate([events[d][USER].to_numpy() for d in DOMAINS]
                               + [targets[d][USER].to_numpy() for d in DOMAINS])
    user_ids = np.unique(all_users)
    users = pd.DataFrame({USER: user_ids, USER_IDX: np.arange(len(user_ids), dtype=np.int32)})
    parts, offset = [], 0
    for domain in DOMAINS:
        item_ids = np.unique(events[domain][ITEM].to_numpy())
        parts.append(pd.DataFrame({
            DOMAIN: domain, ITEM: item_ids, ITEM_IDX: np.arange(len(item_ids), dtype=np.int32),
            COL: np.arange(offset, offset + len(item_ids), dtype=np.int32)}))
        offset += len(item_ids)
    items = pd.concat(parts, ignore_index=True)
    items[DOMAIN] = pd.Categorical(items[DOMAIN], categories=list(DOMAINS))
    return users, items


def check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise PipelineError(f"params.yaml: merge.weighting={weighting!r} is out of range: must be one of "
                            f"{', '.join(WEIGHTINGS)}")


def confidence(rating: np.ndarray, *, weighting: str, median: float) -> np.ndarray:
    """Confidence weight of events from their ratings (see the module docstring)."""
    check_weighting(weighting)
    if weighting == "binary":
        return np.ones_like(rating, dtype=np.float32)
    if weighting == "log":
        return np.log2(1.0 + rating / median).astype(np.float32)
    return (rating / median).astype(np.float32)


def merge_domains(events: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame], *, weighting: str,
                  smm_weight: float, zvuk_weight: float
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, sp.csr_matrix]]:
    """Map both domains into one index space and build one matrix per fold.

    Returns:
        (users, items, interactions with user_idx/domain/item_idx/col/weight, {fold: CSR users x items})
    """
    check_weighting(weighting)
    check_section("merge", smm_weight=smm_weight, zvuk_weight=zvuk_weight)
    domain_weight = {"smm": smm_weight, "zvuk": zvuk_weight}
    users, items = build_maps(events, targets)
    user_index = pd.Series(users[USER_IDX].to_numpy(), index=users[USER].to_numpy())
    columns: dict[str, list] = {}
    for domain in DOMAINS:
        frame = events[domain]
        item_map = items[items[DOMAIN] == domain]
        item_index = pd.Series(item_map[ITEM_IDX].to_numpy(), index=item_map[ITEM].to_numpy())
        item_idx = item_index.reindex(frame[ITEM].to_numpy()).to_numpy()
        rating = frame[RATING].to_numpy()
        median = float(np.median(rating)) if len(rating) else 1.0
        part = {
            USER_IDX: user_index.reindex(frame[USER].to_numpy()).to_numpy().astype(np.int32),
            DOMAIN: constant_category(domain, len(frame), DOMAINS),
            ITEM_IDX: item_idx.astype(np.int32),
            COL: (item_map[COL].to_numpy()[item_idx] if len(item_map) else item_idx).astype(np.int32),
            TS: frame[TS].to_numpy(),
            RATING: rating,
            "weight": confidence(rating, weighting=weighting, median=median) * np.float32(domain_weight[domain]),
            WINDOW: frame[WINDOW].array,  # stays categorical: an object array of 60M strings would not fit
        }
        for name, values in part.items():
            columns.setdefault(name, []).append(values)
        del part, item_idx, rating
    # One concatenation per column, each freed as it goes; copy=False keeps pandas from consolidating
    # them into blocks (another full copy at 60M rows).
    interactions = pd.DataFrame({name: (pd.concat([pd.Series(v) for v in columns.pop(name)], ignore_index=True)
                                        if name in (DOMAIN, WINDOW) else np.concatenate(columns.pop(name)))
                                 for name in list(columns)}, copy=False)
    shape = (len(users), len(items))
    window = interactions[WINDOW].cat.codes.to_numpy()
    window_code = {name: code for code, name in enumerate(interactions[WINDOW].cat.categories)}
    user, col, weight = (interactions[c].to_numpy() for c in (USER_IDX, COL, "weight"))
    matrices = {}
    for fold in FOLDS:
        keep = np.isin(window, [window_code[name] for name in FOLD_WINDOWS[fold] if name in window_code])
        matrices[fold] = sp.csr_matrix((weight[keep], (user[keep], col[keep])), shape=shape, dtype=np.float32)
        del keep
        log.info("merge %s: %d users x %d items, %d non-zeros, %d users with history", fold, shape[0], shape[1],
                 matrices[fold].nnz, int((np.diff(matrices[fold].indptr) > 0).sum()))
    return users, items, interactions, matrices


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--out", default="data/merged")
    args = parser.parse_args(argv)
    params = section_params(load_params(), "merge")
    check_weighting(params["weighting"])  # before reading any data
    events = {d: pd.read_parquet(Path(args.prepared) / d / "events.parquet") for d in DOMAINS}
    targets = {d: pd.read_parquet(Path(args.prepared) / d / "targets.parquet") for d in DOMAINS}
    users, items, interactions, matrices = merge_domains(events, targets, **params)
    del events  # the merged table holds everything now; the writes below need the room
    out = Path(args.out)
    write_parquet(users, out / "users.parquet")
    write_parquet(items, out / "items.parquet")
    write_parquet(interactions, out / "interactions.parquet")
    for fold, matrix in matrices.items():
        write_npz_sparse(matrix, out / f"matrix_{fold}.npz")


if __name__ == "__main__":
    run_stage(main)
