"""Stage `evaluate`: how the holdout fold's lists did on the holdout window, for popular, ALS-only and final.

In:  `data/recs/holdout.parquet`, `data/candidates/holdout.parquet`, `data/candidates/{train,holdout}_users.parquet`,
     `data/features/train.parquet`, `data/merged/{interactions,items}.parquet`,
     `data/merged/matrix_{train,holdout}.npz`.
Out: `metrics/holdout/{popular,als,final}.json` (per model: score = geometric mean of the domains' NDCG@10; per
     domain and segment: NDCG@10, HitRate@10, Recall@10; per domain: catalog coverage),
     `metrics/holdout/users.json` (truth users per domain and segment), `metrics/candidates.json` (candidate
     recall per source, in total and in total per segment), `metrics/validation.json` (popular and ALS-only on
     the train fold's label window, and the candidate recall there in total and per segment: the numbers to
     choose parameters by; the segments need `cold.min_interactions`), and CSV tables under `metrics/plots/`
     for `dvc plots`.

Truth of a user in a domain: the items they had in the holdout window and not before it (seen items are
never recommended, so a repeat could not be hit). Users whose truth is empty are not scored; nor are users
left out of the fold's draw (`candidates.max_labelled_users`), so that every scored user had candidates made.
NDCG@10 is the one of DATA.md: binary relevance, DCG over the first 10 distinct items, IDCG over
min(|truth|, 10) positions, averaged over truth users, a user without a list scoring 0.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stages.candidates import read_fold_users
from stages.cold_split import MODELS, SEGMENTS, segments_at_cutoff, segments_of
from stages.common import (COL, DOMAIN, DOMAINS, ITEM_IDX, K, USER_IDX, WINDOW, domain_matrix, fold_label_window,
                           load_params, run_stage, section_params, seen_pairs, write_json, write_text)

log = logging.getLogger("pipeline.evaluate")

RECALL_DEPTHS = (10, 20, 50, 100, 200, 500)
SOURCES = {"als": "als_rank", "recent": "recent_rank", "popular": "pop_rank"}  # candidate source -> its rank column


def per_user_metrics(recs: pd.DataFrame, truth: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """NDCG@k, HitRate@k and Recall@k of every truth user.

    Args:
        recs: user_idx, rank (1 = best), item_idx.
        truth: user_idx, item_idx (relevant items; duplicates ignored).

    Returns:
        index user_idx (every truth user), columns ndcg, hit, recall.
    """
    truth = truth[[USER_IDX, ITEM_IDX]].drop_duplicates()
    recs = recs.sort_values([USER_IDX, "rank"], kind="stable").drop_duplicates([USER_IDX, ITEM_IDX])
    recs = recs.assign(position=recs.groupby(USER_IDX).cumcount())
    recs = recs[recs["position"] < k]
    hits = recs.merge(truth, on=[USER_IDX, ITEM_IDX], how="inner")
    dcg = (1.0 / np.log2(hits["position"].to_numpy() + 2.0))
    dcg = pd.Series(dcg, index=hits[USER_IDX].to_numpy()).groupby(level=0).sum()
    n_hits = hits.groupby(USER_IDX).size()
    n_truth = truth.groupby(USER_IDX).size()
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = pd.Series(discounts[np.minimum(n_truth.to_numpy(), k) - 1], index=n_truth.index)
    out = pd.DataFrame(index=n_truth.index)
    out["ndcg"] = dcg.reindex(out.index, fill_value=0.0) / idcg
    out["hit"] = (n_hits.reindex(out.index, fill_value=0) > 0).astype(float)
    out["recall"] = n_hits.reindex(out.index, fill_value=0) / np.minimum(n_truth, k)
    return out


def scored_truth(interactions: pd.DataFrame, seen: sp.csr_matrix, items: pd.DataFrame, domain: str, window: str,
                 users: np.ndarray) -> pd.DataFrame:
    """user_idx, item_idx of the domain's events in `window` by `users` (the users a fold served), on items the
    user had not seen before the window (`seen`: the fold's matrix)."""
    events = interactions[(interactions[DOMAIN] == domain).to_numpy() & (interactions[WINDOW] == window).to_numpy()
                          & np.isin(interactions[USER_IDX].to_numpy(), users)]
    truth = events[[USER_IDX, ITEM_IDX]].drop_duplicates()
    was_seen = seen_pairs(domain_matrix(seen, items, domain), truth[USER_IDX].to_numpy(), truth[ITEM_IDX].to_numpy())
    return truth[~was_seen]


def fold_truth(interactions: pd.DataFrame, seen: sp.csr_matrix, items: pd.DataFrame, fold: str,
               candidates: str | Path = "data/candidates") -> dict[str, pd.DataFrame]:
    """scored_truth of each domain for a fold: what its served users took in its label window, on items new to
    them (`candidates`: the folder of the candidate stage, which lists the users each fold served)."""
    return {d: scored_truth(interactions, seen, items, d, fold_label_window(fold), read_fold_users(candidates, fold, d))
            for d in DOMAINS}


EVENT_BUCKETS = {"1-2": (1, 2), "3-4": (3, 4), "5+": (5, np.inf)}  # events before the cut-off, both domains


def validation_metrics(features: pd.DataFrame, truth: dict[str, pd.DataFrame], user_events: np.ndarray,
                       segments: dict[str, pd.Series] | None = None) -> dict:
    """NDCG@10 of popular and ALS-only on the train fold's label window, from its candidate table.

    This is the window to choose parameters on: nothing of the holdout window is in it. ALS and popular lists
    are the candidates in their source's order (no popular fill), so users without history score 0 for ALS.
    `by_events` splits the users by their number of events before the cut-off (`user_events`, indexed by
    user_idx): where ALS beats popular on users with few events, they are better left to the ranker than made
    cold (`cold.min_interactions`). `segments` (per domain, segment by user_idx at the fold's cut-off) adds
    the candidate recall per segment: candidate settings for cross users are chosen on it, not on the holdout.
    """
    out: dict = {"by_events": {bucket: {"users": {}, "popular": {}, "als": {}} for bucket in EVENT_BUCKETS}}
    for domain in DOMAINS:  # every truth user is scored by both models: count them once
        events = user_events[truth[domain][USER_IDX].unique()]
        for bucket, (low, high) in EVENT_BUCKETS.items():
            out["by_events"][bucket]["users"][domain] = int(((events >= low) & (events <= high)).sum())
    for model, column in (("popular", "pop_rank"), ("als", "als_rank")):
        out[model] = {}
        for domain in DOMAINS:
            rows = features[(features[DOMAIN] == domain) & features[column].notna()]
            lists = rows.rename(columns={column: "rank"})[[USER_IDX, "rank", ITEM_IDX]]
            ndcg = per_user_metrics(lists, truth[domain])["ndcg"]
            out[model][domain] = round(float(ndcg.mean()), 5) if len(ndcg) else 0.0
            events = user_events[ndcg.index.to_numpy()]
            for bucket, (low, high) in EVENT_BUCKETS.items():
                part = ndcg[(events >= low) & (events <= high)]
                out["by_events"][bucket][model][domain] = round(float(part.mean()), 5) if len(part) else 0.0
        out[model]["score"] = round(float(np.sqrt(out[model]["smm"] * out[model]["zvuk"])), 5)
    out["candidate_recall"] = {}
    for domain in DOMAINS:
        hit = truth[domain].merge(features[features[DOMAIN] == domain], on=[USER_IDX, ITEM_IDX], how="left")
        found = hit[list(SOURCES.values())].notna().any(axis=1)
        out["candidate_recall"][domain] = round(float(found.mean()), 5) if len(hit) else 0.0
        if segments is not None:
            out.setdefault("candidate_recall_by_segment", {})[domain] = segment_recall(
                found.to_numpy(), hit[USER_IDX].to_numpy(), segments[domain])
    return out


def segment_recall(found: np.ndarray, truth_users: np.ndarray, segment_of: pd.Series) -> dict:
    """{"recall_total_<segment>": share of the segment's truth items among the candidates} for every segment.

    Args:
        found: per truth item, whether it was a candidate; truth_users: each truth item's user_idx.
        segment_of: segment by user_idx; users missing from it are cold.
    """
    of_item = segments_of(segment_of, truth_users)
    return {f"recall_total_{name}": round(float(found[of_item == name].mean()), 5) if (of_item == name).any()
            else 0.0 for name in SEGMENTS}


def fold_segments(matrix: sp.csr_matrix, items: pd.DataFrame, fold: str, *, min_interactions: int,
                  candidates: str | Path = "data/candidates") -> dict[str, pd.Series]:
    """Per domain, the segment by user_idx of the users the fold served, named at its cut-off as cold-split
    names them (`matrix`: the fold's events before the cut-off)."""
    served = {domain: read_fold_users(candidates, fold, domain) for domain in DOMAINS}
    return segments_at_cutoff(matrix, items, min_interactions=min_interactions, users=served)


def evaluate(recs: pd.DataFrame, candidates: pd.DataFrame, truth: dict[str, pd.DataFrame], catalog_size: dict[str, int],
             segments: dict[str, pd.Series]) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """Quality of every model, truth users per segment, candidate recall, and the plot tables; each split by
    segment with `segments` (see fold_segments).

    Quality keys: score (geometric mean of the domains' NDCG@10), then per domain: coverage (share of the
    catalog recommended to someone) and per segment (all, warm, cross, cold) ndcg, hit and recall, all @10.
    """
    quality: dict = {}
    users: dict = {}
    plot_rows = []
    for model in MODELS:
        quality[model] = {}
        for domain in DOMAINS:
            lists = recs[(recs["model"] == model) & (recs[DOMAIN] == domain)]
            per_user = per_user_metrics(lists, truth[domain])
            per_user["segment"] = segments_of(segments[domain], per_user.index.to_numpy())
            block: dict = {"coverage": round(lists[ITEM_IDX].nunique() / max(catalog_size[domain], 1), 4)}
            for name in ("all", *SEGMENTS):
                part = per_user if name == "all" else per_user[per_user["segment"] == name]
                block[name] = {m: round(float(part[m].mean()), 5) if len(part) else 0.0
                               for m in ("ndcg", "hit", "recall")}
                users.setdefault(domain, {})[name] = int(len(part))
                plot_rows.append({"line": f"{domain} {name} {model}", f"ndcg@{K}": block[name]["ndcg"]})
            quality[model][domain] = block
        quality[model]["score"] = round(float(np.sqrt(quality[model]["smm"]["all"]["ndcg"]
                                                      * quality[model]["zvuk"]["all"]["ndcg"])), 5)
    cand_metrics: dict = {}
    recall_rows = []
    for domain in DOMAINS:
        cands = candidates[candidates[DOMAIN] == domain]
        t = truth[domain][[USER_IDX, ITEM_IDX]]
        n_truth = len(t)
        hit = t.merge(cands, on=[USER_IDX, ITEM_IDX], how="left")
        share = (lambda mask: round(float(mask.sum()) / n_truth, 5) if n_truth else 0.0)
        found = hit[list(SOURCES.values())].notna().any(axis=1).to_numpy()
        cand_metrics[domain] = {
            "truth_items": int(n_truth),
            "candidates_per_user": round(len(cands) / max(cands[USER_IDX].nunique(), 1), 2),
            **{f"recall_{source}": share(hit[column].notna()) for source, column in SOURCES.items()},
            "recall_total": share(found),
            # per segment: whether cross-domain users lose their items in stage one or in the ranking
            **segment_recall(found, hit[USER_IDX].to_numpy(), segments[domain]),
        }
        deepest = int(np.nanmax([cands[c].max() for c in SOURCES.values()] + [K]))
        for depth in sorted({d for d in RECALL_DEPTHS if d < deepest} | {deepest}):
            for source, column in SOURCES.items():
                recall_rows.append({"n": depth, "series": f"{domain}_{source}",
                                    "recall": share(hit[column].le(depth))})
    recall_table = pd.DataFrame(recall_rows).pivot(index="n", columns="series", values="recall").reset_index()
    return quality, users, cand_metrics, pd.DataFrame(plot_rows), recall_table


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default="data/candidates")
    parser.add_argument("--out", default="metrics")
    args = parser.parse_args(argv)
    recs = pd.read_parquet("data/recs/holdout.parquet")
    candidates = pd.read_parquet(Path(args.candidates) / "holdout.parquet")
    interactions = pd.read_parquet("data/merged/interactions.parquet", columns=[USER_IDX, DOMAIN, ITEM_IDX, WINDOW])
    items = pd.read_parquet("data/merged/items.parquet")
    seen = {fold: sp.load_npz(f"data/merged/matrix_{fold}.npz").tocsr() for fold in ("train", "holdout")}
    truth = {fold: fold_truth(interactions, seen[fold], items, fold, args.candidates) for fold in seen}
    del interactions
    min_interactions = section_params(load_params(), "cold")["min_interactions"]
    segments = {fold: fold_segments(seen[fold], items, fold, min_interactions=min_interactions,
                                    candidates=args.candidates) for fold in seen}
    validation = validation_metrics(pd.read_parquet("data/features/train.parquet",
                                                    columns=[USER_IDX, DOMAIN, ITEM_IDX, *SOURCES.values()]),
                                    truth["train"], np.diff(seen["train"].indptr), segments["train"])
    alive = np.bincount(seen["holdout"].indices, minlength=seen["holdout"].shape[1]) > 0
    catalog = {d: int(alive[items.loc[items[DOMAIN] == d, COL].to_numpy()].sum()) for d in DOMAINS}
    quality, users, cand_metrics, ndcg_table, recall_table = evaluate(recs, candidates, truth["holdout"], catalog,
                                                                      segments["holdout"])
    out = Path(args.out)
    for model in MODELS:  # one file per model: `dvc metrics show` then lines the models up as rows
        write_json(quality[model], out / "holdout" / f"{model}.json")
    write_json(users, out / "holdout" / "users.json")
    write_json(cand_metrics, out / "candidates.json")
    write_json(validation, out / "validation.json")
    out_plots = out / "plots"
    out_plots.mkdir(parents=True, exist_ok=True)
    write_text(ndcg_table.to_csv(index=False), out_plots / "ndcg.csv")
    write_text(recall_table.to_csv(index=False), out_plots / "candidate_recall.csv")
    for model in MODELS:
        log.info("evaluate %s: score %.4f (smm %.4f, zvuk %.4f)", model, quality[model]["score"],
                 quality[model]["smm"]["all"]["ndcg"], quality[model]["zvuk"]["all"]["ndcg"])


if __name__ == "__main__":
    run_stage(main)
