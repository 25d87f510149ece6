"""Benchmark: the holdout metrics of the three sample shapes that issue 3 judges, two seeds each, as one table.

    python -m benchmarks.shapes [--seeds 42,7] [--shapes default,popularity,strong-taste,taste=0.7] [--oracle]
                                [--set als.factors=64 ...] [--workdir /tmp/recsys-shapes] [--keep]

Each (shape, seed) gets a fresh copy of the project (code, dvc.yaml, params.yaml with the shape's `sample.*` keys
set; no data, no cache) and runs `dvc repro` from nothing: 73-108 s a run on 2026-12-04 (the six runs' printed
times sum to 533 s), 113-180 s on 2026-12-07 (825 s), with `--oracle`. Then it reads
`metrics/holdout/{popular,als,final}.json`, the files that `dvc metrics show metrics/holdout` prints, and
`metrics/candidates.json`, and prints two markdown tables: the score of each model with the targets of issue 3
(final at least 1.10x the best of popular and ALS-only, no segment below popular, cross-domain users above popular)
and the candidate recall, then NDCG@10 per model, domain and segment. `--oracle` also runs `benchmarks.oracle` in
each copy and adds its knowable, inferred and counted ceilings as multiples of the best baseline.
`--set section.key=value` (repeatable) changes a param of every run, so that a change is judged on all six at once:
run once without it and once with it, and compare the two tables. A shape `taste=<x>` is the default shape with
`sample.taste_strength` x: `--shapes taste=0.7,taste=0.8` shows how the +10% target depends on how strong "strong
taste" is.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.project import copy_project, dvc_env, set_param
from stages.cold_split import MODELS, SEGMENTS
from stages.common import DOMAINS, PipelineError, check_section

# The shapes of README "Sample shapes": the sample.* keys each one sets (the rest are params.yaml's).
SHAPES = {
    "default": {},
    "popularity": {"sample.taste_strength": 0.2, "sample.new_item_share": 0.3},
    "strong-taste": {"sample.taste_strength": 0.9},
}
TARGET_LEAD = 1.10  # issue 3: final >= 1.10 x the best baseline
TASTE_SHAPE = "taste="  # a shape named taste=<x>: the default shape with sample.taste_strength x


def shape_keys(shape: str) -> dict:
    """The sample.* keys a shape sets: those of SHAPES, or for "taste=<x>" sample.taste_strength x (0..1)."""
    if shape in SHAPES:
        return SHAPES[shape]
    if shape.startswith(TASTE_SHAPE):
        try:
            strength = float(shape[len(TASTE_SHAPE):])
            check_section("sample", taste_strength=strength)  # the range params.yaml allows
            return {"sample.taste_strength": strength}
        except (ValueError, PipelineError):
            pass
    raise ValueError(f"unknown shape {shape!r}: the shapes are {', '.join(SHAPES)}, or {TASTE_SHAPE}<x> with x "
                     "from 0 to 1 (the default shape with that sample.taste_strength)")


def ndcg(metrics: dict, domain: str, segment: str) -> float:
    """A segment's NDCG@10 from one metrics/holdout/<model>.json (evaluate writes 0.0 for a segment without
    truth users, so such a segment ties and is never "below popular")."""
    return metrics[domain][segment]["ndcg"]


def judge_run(run: dict[str, dict]) -> dict:
    """The issue-3 figures of one run: run maps each model of MODELS to its metrics/holdout json.

    Returns the three scores, final over the best baseline, whether that meets TARGET_LEAD, the segments
    (domain.segment) where final is below popular, and final over popular for the cross-domain users per domain.
    """
    missing = [m for m in MODELS if m not in run]
    if missing:
        raise ValueError(f"metrics of {', '.join(missing)} missing")
    scores = {m: run[m]["score"] for m in MODELS}
    best = max(scores["popular"], scores["als"])
    below = [f"{d}.{s}" for d in DOMAINS for s in SEGMENTS if ndcg(run["final"], d, s) < ndcg(run["popular"], d, s)]
    cross = {}
    for d in DOMAINS:
        popular = ndcg(run["popular"], d, "cross")
        cross[d] = ndcg(run["final"], d, "cross") / popular if popular else None  # None: no cross users
    lead = scores["final"] / best if best > 0 else float("inf")
    return {**scores, "lead": lead, "lead_met": lead >= TARGET_LEAD, "below_popular": below, "cross_lead": cross}


ORACLE_CEILINGS = ("knowable", "inferred", "counted")  # benchmarks.oracle's ceilings, in the order it prints them


def oracle_ratios(text: str) -> dict[str, float]:
    """Each ceiling of ORACLE_CEILINGS over the best baseline, from the last line that benchmarks.oracle prints."""
    found = {name: re.search(rf"{name} oracle / best baseline ([0-9.]+)", text) for name in ORACLE_CEILINGS}
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise ValueError(f"benchmarks.oracle printed no '<name> oracle / best baseline' figure for {missing}")
    return {name: float(match.group(1)) for name, match in found.items()}


def report(runs: dict[tuple[str, int], dict], oracles: dict[tuple[str, int], dict] | None = None) -> str:
    """Two markdown tables of the runs: (shape, seed) -> {model: metrics json, "candidates":
    metrics/candidates.json}."""
    head = "| shape | seed | popular | ALS-only | final | final / best baseline | +10% | cross: final / popular " \
           "(smm / zvuk) | segments below popular | candidate recall (smm / zvuk) |"
    rule = "|---|---:|---:|---:|---:|---:|---|---|---|---|"
    if oracles:
        head += "".join(f" {name} oracle / best |" for name in ORACLE_CEILINGS)
        rule += "---:|" * len(ORACLE_CEILINGS)
    lines = [head, rule]
    for (shape, seed), run in runs.items():
        j = judge_run(run)
        cross = " / ".join("-" if j["cross_lead"][d] is None else f"{j['cross_lead'][d]:.2f}" for d in DOMAINS)
        recall = " / ".join(f"{run['candidates'][d]['recall_total']:.3f}" for d in DOMAINS)
        row = (f"| {shape} | {seed} | {j['popular']:.5f} | {j['als']:.5f} | {j['final']:.5f} | {j['lead']:.3f} | "
               f"{'yes' if j['lead_met'] else 'NO'} | {cross} | {', '.join(j['below_popular']) or 'none'} | "
               f"{recall} |")
        if oracles:
            ratios = oracles[(shape, seed)]
            row += "".join(f" {ratios[name]:.3f} |" for name in ORACLE_CEILINGS)
        lines.append(row)
    columns = [(d, s) for d in DOMAINS for s in ("all", *SEGMENTS)]
    lines += ["", "| shape | seed | model | score | " + " | ".join(f"{d} {s}" for d, s in columns) + " |",
              "|---|---:|---|---:|" + "---:|" * len(columns)]
    for (shape, seed), run in runs.items():
        for model in MODELS:
            cells = " | ".join(f"{ndcg(run[model], d, s):.5f}" for d, s in columns)
            lines.append(f"| {shape} | {seed} | {model} | {run[model]['score']:.5f} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_overrides(pairs: list[str]) -> dict:
    """["als.factors=64", ...] -> {"als.factors": 64}: values read as YAML (numbers, strings, booleans)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.count(".") != 1 or not all(key.split(".")):
            raise ValueError(f"--set {pair!r}: expected section.key=value, e.g. als.factors=64")
        if key.startswith("sample."):
            raise ValueError(f"--set {pair!r}: sample.* keys make the shapes; choose them with --shapes and --seeds")
        overrides[key] = yaml.safe_load(value)
    return overrides


