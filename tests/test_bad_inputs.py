"""Bad input through the command line: one clear line naming file, column and problem, exit 1, no traceback,
and nothing left in the output folder that a later stage or dvc could take for a result."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAY, run_module, smm_frame, zvuk_frame

PARAMS = """data:
  raw_dir: raw
eval:
  horizon_days: 7
als: {factors: %s, regularization: 0.1, iterations: 5, alpha: 2.0, other_domain_weight: 0.0, seed: 1}
"""


def _good_files() -> dict[str, pd.DataFrame]:
    rows = [(1_000_000 + u, 100 + (u * 7 + d // 3) % 30, d, 1.554808) for u in range(20) for d in range(0, 60, 3)]
    smm = smm_frame(rows)
    zvuk = zvuk_frame([(u, i, d, 2) for u, i, d, _ in rows])
    return {"train_smm": smm, "test_smm": smm.iloc[:50], "train_zvuk": zvuk, "test_zvuk": zvuk.iloc[:50]}


def _run(tmp_path: Path, files: dict, *stage: str, factors: int = 8) -> subprocess.CompletedProcess:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for name, frame in files.items():
        if isinstance(frame, bytes):
            (raw / f"{name}.parquet").write_bytes(frame)
        else:
            frame.to_parquet(raw / f"{name}.parquet")
    (tmp_path / "params.yaml").write_text(PARAMS % factors)
    return run_module(tmp_path, *stage)


def _assert_clean_failure(result: subprocess.CompletedProcess, message: str, out_dir: Path) -> None:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out_dir.exists() or not any(p.is_file() for p in out_dir.rglob("*"))


def _with(name: str, change) -> dict:
    files = _good_files()
    files[name] = change(files[name])
    return files


def _drop(name: str) -> dict:
    files = _good_files()
    del files[name]
    return files


def _nulls(column: str):
    def change(frame):
        frame = frame.copy()
        frame[column] = frame[column].astype("float64" if column != "timestamp" else "Int64")
        frame.loc[frame.index[3], column] = None
        return frame
    return change


CASES = {
    "missing file": (_drop("test_smm"), "raw/test_smm.parquet: file not found"),
    "not parquet": ({**_good_files(), "train_smm": b"user_id,item_id\n1,2\n"},
                    "raw/train_smm.parquet: not a readable parquet file"),
    "missing column": (_with("train_smm", lambda f: f.drop(columns="rating")),
                       "train_smm.parquet: missing column rating"),
    "missing timestamp column": (_with("train_smm", lambda f: f.drop(columns="timestamp")),
                                 "raw/train_smm.parquet: missing column timestamp"),
    "strings in ids": (_with("train_smm", lambda f: f.assign(item_id=f["item_id"].astype(str))),
                       "train_smm.parquet: column item_id must be integer"),
    "null user": (_with("train_smm", _nulls("user_id")), "train_smm.parquet: column user_id has 1 null value(s)"),
    "null item": (_with("train_smm", _nulls("item_id")), "train_smm.parquet: column item_id has 1 null value(s)"),
    "null rating": (_with("train_smm", _nulls("rating")), "train_smm.parquet: column rating has 1 null value(s)"),
    "null timestamp": (_with("test_smm", _nulls("timestamp")), "test_smm.parquet: column timestamp has 1 null"),
    "zero rating": (_with("train_smm", lambda f: f.assign(rating=np.where(f.index == 5, 0.0, f["rating"]))),
                    "train_smm.parquet: column rating has 1 value(s) that are not positive and finite"),
    "negative rating": (_with("train_smm", lambda f: f.assign(rating=np.where(f.index == 5, -1.0, f["rating"]))),
                        "column rating has 1 value(s) that are not positive and finite"),
    "inf rating": (_with("train_smm", lambda f: f.assign(rating=np.where(f.index == 5, np.inf, f["rating"]))),
                   "column rating has 1 value(s) that are not positive and finite"),
    "nan rating": (_with("train_smm", lambda f: f.assign(rating=np.where(f.index == 5, np.nan, f["rating"]))),
                   "train_smm.parquet: column rating has 1 null value(s)"),
    "seconds not ns": (_with("train_smm", lambda f: f.assign(timestamp=f["timestamp"] // 10**9)),
                       "train_smm.parquet: column timestamp has 400 value(s) outside 2000..2100"),
    "a stray year": (_with("train_smm", lambda f: f.assign(timestamp=np.where(
        f.index == 7, f["timestamp"] + 400 * DAY, f["timestamp"]))),
        "train_smm.parquet: column timestamp has 1 value(s) far outside the data's range"),
    "empty train": (_with("train_smm", lambda f: f.iloc[:0]), "train_smm.parquet: the file has no rows"),
    "null in targets": ({**_good_files(), "targets_smm": pd.DataFrame({"user_id": [1.0, None]})},
                        "targets_smm.parquet: column user_id has null values"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_in_one_clear_line(tmp_path: Path, case: str):
    files, message = CASES[case]
    result = _run(tmp_path, files, "stages.prepare", "smm", "--out", "prepared")
    _assert_clean_failure(result, message, tmp_path / "prepared")


def test_good_input_passes_the_same_command(tmp_path: Path):
    """The control for the cases above: the unchanged files pass, so each failure is the change's doing."""
    result = _run(tmp_path, _good_files(), "stages.prepare", "smm", "--out", "prepared")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "prepared" / "smm" / "events.parquet").exists()


