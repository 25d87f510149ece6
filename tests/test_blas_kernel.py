"""Importing `stages` pins OpenBLAS to one kernel family, so that the ALS factors (and the committed dvc.lock and
metrics/) do not depend on which kernels OpenBLAS would pick for the CPU."""
from __future__ import annotations

import subprocess
import sys

import pytest

from stages import BLAS_KERNEL, cpu_has_avx2
from tests.conftest import module_env

pytestmark = pytest.mark.skipif(not cpu_has_avx2(),
                                reason="the pin applies to x86-64 CPUs with AVX2 only")

# What a stage process does: the package first, then numpy and scipy (whose BLAS implicit's ALS calls).
PROBE = """
import os, stages.common, scipy.linalg
from threadpoolctl import threadpool_info
print(os.environ.get("OPENBLAS_CORETYPE"))
print(",".join(sorted({i["architecture"] for i in threadpool_info() if i["internal_api"] == "openblas"})))
"""


def _probe(env: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_stage_process_runs_the_pinned_openblas_kernels():
    env = module_env()
    env.pop("OPENBLAS_CORETYPE", None)
    coretype, architectures = _probe(env)
    assert coretype == BLAS_KERNEL
    assert architectures == BLAS_KERNEL  # numpy's and scipy's OpenBLAS both, so the pin came before they loaded


def test_a_users_own_choice_of_kernel_is_kept():
    env = dict(module_env(), OPENBLAS_CORETYPE="Sandybridge")
    coretype, architectures = _probe(env)
    assert coretype == "Sandybridge"
    assert architectures == "Sandybridge"
