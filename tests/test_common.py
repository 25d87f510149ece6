import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stages.common import run_starts, sorted_unique, stable_argsort
from tests.conftest import module_env


@pytest.mark.parametrize("low, high, n", [(0, 3, 1000), (0, 2**40, 1000), (-5, 5, 1000), (-2**40, 2**40, 999),
                                          (0, 2**62, 1000), (0, 7, 1), (0, 7, 0)])
def test_stable_argsort_is_numpys_stable_argsort(low, high, n):
    # (0, 2**62): key and position do not fit in 64 bits together, the fallback path
    keys = np.random.default_rng(n).integers(low, high, size=n)
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))
    if high < 2**31 and low > -2**31:
        assert np.array_equal(stable_argsort(keys.astype(np.int32)), np.argsort(keys, kind="stable"))


def test_sorted_unique_is_numpys_unique():
    values = np.random.default_rng(0).integers(0, 50, size=500)
    assert np.array_equal(sorted_unique(values), np.unique(values))
    assert len(sorted_unique(values[:0])) == 0


def test_run_starts_are_numpys_first_indices_of_unique():
    values = np.sort(np.random.default_rng(1).integers(0, 50, size=500))
    assert np.array_equal(run_starts(values), np.unique(values, return_index=True)[1])
    assert np.array_equal(run_starts(values[:1]), [0])
    assert run_starts(values[:0]).dtype == np.int64 and len(run_starts(values[:0])) == 0


STAGE_SCRIPT = textwrap.dedent("""
    import atexit, logging
    from stages.common import PipelineError, run_stage

    def main(argv):
        atexit.register(lambda: print("teardown ran", flush=True))
        print("to stdout")  # a pipe: block-buffered until run_stage flushes it
        logging.getLogger("pipeline.test").info("a log line")
        if argv == ["fail"]:
            raise PipelineError("bad input")

    run_stage(main)
""")


@pytest.mark.parametrize("argv, code", [([], 0), (["fail"], 1)])
def test_run_stage_flushes_its_output_and_ends_without_the_interpreters_teardown(tmp_path, argv, code):
    # The teardown is where pyarrow's threads can abort a process that exits just after a parquet read.
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT)
    result = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=module_env())
    assert result.returncode == code
    assert "to stdout" in result.stdout and "a log line" in result.stderr
    assert "teardown ran" not in result.stdout
    assert ("error: bad input" in result.stderr) == (code == 1)