def test_accepted_variants_pass(tmp_path: Path):
    files = _good_files()
    smm = files["train_smm"]
    smm = smm.sample(frac=1.0, random_state=1)                    # timestamps out of order
    smm = smm[["rating", "timestamp", "item_id", "user_id"]]      # columns in another order
    smm = smm.assign(extra="x", user_id=smm["user_id"].astype("int32"))  # extra column, narrower ids
    smm = pd.concat([smm, smm.iloc[:3].assign(timestamp=smm["timestamp"].iloc[:3] + DAY)])  # 3 repeated pairs
    files["train_smm"] = smm
    result = _run(tmp_path, files, "stages.prepare", "smm", "--out", "prepared")
    assert result.returncode == 0, result.stderr
    assert "3 (user, item) pairs occur in more than one row; aggregated" in result.stderr
    events = pd.read_parquet(tmp_path / "prepared" / "smm" / "events.parquet")
    assert not events.duplicated(["user_id", "item_id"]).any()
    assert events["timestamp"].is_monotonic_increasing


def test_every_numeric_param_has_a_rule_that_names_it():
    from stages.common import PARAM_RULES, PipelineError, check_section

    for key, (low, _high, integer, _open) in PARAM_RULES.items():
        section, name = key.split(".")
        bad = (low - 1) if low is not None else None
        with pytest.raises(PipelineError, match=rf"params.yaml: {key}=.* is out of range"):
            check_section(section, **{name: bad})


def test_misspelt_or_missing_param_key_is_named():
    from stages.common import PipelineError, section_params

    als = dict(factors=8, regularization=0.1, iterations=5, alpha=2.0, other_domain_weight=0.0, seed=1)
    assert section_params({"als": als}, "als") == als
    with pytest.raises(PipelineError, match="unknown key als.factor "):
        section_params({"als": {**als, "factor": 8}}, "als")
    with pytest.raises(PipelineError, match="missing key als.seed "):
        section_params({"als": {k: v for k, v in als.items() if k != "seed"}}, "als")


@pytest.mark.parametrize("factors", [0, -3])
def test_out_of_range_param_is_rejected_before_any_input_is_read(tmp_path: Path, factors: int):
    # No matrix exists: an error about the param (not the missing file) shows it was checked first.
    result = _run(tmp_path, {}, "stages.als_fit", "train", "--merged", "nowhere", "--out", "models",
                  factors=factors)
    _assert_clean_failure(result, f"params.yaml: als.factors={factors} is out of range: must be an integer >= 1",
                          tmp_path / "models")


@pytest.mark.parametrize("fold, missing", [("early", "gate.json"), ("train", "nowhere/matrix_train.npz")])
def test_a_missing_input_of_a_stage_run_by_hand_is_named(tmp_path: Path, fold: str, missing: str):
    result = _run(tmp_path, {}, "stages.als_fit", fold, "--merged", "nowhere", "--out", "models",
                  "--gate", "gate.json")
    _assert_clean_failure(result, f"error: {missing}: file not found", tmp_path / "models")


def test_unknown_cold_order_is_rejected_before_any_input_is_read(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("cold: {min_interactions: 1, order: trend}\n")
    result = run_module(tmp_path, "stages.cold_split", "final", "--out", "recs")
    _assert_clean_failure(result,
                          "params.yaml: cold.order='trend' is out of range: must be one of popular, ranker, blend",
                          tmp_path / "recs")


def test_window_longer_than_the_data_is_rejected(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("x")  # replaced by _run
    files = _good_files()
    result = _run(tmp_path, files, "stages.prepare", "smm", "--out", "prepared")
    assert result.returncode == 0
    (tmp_path / "params.yaml").write_text((PARAMS % 8).replace("horizon_days: 7", "horizon_days: 40"))
    result = run_module(tmp_path, "stages.prepare", "zvuk", "--out", "prepared2")
    _assert_clean_failure(result, "eval.horizon_days=40 is out of range: the label and holdout windows",
                          tmp_path / "prepared2")


def test_empty_test_file_is_accepted_with_a_warning(tmp_path: Path):
    files = _good_files()
    files["test_smm"] = files["test_smm"].iloc[:0]
    files["targets_smm"] = pd.DataFrame({"user_id": [1_000_003]})
    result = _run(tmp_path, files, "stages.prepare", "smm", "--out", "prepared")
    assert result.returncode == 0, result.stderr
    assert "test_smm.parquet: the file has no rows" in result.stderr
    targets = pd.read_parquet(tmp_path / "prepared" / "smm" / "targets.parquet")
    assert targets["user_id"].tolist() == [1_000_003]
