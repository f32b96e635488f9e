"""Capacity per replica at the SLO: the model's closed form, online learning, precedence."""

import pytest

from scaler.capacity import (
    MIN_SAMPLES,
    CapacityLearner,
    FleetModel,
    little_capacity,
    model_batch,
    model_capacity,
    model_targets,
    resolve_capacity,
)
from scaler.signals import Signals

M = FleetModel(alpha=0.015, beta=0.0003, gamma=0.00005, max_num_seqs=256)
SLO = dict(ttft_slo=2.5, tpot_slo=0.1)


def test_model_worked_example() -> None:
    n = model_batch(M, prompt_tokens=1000, output_tokens=200, **SLO)
    assert n == pytest.approx(0.085 / 0.00055)
    lam = model_capacity(M, prompt_tokens=1000, output_tokens=200, **SLO)
    assert lam == pytest.approx(n / (200 * (0.015 + 0.0003 * n) + n * 0.05))
    assert lam == pytest.approx(7.73, abs=0.01)


@pytest.mark.parametrize(
    "model, tokens, slo, expect",
    [
        pytest.param(FleetModel(0.015, 0.0003, 0.00005, 64), (1000, 200), SLO,
                     64 / (200 * (0.015 + 0.0003 * 64) + 64 * 0.05), id="max-num-seqs-binds"),
        pytest.param(FleetModel(0.015, 0.0003, 0.00005, 256, kv_tokens=60_000), (1000, 200), SLO,
                     50 / (200 * (0.015 + 0.0003 * 50) + 50 * 0.05), id="kv-binds"),
        pytest.param(FleetModel(0.015, 0.0003, 0.001, 256), (2480, 10000), SLO, None, id="ttft-binds"),
        pytest.param(M, (1000, 200), dict(ttft_slo=2.5, tpot_slo=0.01), 0.0, id="slo-out-of-reach"),
    ],
)
def test_model_table(model, tokens, slo, expect) -> None:
    lam = model_capacity(model, prompt_tokens=tokens[0], output_tokens=tokens[1], **slo)
    if expect is None:  # ttft-binds: n* = (T1* - α - γI)/β = 16.7, while TPOT would allow 155
        n = (2.5 - 0.015 - 2.48) / 0.0003
        assert n < (0.1 - 0.015) / (0.0003 + 0.001 * 2480 / 10000)
        expect = n / (10000 * (0.015 + 0.0003 * n) + n * 2.48)
    assert lam == pytest.approx(expect)


def test_capacity_grows_with_a_looser_tpot_slo() -> None:
    caps = [model_capacity(M, prompt_tokens=500, output_tokens=300, ttft_slo=2.5, tpot_slo=t)
            for t in (0.05, 0.075, 0.1, 0.15)]
    assert caps == sorted(caps) and caps[0] > 0


def sig(t, **kw):
    base = dict(observed_at=t, pods_reporting=2, waiting=3.0, running=60.0, completion_rate=10.0,
                ttft_p95=1.0, tpot_p95=0.07)
    base.update(kw)
    return Signals(**base)


def feed(learner, snapshots, start=0.0, every=5.0):
    for i, s in enumerate(snapshots):
        learner = learner.observe(s, now=start + i * every, window=60, **SLO)
    return learner


@pytest.mark.parametrize(
    "overrides, learns",
    [
        pytest.param({}, True, id="loaded-within-slo-learns"),
        pytest.param({"ttft_p95": None}, False, id="nan-window-ignored"),
        pytest.param({"completion_rate": None}, False, id="no-rate-ignored"),
        pytest.param({"tpot_p95": 0.15}, False, id="outside-slo-ignored"),
        pytest.param({"waiting": 0.0, "tpot_p95": 0.03, "ttft_p95": 0.3}, False, id="light-load-uninformative"),
        pytest.param({"waiting": 0.0, "tpot_p95": 0.08}, True, id="near-slo-informative"),
    ],
)
def test_learner_table(overrides, learns) -> None:
    learner = feed(CapacityLearner(), [sig(i * 5.0, **overrides) for i in range(40)])
    assert (learner.usable is not None) == learns
    if learns:
        assert learner.usable == pytest.approx(5.0)  # 10 req/s over 2 replicas


def test_learner_ignores_windows_while_the_replica_count_settles() -> None:
    # 2 replicas for 100 s, then a third becomes Ready: the next 60 s are skipped (it has not got its share).
    snaps = [sig(i * 5.0) for i in range(20)] + [sig(100 + i * 5.0, pods_reporting=3, completion_rate=10.0)
                                                 for i in range(12)]
    learner = feed(CapacityLearner(), snaps)
    # 20 samples minus the first window: only the 2-replica windows after 60 s count, all at 5 req/s.
    assert learner.usable == pytest.approx(5.0)
    assert learner.samples == len([i for i in range(20) if i * 5.0 >= 60])


def test_learner_needs_min_samples() -> None:
    learner = feed(CapacityLearner(), [sig(i * 5.0) for i in range(12 + MIN_SAMPLES - 1)])
    assert learner.samples == MIN_SAMPLES - 1 and learner.usable is None


def test_little_fallback() -> None:
    assert little_capacity(sig(0, running=40.0, completion_rate=10.0), 32) == pytest.approx(8.0)
    assert little_capacity(sig(0, running=0.0), 32) is None


