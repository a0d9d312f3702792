"""Statistics shared by both benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def paired_ratio(samples: Sequence[float], reference: Sequence[float]) -> float:
    """Median of the per-round ratios `samples[i] / reference[i]`.

    Samples taken side by side share the machine's drift, which on a shared
    2-core VM moves a plain function call by up to 2x within a second.
    """
    return statistics.median(sample / base for sample, base in zip(samples, reference, strict=True))
