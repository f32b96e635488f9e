"""The per-request fidelity against Erlang C (M/M/c): exponential service, alpha only.

One replica with ``max_num_seqs = c`` and ``beta = gamma = 0`` is a c-server FIFO
queue whose service time is ``output_tokens * alpha``; geometric output sizes
(mean 100) make it (nearly) exponential. Erlang C gives the probability of
waiting ``C(c, a)`` and the mean wait ``Wq = C / (c mu - lam)``. The simulated
wait is ``TTFT - alpha`` (the admission step) minus the half step an arrival
waits on average for the next step to start.
"""

import math

import numpy as np
import pytest

from simulations.fleet import ColdStartModel, ModelParams, RequestFleet


def erlang_c(c: int, a: float) -> float:
    s = sum(a ** k / math.factorial(k) for k in range(c))
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (s + top)


@pytest.mark.parametrize("c,rho", [(1, 0.7), (4, 0.8), (8, 0.8)])
def test_mmc_against_erlang_c(c, rho):
    rng = np.random.default_rng(7)
    alpha, mean_out = 0.01, 100
    mu = 1.0 / (alpha * mean_out)
    lam = rho * c * mu
    n = 150_000
    arr = np.cumsum(rng.exponential(1 / lam, n))
    out = rng.geometric(1 / mean_out, n)
    params = ModelParams(alpha=alpha, beta=0.0, gamma=0.0, max_num_seqs=c, kv_tokens=10**9)
    f = RequestFleet(1e6 + arr, np.ones(n, int), out, params=params, cold_start=ColdStartModel.single(1),
                     start=1e6, initial_replicas=1)
    f.advance_to(1e6 + arr[-1] + 10_000)
    ttft = f.req.first - f.req.arrival
    warm = slice(n // 10, None)                      # drop the start-up transient
    wait = ttft[warm] - alpha
    pw = erlang_c(c, lam / mu)
    wq = pw / (c * mu - lam)
    assert np.mean(wait > alpha + 1e-9) == pytest.approx(pw, abs=0.04)
    assert np.mean(wait) - alpha / 2 == pytest.approx(wq, rel=0.1)