def test_precedence_metadata_model_learned_little() -> None:
    s = sig(0)
    learned = feed(CapacityLearner(), [sig(i * 5.0) for i in range(40)])
    kw = dict(signals=s, ttft_slo=2.5, tpot_slo=0.1, running_per_replica=32, prompt_tokens=1000, output_tokens=200)
    assert resolve_capacity(metadata=3.0, model=M, learned=learned, **kw).source == "metadata"
    assert resolve_capacity(metadata=None, model=M, learned=learned, **kw).source == "model"
    assert resolve_capacity(metadata=None, model=None, learned=learned, **kw).source == "learned"
    assert resolve_capacity(metadata=None, model=None, learned=CapacityLearner(), **kw).source == "little"
    # The model needs token sizes: without them the next source answers.
    kw.update(prompt_tokens=None)
    assert resolve_capacity(metadata=None, model=M, learned=learned, **kw).source == "learned"
    kw.update(signals=sig(0, running=None))
    assert resolve_capacity(metadata=None, model=None, learned=CapacityLearner(), **kw) is None


def test_little_fallback_uses_the_learners_running_means() -> None:
    # A bursty fleet: R swings 0 <-> 40 between snapshots; the EWMAs keep the estimate steady.
    learner = CapacityLearner()
    for i in range(200):
        learner = learner.observe(sig(i * 5.0, running=40.0 if i % 2 else 0.0, completion_rate=10.0),
                                  now=i * 5.0, window=60, **SLO)
    steady = little_capacity(sig(0, running=0.0), 32, learner)
    assert steady == pytest.approx(32 * 10 / 20, rel=0.1)
    assert little_capacity(sig(0, running=0.0), 32, None) is None  # the snapshot alone has no load


def test_fleet_model_metadata_round_trips():
    from scaler.capacity import FleetModel
    from scaler.config import parse_metadata

    for m in (FleetModel(alpha=0.02058, beta=0.00041, gamma=0.0001, max_num_seqs=256, kv_tokens=400000),
              FleetModel(alpha=0.015, beta=0.0003, gamma=5e-05, max_num_seqs=64)):
        cfg = parse_metadata({"fleetModel": m.metadata()}, scaled_object="a", namespace="b")
        assert cfg.fleet_model == m
    assert FleetModel(alpha=0.02058, beta=0.00041, gamma=0.0001, max_num_seqs=256, kv_tokens=400000).metadata() == \
        "alpha=0.02058,beta=0.00041,gamma=0.0001,maxNumSeqs=256,kvTokens=400000"


# The llama-3.1-8b-h100 profile's numbers, as in the module docstring's worked example (the test that they
# are the profile's, and that the defaults follow them: tests/unit/test_profiles.py).
H100 = FleetModel(alpha=0.00769, beta=0.0000572, gamma=0.0000214, max_num_seqs=1024, kv_tokens=413_000)


def test_targets_worked_example() -> None:
    n = model_batch(H100, prompt_tokens=235, output_tokens=460, **SLO)
    assert n == pytest.approx(413_000 / 695) and n == pytest.approx(594.2, abs=0.1)   # the KV bound binds
    c = model_capacity(H100, prompt_tokens=235, output_tokens=460, **SLO)
    assert c == pytest.approx(26.81, abs=0.01)
    r, q = model_targets(H100, prompt_tokens=235, output_tokens=460, utilization=0.9, **SLO)
    lam = 0.9 * c
    assert r == pytest.approx(lam * 460 * 0.00769 / (1 - lam * (460 * 0.0000572 + 0.0000214 * 235)))
    assert r == pytest.approx(350.4, abs=0.1) and q == pytest.approx(6.70, abs=0.01)
    assert r < 0.9 * n - 150         # not u n*: the last running slots carry little rate
    # r* is the steady state's running count at the rate u c (Little's law): back through λ(n) it gives u c
    assert r / (460 * (0.00769 + 0.0000572 * r) + r * 0.0000214 * 235) == pytest.approx(lam)
    chat = model_targets(H100, prompt_tokens=1150, output_tokens=210, utilization=0.9, **SLO)
    assert chat == (pytest.approx(162, abs=0.5), pytest.approx(5.96, abs=0.01))


@pytest.mark.parametrize(
    "model, u, expect",
    [
        pytest.param(M, 1.0, (0.085 / 0.00055, 1.0), id="u-1-is-n-star-and-the-queue-floor"),
        pytest.param(M, 0.05, None, id="small-u-small-running-large-queue"),
        pytest.param(FleetModel(0.2, 0.0003, 0.00005, 256), 0.9, (1.0, 1.0), id="slo-out-of-reach-floors"),
    ],
)
def test_targets_table(model, u, expect) -> None:
    r, q = model_targets(model, prompt_tokens=1000, output_tokens=200, utilization=u, **SLO)
    c = model_capacity(model, prompt_tokens=1000, output_tokens=200, **SLO)
    if expect is None:
        assert 1.0 <= r < 10 and q == pytest.approx(0.95 * c * 2.5)
    else:
        assert (r, q) == (pytest.approx(expect[0]), pytest.approx(expect[1]))


def test_targets_grow_with_capacity() -> None:
    small = model_targets(M, prompt_tokens=1000, output_tokens=200, utilization=0.9, **SLO)
    large = model_targets(M, prompt_tokens=1000, output_tokens=200, utilization=0.9, ttft_slo=2.5, tpot_slo=0.2)
    assert large[0] > small[0] and large[1] > small[1]
