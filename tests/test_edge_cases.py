"""Edge cases of real use, through `dvc repro` on crafted data: wide ids, users who have seen most of the
catalog, users nobody has seen, a catalog too small for 10 recommendations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.project import copy_project, set_param
from stages.candidates import popular_items, read_popular
from stages.cold_split import blended_rank
from stages.common import fold_cutoff
from stages.ranker_fit import load_ranker, score_candidates
from tests.conftest import run_dvc, smm_frame, zvuk_frame

BIG_ITEM = 2**40          # item ids beyond int32
BIG_USER = 3_000_000_000  # user ids beyond int32


def _crafted(n_zvuk_items: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    smm_items = BIG_ITEM + 3 * np.arange(15)
    smm_rows, zvuk_rows = [], []
    for u in range(40):
        user = BIG_USER + u
        for i in rng.choice(15, size=4, replace=False):
            smm_rows.append((user, int(smm_items[i]), int(rng.integers(0, 60)), 1.554808))
        for i in rng.choice(n_zvuk_items, size=min(3, n_zvuk_items - 1), replace=False):
            zvuk_rows.append((user, 500 + int(i), int(rng.integers(0, 60)), 2))
    heavy = BIG_USER + 100  # has seen 5 of the 15 smm items: exactly 10 remain
    smm_rows += [(heavy, int(smm_items[i]), 10 + i, 2.802427) for i in range(5)]
    train_smm, train_zvuk = smm_frame(smm_rows), zvuk_frame(zvuk_rows)
    only_in_test = smm_frame([(BIG_USER + 200, int(smm_items[0]), 30, 1.554808)])
    return {
        "train_smm": train_smm, "train_zvuk": train_zvuk,
        "test_smm": pd.concat([train_smm[train_smm["user_id"] == heavy], only_in_test]),
        "test_zvuk": train_zvuk[train_zvuk["user_id"] < BIG_USER + 5],
        # targets: a user unknown everywhere, and a zvuk user with no smm history
        "targets_smm": pd.DataFrame({"user_id": [9_999_999_999, BIG_USER + 1]}),
    }


def _project(tmp_path: Path, files: dict[str, pd.DataFrame]) -> Path:
    project = copy_project(tmp_path)
    raw = project / "data" / "raw"
    raw.mkdir(parents=True)
    for name, frame in files.items():
        frame.to_parquet(raw / f"{name}.parquet", index=False)
    set_param(project, "data.raw_dir", "data/raw")
    set_param(project, "sample.scale", 0.002)
    return project


def test_wide_ids_heavy_users_and_unknown_targets(tmp_path: Path):
    files = _crafted(n_zvuk_items=20)
    project = _project(tmp_path, files)
    run_dvc(project, "repro")
    sub = pd.read_parquet(project / "data" / "submission" / "submission_smm.parquet").set_index("user_id")
    assert sub.index.dtype == np.int64
    expected_users = set(files["test_smm"]["user_id"]) | set(files["targets_smm"]["user_id"])
    assert set(sub.index) == expected_users
    heavy_seen = set(files["train_smm"].loc[files["train_smm"]["user_id"] == BIG_USER + 100, "item_id"])
    all_items = set(BIG_ITEM + 3 * np.arange(15))
    assert set(sub.loc[BIG_USER + 100, "item_id"]) == all_items - heavy_seen  # the 10 unseen, all of them
    for user, items in sub["item_id"].items():
        assert len(set(items)) == 10 and set(items) <= all_items
    assert min(min(items) for items in sub["item_id"]) >= BIG_ITEM  # ids kept exactly, no int32 overflow
    # Users with no history anywhere are cold and get the popular candidates in the order that blends the
    # ranker's with popularity's (cold.order: blend, the default), filled from the popular list.
    recs = pd.read_parquet(project / "data" / "recs" / "final.parquet")
    users = pd.read_parquet(project / "data" / "merged" / "users.parquet").set_index("user_id")["user_idx"]
    unknown = recs[(recs["user_idx"] == users[9_999_999_999]) & (recs["domain"] == "smm")]
    assert set(unknown["segment"]) == {"cold"}
    assert set(unknown["model"].astype(str)) == {"final"}  # the final fold writes the product alone
    interactions = pd.read_parquet(project / "data" / "merged" / "interactions.parquet")
    cutoff = fold_cutoff(json.loads((project / "data" / "prepared" / "smm" / "windows.json").read_text()), "final")
    n_items = int((pd.read_parquet(project / "data" / "merged" / "items.parquet")["domain"] == "smm").sum())
    days = yaml.safe_load((project / "params.yaml").read_text())["candidates"]["popular_days"]
    popular = popular_items(interactions[interactions["domain"] == "smm"], cutoff=cutoff, days=days, n_items=n_items)
    features = pd.read_parquet(project / "data" / "features" / "final.parquet")
    mine = features[(features["user_idx"] == users[9_999_999_999]) & (features["domain"] == "smm")
                    & features["pop_rank"].notna()]
    assert set(mine["item_idx"]) <= set(popular[:len(mine)])  # their candidates are the top-popular items
    booster, meta = load_ranker(project / "models" / "ranker" / "final")
    scores = score_candidates(booster, meta, mine)
    blended = mine.assign(order=blended_rank(mine["user_idx"].to_numpy(), scores, mine["pop_rank"].to_numpy()))
    expected = list(dict.fromkeys([*blended.sort_values("order", kind="stable")["item_idx"], *popular]))[:10]
    assert unknown.sort_values("rank")["item_idx"].tolist() == expected
    # ... and cold-split read that order from the candidates stage's table, not from a copy of its own.
    assert read_popular(project / "data" / "candidates", "final", "smm").tolist() == popular.tolist()


def test_catalog_smaller_than_ten_is_a_clear_error(tmp_path: Path):
    project = _project(tmp_path, _crafted(n_zvuk_items=8))
    result = run_dvc(project, "repro", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot recommend 10 distinct unseen items" in output and "catalog of 8" in output
    assert "Traceback" not in output
    assert not (project / "data" / "submission" / "submission_zvuk.parquet").exists()
