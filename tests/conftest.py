"""Shared helpers: tiny literal frames in the real schema, and running the pipeline in a temporary copy."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.project import ROOT, copy_project, dvc_env, set_param

# The four real 10,000-row samples of the hackathon files (copied from ../shared/samples/), kept in the
# repository: a clone outside this workplace (a fresh CI checkout) skipped the test that runs them.
SAMPLES = ROOT / "tests" / "data" / "samples"
DAY = 86_400 * 10**9
T0 = 1_680_000_000 * 10**9  # 2023-03-28


def smm_frame(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    """rows: (user_id, item_id, day offset from T0, rating) -> the real smm schema."""
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "timestamp": [T0 + r[2] * DAY for r in rows],
                         "rating": [float(r[3]) for r in rows]}).astype(
        {"user_id": "int64", "item_id": "int64", "timestamp": "int64", "rating": "float64"})


def zvuk_frame(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """rows: (user_id, item_id, day offset from T0, plays) -> the real zvuk schema (its column order)."""
    frame = smm_frame(rows).astype({"rating": "int64"})
    return frame[["user_id", "timestamp", "item_id", "rating"]]


def run_dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=dvc_env(), capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def module_env() -> dict[str, str]:
    """The environment for `python -m <module>` run in a folder outside the project: its modules importable."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


def run_module(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` run in `cwd` (a stage or benchmark run by hand), output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=module_env(), capture_output=True,
                          text=True)


def stages_run(result: subprocess.CompletedProcess) -> set[str]:
    """Names of the stages that `dvc repro` actually ran (not the cached ones)."""
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """The whole pipeline run once through `dvc repro` on a tiny synthetic sample (shared by several tests)."""
    project = copy_project(tmp_path_factory.mktemp("tiny"))
    set_param(project, "sample.scale", 0.004)
    run_dvc(project, "repro")
    return project
