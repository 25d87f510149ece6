"""Shared vocabulary of the pipeline: column names, domains, folds, params, atomic I/O and the CLI wrapper.

Every stage imports its names from here, so a column or a path is spelled in one place.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

DOMAINS = ("smm", "zvuk")
"""smm: MegaMarket (e-commerce), zvuk: Zvuk (music streaming). They share one user-id space."""

# Column names of the raw hackathon files, in the order each real file has them (DATA.md).
USER, ITEM, TS, RATING = "user_id", "item_id", "timestamp", "rating"
RAW_COLUMNS = {
    "smm": (USER, ITEM, TS, RATING),
    "zvuk": (USER, TS, ITEM, RATING),
}
RAW_RATING_DTYPE = {"smm": "float64", "zvuk": "int64"}

# Internal columns.
USER_IDX, ITEM_IDX, COL = "user_idx", "item_idx", "col"
DOMAIN = "domain"
WINDOW = "window"

# Folds: the same pipeline run at four cut-off moments (see README, "Evaluation").
#   early:   history before the early window, labels in the early window -> the holdout ranker learns here too
#   train:   history before the label window, labels in the label window -> the holdout ranker learns here
#   holdout: history before the holdout window, truth in the holdout    -> metrics; the final ranker learns here
#   final:   all history, no labels                                      -> the submission
# Each ranker learns on the two labelled folds before its cut-off (ranker_fit.TRAIN_FOLDS). `early` comes last
# here only so that the seeded draws of the other folds (candidates) stay what they were without it.
FOLDS = ("train", "holdout", "final", "early")
# The early fold is computed only when the holdout ranker learns on it (stage early-gate); otherwise als-fit
# writes this marker into models/als/early instead of factors, and candidates and features write empty tables.
UNUSED_FOLD_MARKER = "unused.json"
WINDOW_NAMES = ("history", "early", "label", "holdout")

K = 10
"""Length of every recommendation list (the hackathon's NDCG@10)."""

NS_PER_DAY = 86_400 * 10**9


def fold_cutoff(windows: dict[str, int], fold: str) -> int:
    """The moment a fold stands at: it may see events strictly before it, never after."""
    return {"early": windows["early_start"], "train": windows["label_start"], "holdout": windows["holdout_start"],
            "final": windows["end"] + 1}[fold]


def horizon_of(windows: dict[str, int]) -> int:
    """eval.horizon_days as prepare laid out the windows (the holdout window's length), in whole days."""
    return max(1, round((windows["end"] + 1 - windows["holdout_start"]) / NS_PER_DAY))


def fold_label_window(fold: str) -> str | None:
    """The window whose events a fold is judged on (None: the real, unknown future)."""
    return {"early": "early", "train": "label", "holdout": "holdout", "final": None}[fold]

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """A problem the user can fix (bad input, bad parameter): printed as one line, no traceback."""


def constant_category(value: str, n: int, categories: tuple[str, ...]) -> pd.Categorical:
    """A categorical column holding one value n times, built from codes (no list of n Python strings)."""
    return pd.Categorical.from_codes(np.full(n, categories.index(value), dtype=np.int8), categories=list(categories))


def other_domain(domain: str) -> str:
    """The other of the two domains."""
    return DOMAINS[1 - DOMAINS.index(domain)]


def user_domain_group(users: np.ndarray, domain_codes: np.ndarray) -> np.ndarray:
    """One integer per (user_idx, domain) pair (domain_codes index DOMAINS): user * len(DOMAINS) + domain, the
    row of a users x domains table raveled."""
    return users.astype(np.int64) * len(DOMAINS) + domain_codes


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """np.argsort(keys, kind="stable") of integer keys, through numpy's vectorised sort where possible.

    When a key (less the smallest) and its position fit together in 64 bits, both are packed into one uint64,
    key above position, and that array is sorted: equal keys come out in the order of their positions, as a
    stable sort leaves them. numpy sorts far faster than it argsorts here (50M random uint64: 1.6 s against
    6.6 s); on 50M keys of 37 bits this function took 3.2 s against 11.0 s for np.argsort(kind="stable").
    Other keys fall back to np.argsort.
    """
    keys = np.asarray(keys)
    n = len(keys)
    if n == 0 or keys.dtype.kind not in "iu":
        return np.argsort(keys, kind="stable")
    low = keys.min()
    span = int(keys.max()) - int(low)
    position_bits = max((n - 1).bit_length(), 1)
    if span.bit_length() + position_bits > 64:
        return np.argsort(keys, kind="stable")
    packed = keys.astype(np.uint64)
    packed -= np.uint64(int(low) % 2**64)  # modulo 2**64 on both sides: key - low, also for negative keys
    packed <<= np.uint64(position_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    packed &= np.uint64((1 << position_bits) - 1)
    return packed.view(np.int64)


def run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values begins in a sorted array (0 first, none for an empty array)."""
    if len(sorted_values) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values): the distinct values, sorted, found by a sort and a comparison of neighbours.

    numpy 2.3's np.unique hashes integer values, which is slow when most of them are distinct: 9.8 s against
    0.12 s for this on 8M random int64 keys; it took 8.6 s of features train at full size, on the label keys."""
    ordered = np.sort(np.asarray(values))
    return ordered[run_starts(ordered)]


def domain_matrix(matrix, items: pd.DataFrame, domain: str):
    """The users x items CSR of one domain, columns in item_idx order, cut from a merged matrix.

    Relies on merge-domains giving each domain one contiguous range of columns (smm first, then zvuk).
    """
    cols = items.loc[items[DOMAIN] == domain, COL].to_numpy()
    return (matrix[:, cols[0]:cols[-1] + 1] if len(cols) else matrix[:, :0]).tocsr()


def seen_pairs(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each k, whether matrix[rows[k], cols[k]] is non-zero.

    scipy looks each pair up in its row in C; np.isin over int64 pair keys sorted tens of millions of keys
    and took minutes at full size.
    """
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(matrix[rows, cols]).ravel() != 0


def read_target_idx(users: pd.DataFrame, domain: str, prepared: str | Path = "data/prepared") -> np.ndarray:
    """user_idx of the domain's target users (test and targets files), via the user map."""
    targets = pd.read_parquet(Path(prepared) / domain / "targets.parquet")[USER].to_numpy()
    return users.set_index(USER).loc[targets, USER_IDX].to_numpy()


# ---------------------------------------------------------------- params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a dict."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, integer: bool = False, low_open: bool = False) -> None:
    """Raise PipelineError naming `name` and the allowed range when `value` is outside it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        kind = "an integer" if integer else "a number"
        allowed = " and ".join(x for x in (lo, hi) if x)
        raise PipelineError(f"params.yaml: {name}={value!r} is out of range: must be {kind} {allowed}".rstrip())


# Allowed values of every numeric key of params.yaml: (low, high, integer, low_open). One table, so the
# rules and their messages are the same wherever a key is read.
PARAM_RULES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "sample.scale": (0.0, 4.0, False, True),
    "sample.seed": (0, None, True, False),
    "sample.taste_strength": (0.0, 1.0, False, False),
    "sample.n_tastes": (1, None, True, False),
    "sample.share_both": (0.0, 1.0, False, False),
    "sample.late_start_share": (0.0, 1.0, False, False),
    "sample.new_item_share": (0.0, 0.9, False, False),
    "eval.horizon_days": (0.0, None, False, True),
    "merge.smm_weight": (0.0, None, False, True),
    "merge.zvuk_weight": (0.0, None, False, True),
    "als.factors": (1, None, True, False),
    "als.regularization": (0.0, None, False, False),
    "als.iterations": (1, None, True, False),
    "als.alpha": (0.0, None, False, True),
    "als.seed": (0, None, True, False),
    "als.other_domain_weight": (0.0, 1.0, False, False),
    "candidates.n_als": (1, None, True, False),
    "candidates.n_recent": (0, None, True, False),
    "candidates.n_popular": (1, None, True, False),
    "candidates.popular_days": (0.0, None, False, True),
    "candidates.recent_pool": (0, None, True, False),
    "candidates.als_pool": (0, None, True, False),
    "candidates.max_labelled_users": (0, None, True, False),
    "candidates.lift_factors": (0, None, True, False),
    "candidates.newcomers": (0, None, True, False),
    "candidates.seed": (0, None, True, False),
    "ranker.n_estimators": (1, None, True, False),
    "ranker.learning_rate": (0.0, 1.0, False, True),
    "ranker.num_leaves": (2, None, True, False),
    "ranker.min_child_samples": (1, None, True, False),
    "ranker.truncation_level": (1, None, True, False),
    "ranker.early_stopping_rounds": (1, None, True, False),
    "ranker.valid_share": (0.0, 0.9, False, True),
    "ranker.seed": (0, None, True, False),
    "ranker.n_models": (1, 20, True, False),
    "ranker.budget_rows": (0, None, True, False),
    "ranker.two_windows_below_groups": (0, None, True, False),
    "ranker.newcomers_below_groups": (0, None, True, False),
    "cold.min_interactions": (0, None, True, False),
}


OTHER_KEYS = {"data.raw_dir", "merge.weighting", "cold.order"}  # keys of params.yaml that are not numbers


def check_section(section: str, **values: Any) -> None:
    """Check the numeric keys of one params.yaml section against PARAM_RULES; raise naming key and range."""
    for key, value in values.items():
        rule = PARAM_RULES.get(f"{section}.{key}")
        if rule is not None:
            low, high, integer, low_open = rule
            check_range(f"{section}.{key}", value, low, high, integer=integer, low_open=low_open)


def section_params(params: dict[str, Any], section: str) -> dict[str, Any]:
    """One section of params.yaml, checked: a missing section or an out-of-range value raises PipelineError."""
    if not isinstance(params.get(section), dict):
        raise PipelineError(f"params.yaml: section {section} is missing")
    known = {key.split(".", 1)[1] for key in (*PARAM_RULES, *OTHER_KEYS) if key.startswith(f"{section}.")}
    unknown = sorted(set(params[section]) - known)
    missing = sorted(known - set(params[section]))
    if unknown or missing:
        what = f"unknown key {section}.{unknown[0]}" if unknown else f"missing key {section}.{missing[0]}"
        raise PipelineError(f"params.yaml: {what} (the keys of {section} are {', '.join(sorted(known))})")
    check_section(section, **params[section])
    return params[section]


# ---------------------------------------------------------------- atomic output


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on any failure remove it.

    The rename is atomic on POSIX, so a reader (a later stage, dvc) sees the old file or the whole new one,
    never a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a parquet file atomically, without the pandas index."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically, keys sorted so that diffs stay small."""
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_npy(array: np.ndarray, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_npz_sparse(matrix, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        sp.save_npz(fh, matrix, compressed=False)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------- CLI


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's main(): user errors and missing inputs become one line on stderr and exit code 1, no
    traceback.

    The process then ends by os._exit, after flushing its output, without the interpreter's teardown: pyarrow's
    thread pools can abort the process there ("terminate called without an active exception", SIGABRT) when it
    exits just after a parquet read (apache/arrow#34314, open). early-gate, which reads one small file and exits,
    died so in 4 of 300 runs on a busy machine (0 of 300 with this exit, side by side), and failed a CI test.
    Every output is written, closed and renamed into place before main() returns, so nothing is lost."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    code = 0
    try:
        main(sys.argv[1:])
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    except FileNotFoundError as err:  # an input that an earlier stage makes: a stage run by hand out of order
        print(f"error: {err.filename or err}: file not found (dvc repro makes each stage's inputs first)",
              file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def progress(iterable, **kwargs):
    """tqdm progress on a terminal, silent otherwise (CI logs and dvc repro stay readable)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), mininterval=1.0, **kwargs)
