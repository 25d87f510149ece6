"""The whole pipeline through `dvc repro` in temporary copies: the tiny synthetic sample and the real samples."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.project import copy_project, set_param
from stages.common import DOMAINS
from tests.conftest import SAMPLES, run_dvc, run_module, stages_run


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_submission_contract(project: Path, raw_dir: Path) -> None:
    """The contract of issue 2, checked from the raw files alone (not from the pipeline's own tables)."""
    for domain in DOMAINS:
        sub = pd.read_parquet(project / "data" / "submission" / f"submission_{domain}.parquet")
        train = pd.read_parquet(raw_dir / f"train_{domain}.parquet")
        test = pd.read_parquet(raw_dir / f"test_{domain}.parquet")
        targets_path = raw_dir / f"targets_{domain}.parquet"
        expected = set(test["user_id"])
        if targets_path.exists():
            expected |= set(pd.read_parquet(targets_path)["user_id"])
        assert list(sub.columns) == ["user_id", "item_id"] and sub["user_id"].dtype == np.int64
        assert sub["user_id"].is_unique and set(sub["user_id"]) == expected
        catalog = set(train["item_id"]) | set(test["item_id"])
        history = pd.concat([train, test]).groupby("user_id")["item_id"].agg(set)
        for user, items in zip(sub["user_id"], sub["item_id"]):
            items = list(items)
            assert len(items) == 10 and len(set(items)) == 10
            assert set(items) <= catalog
            assert not set(items) & history.get(user, set())


def test_tiny_sample_runs_end_to_end(tiny_pipeline: Path):
    assert_submission_contract(tiny_pipeline, tiny_pipeline / "data" / "sample")
    for model in ("popular", "als", "final"):
        metrics = json.loads((tiny_pipeline / "metrics" / "holdout" / f"{model}.json").read_text())
        assert 0 < metrics["score"] <= 1
        assert set(metrics["smm"]) == {"all", "warm", "cross", "cold", "coverage"}
    assert "up to date" in run_dvc(tiny_pipeline, "status").stdout.lower()


def test_als_param_change_reruns_from_als_fit_only(tiny_pipeline: Path, tmp_path: Path):
    project = tmp_path / "als"
    shutil.copytree(tiny_pipeline, project)
    before = {p: _digest(project / p) for p in ("data/sample", "data/prepared", "data/merged")}
    set_param(project, "als.factors", 16)
    changed = set(json.loads(run_dvc(project, "status", "--json").stdout))
    assert changed == {"als-fit@early", "als-fit@train", "als-fit@holdout", "als-fit@final"}
    ran = stages_run(run_dvc(project, "repro"))
    assert {"als-fit@train", "candidates@holdout", "evaluate"} <= ran
    assert not ran & {"sample", "prepare@smm", "prepare@zvuk", "merge-domains"}
    assert before == {p: _digest(project / p) for p in before}


def test_ranker_param_change_reruns_from_ranker_fit_only(tiny_pipeline: Path, tmp_path: Path):
    project = tmp_path / "ranker"
    shutil.copytree(tiny_pipeline, project)
    set_param(project, "ranker.num_leaves", 7)
    changed = set(json.loads(run_dvc(project, "status", "--json").stdout))
    assert changed == {"ranker-fit@holdout", "ranker-fit@final"}
    ran = stages_run(run_dvc(project, "repro"))
    assert ran and ran <= {"ranker-fit@holdout", "ranker-fit@final", "cold-split@holdout", "cold-split@final",
                           "submit", "evaluate"}


def test_real_samples_give_valid_submissions(tmp_path: Path):
    project = copy_project(tmp_path / "real")
    raw = project / "data" / "raw"
    raw.mkdir(parents=True)
    for name in ("train_smm", "test_smm", "train_zvuk", "test_zvuk"):
        shutil.copy(SAMPLES / f"{name}_small.parquet", raw / f"{name}.parquet")
    set_param(project, "data.raw_dir", "data/raw")
    set_param(project, "sample.scale", 0.002)  # the sample stage still runs; keep it cheap
    run_dvc(project, "repro")
    assert_submission_contract(project, raw)


def test_unused_early_fold_is_skipped_and_the_holdout_ranker_learns_on_one_window(tiny_pipeline: Path,
                                                                                  tmp_path: Path):
    project = tmp_path / "gate"
    shutil.copytree(tiny_pipeline, project)
    assert json.loads((project / "data" / "gate" / "early.json").read_text()) == {"needed": True}
    set_param(project, "ranker.two_windows_below_groups", 1)  # the tiny train fold has more groups than that
    set_param(project, "ranker.newcomers_below_groups", 1)  # ... so the simulated newcomers stay out too
    changed = set(json.loads(run_dvc(project, "status", "--json").stdout))
    assert changed == {"early-gate", "ranker-fit@holdout", "ranker-fit@final"}
    ran = stages_run(run_dvc(project, "repro"))
    assert {"early-gate", "als-fit@early", "candidates@early", "features@early", "ranker-fit@holdout"} <= ran
    assert not ran & {"als-fit@train", "candidates@train", "features@train", "features@holdout"}
    assert json.loads((project / "data" / "gate" / "early.json").read_text()) == {"needed": False}
    als_early = project / "models" / "als" / "early"
    assert sorted(p.name for p in als_early.iterdir()) == ["unused.json"]
    computed = pq.read_schema(project / "data" / "features" / "train.parquet")
    early = pq.read_table(project / "data" / "features" / "early.parquet")
    assert early.num_rows == 0 and early.schema.equals(computed)
    meta = json.loads((project / "models" / "ranker" / "holdout" / "meta.json").read_text())
    assert meta["label_windows"] == 1 and meta["newcomer_rows"] == 0
    assert_submission_contract(project, project / "data" / "sample")
    assert "up to date" in run_dvc(project, "status").stdout.lower()
    # The comparison that needs the early fold says why it cannot run, rather than validating on no rows.
    forced = run_module(project, "benchmarks.ranker_validation", "--two-windows")
    assert forced.returncode != 0 and "the early fold was not computed" in forced.stderr
    # Validation fits as ranker-fit does: one window, no newcomers.
    validated = run_module(project, "benchmarks.ranker_validation", "--models", "1")
    assert validated.returncode == 0 and "(one window, no newcomers," in validated.stdout
