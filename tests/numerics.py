"""Float tolerances derived from the computation, so that they hold on any CPU (issue 24, item 12).

CPU kernels differ in the order in which they add (vector width, blocking of a matrix product, threads), and
float32 sums taken in another order differ by up to the rounding of every addition: a tolerance tuned on one
CPU fails on the next. So a test either

- compares in float64 where exactness is the point (two computations of one quantity: chunked and whole,
  cached and full forward, a formula by hand and the library): the models and inputs are float64, the losses
  stay float64 (``optima.runtime.at_least_float32``), and any order of summation leaves an error of about
  ``F64 x terms`` (1e-12 for 10^4 terms), far below ``FLOAT64_REL``, while a real mistake (a mis-weighted chunk,
  a wrong mask) errs by percents; or
- stays in float32 and bounds the error by the computation: a sum of ``n`` terms in any order is within
  ``n x F32`` of the exact sum, relative to the sum of the terms' magnitudes (``sum_rtol``; the magnitudes' sum is
  the sum itself for losses, whose terms are all non-negative).

The tests marked ``numerics`` (pyproject.toml) are these; `.ci/run` also runs them with the generic kernels
(``ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2``) and with AVX2 ones, so a kernel-specific tolerance
fails at home (the float32 tolerances they replaced held with the AVX-512 and the generic kernels, and one failed
with the AVX2 ones). Not marked: float64 statistics on a handful of numbers (tables, agreement, bandits), whose
default ``pytest.approx`` (1e-6 relative) is 10^9 times their rounding; values compared at a printed precision
(``abs=0.01`` of a number printed with two decimals); and the two-process DDP run against one process
(tests/test_training.py), whose tolerance covers masked means taken per rank, not rounding.
"""

from __future__ import annotations

import torch

F32 = torch.finfo(torch.float32).eps  # 1.19e-7: one float32 rounding moves a value by at most F32 / 2 of it
F64 = torch.finfo(torch.float64).eps  # 2.2e-16
# float64 comparisons of two computations of one quantity: an order of summation changes ~F64 x terms (1e-12 for
# the ~10^4 terms of a nano model's loss); 1e-9 bounds it with a wide margin and still catches any real mistake
FLOAT64_REL = 1e-9


def sum_rtol(terms: int, eps: float = F32) -> float:
    """Relative bound between two sums of ``terms`` values taken in different orders (each within
    ``(terms - 1) x eps / 2`` of the exact sum, relative to the sum of magnitudes): ``terms x eps``."""
    return terms * eps
