"""The pipeline's stages, one module each (run as `python -m stages.<stage>`).

Importing the package pins OpenBLAS to one kernel family before numpy or scipy load, so that ALS factors and
every score computed from them do not depend on which kernels OpenBLAS would pick for the CPU. Unpinned, the same
params and data gave different ALS factors on an earlier machine (CPU not recorded) than on an AVX2 one, and so
different candidates and metrics (a cross segment by 0.015), and forcing other kernels on one machine changes the
factors too (docs/experiments.md); a fresh `dvc repro` elsewhere would not reproduce the committed dvc.lock and
metrics/. Forcing a kernel the CPU lacks kills the process with an illegal instruction, so the pin applies only
where AVX2 is present; elsewhere OpenBLAS chooses as usual.
"""
from __future__ import annotations

import os
import platform

BLAS_KERNEL = "Haswell"  # OpenBLAS's AVX2 + FMA kernels: x86-64 CPUs since 2013 (Intel) and 2015 (AMD)


def cpuinfo(field: str) -> str:
    """The first value of `field` in /proc/cpuinfo ("flags", "model name"); "" where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as lines:
            return next((line.split(":", 1)[1].strip() for line in lines
                         if line.split(":", 1)[0].strip() == field), "")
    except OSError:
        return ""


def cpu_has_avx2() -> bool:
    return platform.machine() in ("x86_64", "AMD64") and "avx2" in cpuinfo("flags").split()


if cpu_has_avx2():
    os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_KERNEL)
