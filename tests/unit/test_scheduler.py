"""vLLM V1 scheduling of one replica (simulations/fleet/engine.py): the rules one by one, and the invariants
over random seeded workloads that force preemption."""

import math

import numpy as np
import pytest

from simulations.fleet import ColdStartModel, ModelParams, RequestFleet
from simulations.fleet.engine import DECODE, DONE, PREFILL

T0 = 1_000_000.0


def fleet(arr, p, o, params):
    return RequestFleet(T0 + np.asarray(arr, float), p, o, params=params, cold_start=ColdStartModel.single(1.0),
                        start=T0, initial_replicas=1)


def blocks_held(e):
    """The blocks the running requests hold, recounted from their state (between steps)."""
    req, bs = e.req, e.bs
    total = 0
    for rid in e.running:
        if req.state[rid] == DECODE:
            total += -(-(req.base[rid] + e.it) // bs)
        else:
            assert req.state[rid] == PREFILL
            total += -(-req.done[rid] // bs)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_invariants_over_random_workloads(seed):
    rng = np.random.default_rng(seed)
    n = 400
    arr = np.sort(rng.uniform(0, 20, n))
    prompt = rng.integers(1, 3000, n)
    output = rng.integers(1, 600, n)
    params = ModelParams(alpha=0.005, beta=0.0001, gamma=0.00002, kv_tokens=int(rng.integers(4000, 20000)),
                         max_num_seqs=int(rng.integers(8, 128)), max_batched_tokens=int(rng.integers(512, 4096)),
                         block_size=int(rng.choice([8, 16, 32])))
    f = fleet(arr, prompt, output, params)
    e = f.engines[0]
    e.log = []
    fits = -(-(prompt + output - 1) // params.block_size) <= params.kv_tokens // params.block_size
    t = T0
    while t < T0 + 4000 and not (e.idle and f.next_arrival == n):
        t += 0.37
        f.advance_to(t)
        assert e.used == blocks_held(e) <= e.blocks                      # KV never above capacity
        assert len(e.running) <= params.max_num_seqs
        assert len(set(e.running)) == len(e.running) and not set(e.running) & set(e.waiting)
    req = f.req
    assert e.preemptions > 0 and (req.preempted > 0).sum() > 0            # the workload did preempt
    # every request that fits finishes exactly once (n_done counts finishes), the others are rejected
    assert all(s == DONE for s, ok in zip(req.state, fits) if ok)
    assert e.n_done == fits.sum() and np.isfinite(req.finish[fits]).all()
    assert req.unserved.tolist() == (~fits).tolist()
    assert (req.first[fits] <= req.finish[fits]).all() and (req.first[fits] > req.arrival[fits]).all()
    assert e.used == 0
    # a step never exceeds the token budget: one token per decode plus the prefill chunks
    for _it, seqs, dec, pre, used in e.log:
        assert dec + pre <= params.max_batched_tokens and used <= e.blocks and seqs <= params.max_num_seqs


def test_admission_takes_the_prompts_blocks_not_the_final_footprint():
    # 12 blocks of 16: two prompts of 64 tokens (4 blocks each) are admitted together though each ends at
    # 64 + 99 computed tokens (11 blocks, 22 for both): vLLM does not reserve the final footprint
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, kv_tokens=192, max_num_seqs=8)
    f = fleet([0, 0], [64, 64], [100, 100], m)
    e = f.engines[0]
    f.advance_to(T0 + 0.005)
    assert len(e.running) == 2 and e.used == 8 and e.kv_usage() == pytest.approx(8 / 12)


def test_decode_takes_a_block_when_the_last_one_fills():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, kv_tokens=16 * 100)
    f = fleet([0], [16], [40], m)
    e = f.engines[0]
    f.advance_to(T0 + 0.005)          # the prefill step: 16 tokens, one block
    assert e.used == 1
    f.advance_to(T0 + 0.015)          # the first decode step computes token 17: a second block
    assert e.used == 2
    f.advance_to(T0 + 0.165)          # 16 decode steps: 32 tokens computed, the 17th step needs a third block
    assert e.it == 17 and e.used == 2
    f.advance_to(T0 + 0.175)
    assert e.used == 3


def test_preemption_recomputes_the_newest_request_with_its_output():
    # 8 blocks of 16 tokens. A (prompt 32) then B (prompt 64) are admitted: 2 + 4 blocks; both decode and
    # grow. A needs its 4th block at step 49 (48 computed): none free -> B, the newest, is preempted, goes back
    # to the front of the queue and is later prefilled again with its prompt plus the tokens it produced.
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, kv_tokens=8 * 16, max_num_seqs=4)
    f = fleet([0, 0.0001], [32, 64], [60, 40], m)
    e = f.engines[0]
    req = f.req
    f.advance_to(T0 + 0.0101)           # step 0 admits A (the queue held only A then), step 1 admits B
    assert list(e.running) == [0, 1]
    first_b = req.first[1]
    f.advance_to(T0 + 10)
    assert e.preemptions >= 1 and req.preempted[1] >= 1 and req.preempted[0] == 0
    assert req.first[1] == first_b                     # TTFT stays the first first-token time
    assert e.recompute_tokens > 64                     # prompt + generated tokens recomputed
    assert np.isfinite(req.finish).all() and e.used == 0


def test_chunked_prefill_spreads_a_long_prompt_over_steps_under_the_budget():
    # budget 1024 tokens a step; a 2500-token prompt takes 3 steps (1024, 1024, 452) with gamma per token
    m = ModelParams(alpha=0.01, beta=0.001, gamma=0.0001, max_num_seqs=4, max_batched_tokens=1024)
    f = fleet([0.0], [2500], [5], m)
    e = f.engines[0]
    e.log = []
    f.advance_to(T0 + 5)
    ttft = f.req.first[0] - T0
    assert ttft == pytest.approx(3 * (0.01 + 0.001) + 0.0001 * 2500)
    assert [x[3] for x in e.log[:3]] == [1024, 1024, 452]


def test_decodes_count_in_the_token_budget():
    # 3 decoding requests and a budget of 100: a new 200-token prompt gets 97 tokens in its first step
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, max_num_seqs=8, max_batched_tokens=100)
    f = fleet([0, 0, 0, 0.05], [10, 10, 10, 200], [1000] * 4, m)
    e = f.engines[0]
    e.log = []
    f.advance_to(T0 + 0.2)
    step = next(x for x in e.log if x[3] and x[0] > 0)
    assert step[2] == 3 and step[3] == 97


def test_max_num_seqs_caps_running():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, max_num_seqs=2)
    f = fleet([0, 0, 0], [10, 10, 10], [100, 100, 100], m)
    e = f.engines[0]
    f.advance_to(T0 + 0.5)
    assert (len(e.running), len(e.waiting)) == (2, 1)


def test_a_request_that_can_never_fit_is_rejected():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, kv_tokens=64)
    f = fleet([0, 0], [60, 10], [10, 10], m)
    f.advance_to(T0 + 5)
    assert f.req.unserved.tolist() == [True, False] and math.isfinite(f.req.finish[1])