def run_shape(project: Path, keys: dict, seed: int, log: Path, with_oracle: bool) -> tuple[dict, dict | None]:
    """`dvc repro` in a fresh copy with `keys` (the shape's and any overrides) and the seed set:
    ({model: metrics json, "candidates": metrics/candidates.json}, oracle ratios or None)."""
    copy_project(project, folders=("stages", "benchmarks"))
    for key, value in {**keys, "sample.seed": seed}.items():
        try:
            set_param(project, key, value)
        except KeyError:
            raise SystemExit(f"benchmarks.shapes: {key} is not a key of params.yaml") from None
    with open(log, "w") as fh:
        code = subprocess.call(["dvc", "repro"], cwd=project, stdout=fh, stderr=subprocess.STDOUT, env=dvc_env())
    if code != 0:
        raise SystemExit(f"benchmarks.shapes: dvc repro failed in {project} (exit {code}); see {log}")
    run = {m: json.loads((project / "metrics" / "holdout" / f"{m}.json").read_text()) for m in MODELS}
    run["candidates"] = json.loads((project / "metrics" / "candidates.json").read_text())
    ratios = None
    if with_oracle:
        oracle = subprocess.run([sys.executable, "-m", "benchmarks.oracle"], cwd=project, capture_output=True,
                                text=True, env=dvc_env())
        if oracle.returncode != 0:
            raise SystemExit(f"benchmarks.shapes: benchmarks.oracle failed in {project}:\n{oracle.stderr}")
        ratios = oracle_ratios(oracle.stdout)
    return run, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,7")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help=f"of {', '.join(SHAPES)}, or {TASTE_SHAPE}<x> (the default shape, taste_strength x)")
    parser.add_argument("--oracle", action="store_true", help="add benchmarks.oracle's ceilings (about 20 s a run)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="change a param of every run, e.g. als.factors=64 (repeatable)")
    parser.add_argument("--workdir", default="/tmp/recsys-shapes")
    parser.add_argument("--keep", action="store_true", help="keep each run's project copy")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    try:
        keys = {shape: shape_keys(shape) for shape in shapes}
    except ValueError as error:
        parser.error(str(error))
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: integers separated by commas, e.g. 42,7")
    try:
        overrides = parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runs, oracles = {}, {}
    for shape in shapes:
        for seed in seeds:
            project = workdir / f"{shape}-s{seed}"
            if project.exists():
                shutil.rmtree(project)
            start = time.perf_counter()
            print(f"{shape} seed {seed}: dvc repro in {project} ...", file=sys.stderr, flush=True)
            runs[(shape, seed)], oracles[(shape, seed)] = run_shape(
                project, {**keys[shape], **overrides}, seed, workdir / f"{shape}-s{seed}.log", args.oracle)
            print(f"{shape} seed {seed}: final {runs[(shape, seed)]['final']['score']:.5f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(project)
    if overrides:
        print("With " + ", ".join(f"{key}={value}" for key, value in overrides.items()) + ":\n")
    print(report(runs, oracles if args.oracle else None))


if __name__ == "__main__":
    main()
