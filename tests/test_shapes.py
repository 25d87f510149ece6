"""benchmarks.shapes: the issue-3 judgement of one run's metrics, read from literal metrics files."""
from __future__ import annotations

import re

import pytest
import yaml

from benchmarks.project import ROOT
from benchmarks.shapes import SHAPES, judge_run, oracle_ratios, parse_overrides, report, shape_keys


def _metrics(score: float, smm: dict[str, float], zvuk: dict[str, float]) -> dict:
    """A metrics/holdout/<model>.json of evaluate's layout, with only ndcg filled."""
    def block(ndcgs):
        return {"coverage": 0.1, **{s: {"ndcg": v, "hit": 0.0, "recall": 0.0} for s, v in ndcgs.items()}}
    return {"score": score, "smm": block(smm), "zvuk": block(zvuk)}


SEG = ("all", "warm", "cross", "cold")


def _run(final_smm_cold: float) -> dict:
    popular = _metrics(0.20, dict(zip(SEG, (0.2, 0.2, 0.1, 0.3))), dict(zip(SEG, (0.2, 0.2, 0.2, 0.3))))
    als = _metrics(0.40, dict(zip(SEG, (0.4, 0.4, 0.2, 0.3))), dict(zip(SEG, (0.4, 0.4, 0.1, 0.3))))
    final = _metrics(0.42, dict(zip(SEG, (0.42, 0.43, 0.3, final_smm_cold))),
                     dict(zip(SEG, (0.42, 0.44, 0.4, 0.3))))
    return {"popular": popular, "als": als, "final": final}


def test_judge_run_measures_against_the_best_baseline_and_names_low_segments():
    judged = judge_run(_run(final_smm_cold=0.25))
    assert judged["lead"] == pytest.approx(0.42 / 0.40)  # ALS-only is the best baseline here, not popular
    assert not judged["lead_met"]
    assert judged["below_popular"] == ["smm.cold"]  # 0.25 < 0.3; zvuk cold ties at 0.3 and is not below
    assert judged["cross_lead"] == {"smm": pytest.approx(3.0), "zvuk": pytest.approx(2.0)}
    assert judge_run(_run(final_smm_cold=0.3))["below_popular"] == []


def test_judge_run_refuses_a_run_without_all_three_models():
    run = _run(0.3)
    del run["als"]
    with pytest.raises(ValueError, match="als"):
        judge_run(run)


def test_report_flags_a_missed_target_and_lists_every_model():
    run = {**_run(0.25), "candidates": {"smm": {"recall_total": 0.7781}, "zvuk": {"recall_total": 0.79657}}}
    text = report({("strong-taste", 42): run},
                  {("strong-taste", 42): {"knowable": 1.106, "inferred": 1.104, "counted": 1.087}})
    first = next(line for line in text.splitlines() if line.startswith("| strong-taste | 42 | 0.2"))
    assert "| 1.050 | NO |" in first and "| smm.cold | 0.778 / 0.797 |" in first
    assert first.endswith("1.106 | 1.104 | 1.087 |")
    models = [line.split(" | ")[2] for line in text.splitlines() if line.startswith("| strong-taste | 42 | ")][1:]
    assert models == ["popular", "als", "final"]


def test_oracle_ratios_read_the_line_benchmarks_oracle_prints():
    line = ("final / best baseline 1.070; oracle / best baseline 1.163; knowable oracle / best baseline 1.106; "
            "inferred oracle / best baseline 1.104; counted oracle / best baseline 1.087; "
            "final / knowable oracle 0.968")
    assert oracle_ratios("table\n\n" + line) == {"knowable": 1.106, "inferred": 1.104, "counted": 1.087}
    with pytest.raises(ValueError):
        oracle_ratios("final / best baseline 1.071")


def test_every_shape_key_is_a_param():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for keys in SHAPES.values():
        for dotted in keys:
            section, key = dotted.split(".")
            assert key in params[section], dotted


def test_overrides_are_typed_and_cannot_change_the_shape():
    assert parse_overrides(["als.factors=64", "cold.order=ranker", "merge.smm_weight=0.5"]) == {
        "als.factors": 64, "cold.order": "ranker", "merge.smm_weight": 0.5}
    for bad in ("als.factors", "factors=64", "a.b.c=1", "sample.taste_strength=0.8"):
        with pytest.raises(ValueError):
            parse_overrides([bad])


def test_a_taste_shape_is_the_default_with_that_taste_strength_and_others_are_refused():
    assert shape_keys("strong-taste") == SHAPES["strong-taste"]
    assert shape_keys("taste=0.7") == {"sample.taste_strength": 0.7}
    for bad in ("taste=1.5", "taste=strong", "taste=", "medium"):
        with pytest.raises(ValueError, match="unknown shape"):
            shape_keys(bad)


def test_the_readme_runs_the_same_shapes():
    # README "Sample shapes" shows each shape as a `dvc exp run -S ...` line; they must be SHAPES' keys.
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Sample shapes"):].split("```bash\n", 1)[1].split("```", 1)[0]
    shown = [dict(pair.split("=") for pair in re.findall(r"-S (\S+)", line)) for line in block.splitlines()]
    assert shown == [{k: str(v) for k, v in keys.items()} for keys in SHAPES.values()]
