"""The demo's requests: Poisson arrivals following the story's phases, and their token sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .story import Phase


def arrivals(phases: Sequence[Phase], start: float, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson arrivals with the phases' piecewise-linear rate (thinning), and token sizes.

    Returns (unix arrival times, prompt tokens, output tokens).
    """
    rng = np.random.default_rng(seed)
    times: list[float] = []
    for ph in phases:
        peak = max(ph.rate_from, ph.rate_to)
        if peak <= 0:
            continue
        t = ph.start
        while True:
            t += rng.exponential(1.0 / peak)
            if t >= ph.end:
                break
            if rng.random() * peak <= ph.rate(t):
                times.append(t)
    n = len(times)
    prompt = np.clip(rng.lognormal(math.log(200), 0.4, n), 16, 2000).astype(np.int64)
    output = np.clip(rng.lognormal(math.log(48), 0.3, n), 4, 256).astype(np.int64)
    return start + np.asarray(times, dtype=float), prompt, output
