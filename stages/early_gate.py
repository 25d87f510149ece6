"""Stage `early-gate`: does the holdout ranker learn on the early fold? The early fold is computed only then.

In:  `data/features/train.parquet` (the holdout ranker's latest fold), `ranker.two_windows_below_groups`.
Out: `data/gate/early.json`: {"needed": true | false}.

The early fold (als-fit, candidates and features early) feeds nothing but the holdout ranker's second window,
which joins only while the train fold has fewer groups with a positive than `two_windows_below_groups`
(ranker_fit.learning_folds). On the sample (about 3,000 groups) it does; at full size (about 17,700) it does
not, and computing the fold there took 95 s of the run. When it is not needed, als-fit early writes a marker
(common.UNUSED_FOLD_MARKER) instead of factors, and candidates and features early write empty tables.
Only the answer is written, not the count, so a train fold that changes without changing the answer leaves
the early fold's stages cached.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from stages.common import DOMAIN, USER_IDX, check_section, load_params, run_stage, section_params, write_json
from stages.ranker_fit import learning_folds, positive_groups

log = logging.getLogger("pipeline.gate")


def early_fold_needed(train: pd.DataFrame, *, two_windows_below_groups: int) -> tuple[bool, int]:
    """Does the holdout ranker learn on the early fold, exactly as ranker-fit will decide?

    Args:
        train: the train fold's features (user_idx, domain, label at least); a query is one (user, domain).
        two_windows_below_groups: ranker.two_windows_below_groups (0 = never two windows).

    Returns:
        (needed, the train fold's number of queries with a positive label)
    """
    check_section("ranker", two_windows_below_groups=two_windows_below_groups)
    groups = positive_groups(train)
    return "early" in learning_folds("holdout", groups, two_windows_below_groups), groups


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="data/features/train.parquet")
    parser.add_argument("--out", default="data/gate")
    args = parser.parse_args(argv)
    below_groups = section_params(load_params(), "ranker")["two_windows_below_groups"]
    train = pd.read_parquet(args.features, columns=[USER_IDX, DOMAIN, "label"])
    needed, groups = early_fold_needed(train, two_windows_below_groups=below_groups)
    log.info("early-gate: the train fold has %d groups with a positive, two_windows_below_groups %d: the early "
             "fold is %s", groups, below_groups,
             "needed (the holdout ranker learns on two windows)" if needed else "not needed: not computed")
    write_json({"needed": needed}, Path(args.out) / "early.json")


if __name__ == "__main__":
    run_stage(main)
