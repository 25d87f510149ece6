"""Benchmarks: commands that print tables (python -m benchmarks.<name>), not tests."""
import stages  # noqa: F401  (first, before numpy loads: the benchmarks run the stages' OpenBLAS kernels)
