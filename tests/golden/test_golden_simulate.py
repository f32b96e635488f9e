"""Golden summary: the first 15 minutes of the bundled Azure 2023 conversation trace at 10x its rate, every policy.

At 10x (about 49 requests/s, ``--rate-scale 10``) the default profile (Llama-3.1-8B on one H100, about 24
requests/s at this trace's sizes) needs two or more replicas from one, so every policy scales; at its own
rate (4.9 requests/s) one replica serves it all and every policy would hold it, pinning nothing.

The simulation is deterministic (fixed seed), so the summary must match the
committed ``simulate_conv_15min.json`` exactly (floats to 1e-9). When a change
to the fleet model, the runner, KEDA/HPA emulation or ``decide()`` is intended,
regenerate it and review the diff:

    UPDATE_GOLDEN=1 python -m pytest -q tests/golden/test_golden_simulate.py
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from simulations.runner import Settings, run
from simulations.traces import load

GOLDEN = Path(__file__).with_name("simulate_conv_15min.json")
POLICIES = ["predictive", "reactive", "keda-threshold", "kpa", "oracle"]
RATE_SCALE = 10.0


def summary() -> dict:
    tr = load("azure-2023-conv").sliced(900).scaled(RATE_SCALE, np.random.default_rng(0))
    doc = run(tr, POLICIES, Settings()).summary()
    doc["trace"].pop("source")          # an absolute path
    doc["settings"].pop("scaled_object")
    return json.loads(json.dumps(doc))


def test_golden_summary():
    got = summary()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert set(got["policies"]) == set(want["policies"])
    for name in want["policies"]:
        for key, v in want["policies"][name].items():
            g = got["policies"][name][key]
            assert g == (pytest.approx(v, rel=1e-9) if isinstance(v, float) else v), (name, key)
    assert got["trace"] == want["trace"]
