"""The pipeline's stages, one module each (run as `python -m stages.<stage>`).

Importing the package pins OpenBLAS to one kernel family before numpy or scipy load, so that ALS factors and
every score computed from them are the same bits on any x86-64 machine with AVX2. OpenBLAS otherwise picks its
kernels by CPU: the same params and data gave different ALS factors (and so different candidates and metrics
in the 4th-5th decimal) on an AVX-512 machine than on an AVX2 one, and a fresh `dvc repro` there would not
reproduce the committed dvc.lock and metrics/. Forcing a kernel the CPU lacks kills the process with an illegal
instruction, so the pin applies only where AVX2 is present; elsewhere OpenBLAS chooses as usual.
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
