"""Faults: a stage killed mid-write leaves nothing that looks finished; an interrupted `dvc repro` resumes and
gives the same bytes as an uninterrupted run; the same params and seed give identical submissions."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from benchmarks.project import copy_project, dvc_env, set_param
from stages import common
from tests.conftest import module_env, run_dvc, stages_run


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path: Path, monkeypatch):
    target = tmp_path / "out" / "events.parquet"

    def half_write(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(OSError):
        common.write_parquet(pd.DataFrame({"a": [1]}), target)
    assert list((tmp_path / "out").iterdir()) == []


def test_killed_stage_leaves_no_file_that_looks_finished(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sample": dict(
        scale=0.3, seed=1, taste_strength=0.6, n_tastes=20, share_both=0.3, late_start_share=0.3,
        new_item_share=0.15)}))
    out = tmp_path / "sample"
    proc = subprocess.Popen([sys.executable, "-m", "stages.sample", "--out", str(out)], cwd=tmp_path,
                            env=module_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    caught = False
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and any(p.name.endswith(".tmp") for p in out.iterdir()):
            proc.send_signal(signal.SIGKILL)  # in the middle of writing a file
            caught = True
            break
        time.sleep(0.002)
    proc.wait()
    assert caught, "the stage finished before it could be killed mid-write"
    finished = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(finished) < 6  # it did not get to write everything
    for path in finished:  # whatever carries a final name is complete
        assert pq.read_table(path).num_rows > 0


def test_interrupted_repro_resumes_and_gives_the_same_bytes(tiny_pipeline: Path, tmp_path: Path):
    project = copy_project(tmp_path / "interrupted")
    set_param(project, "sample.scale", 0.004)  # the tiny_pipeline's params, run separately from scratch
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=dvc_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = project / "data" / "candidates" / "train.parquet"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "dvc repro ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (project / "data" / "submission").exists()

    ran = stages_run(run_dvc(project, "repro"))
    assert not ran & {"sample", "prepare@smm", "prepare@zvuk", "merge-domains"}  # finished before the kill
    assert "evaluate" in ran and "submit" in ran
    for domain in ("smm", "zvuk"):
        name = Path("data") / "submission" / f"submission_{domain}.parquet"
        assert (project / name).read_bytes() == (tiny_pipeline / name).read_bytes()
    # Every output of every stage is byte-identical to the uninterrupted run's: same hashes in dvc.lock.
    locks = [yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in (project, tiny_pipeline)]
    outs = [{s: [o["md5"] for o in v.get("outs", [])] for s, v in lock.items()} for lock in locks]
    assert outs[0] == outs[1]
    shutil.rmtree(project)
