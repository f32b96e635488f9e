"""Trace loaders: bundled names, formats, generic schema errors (file, line, column), ServeGen, rate scale."""

import json

import numpy as np
import pytest

from simulations import traces as T


def test_bundled_traces_resolve():
    conv = T.load("azure-2023-conv")
    assert conv.kind == "requests" and conv.requests == 19366
    week = T.load("azure-2024-week")
    assert week.kind == "counts" and len(week.counts) == 60481 and week.bin_seconds == 10
    assert week.requests == 16_803_695
    assert any("2023 code" in n for n in week.notes)


def test_servegen_windows_hold_rate_times_600():
    sg = T.load("servegen-12")
    rows = [line.split(",") for line in open(T.DATA / T.BUNDLED["servegen-12"]) if line.strip()]
    expected = sum(round(float(r[1]) * 600) for r in rows)
    assert sg.requests == expected
    w = [r for r in rows if float(r[1]) > 0][0]
    lo = float(w[0])
    inside = ((sg.arrivals >= lo) & (sg.arrivals < lo + 600)).sum()
    assert inside == round(float(w[1]) * 600)
    assert any("conv" in n for n in sg.notes)


def test_generic_csv_and_jsonl(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("timestamp,prompt_tokens,output_tokens\n10.5,100,20\n2024-05-10T00:00:00Z,50,5\n")
    t = T.load(str(p))
    assert t.kind == "requests" and t.requests == 2 and t.prompt.tolist() == [100, 50]
    j = tmp_path / "t.jsonl"
    j.write_text(json.dumps({"timestamp": 1.0}) + "\n" + json.dumps({"timestamp": 2.0}) + "\n")
    t = T.load(str(j))
    assert t.requests == 2 and any("drawn from" in n for n in t.notes)
    c = tmp_path / "c.csv"
    c.write_text("timestamp,count\n0,5\n10,7\n20,0\n")
    t = T.load(str(c))
    assert t.kind == "counts" and t.bin_seconds == 10 and t.requests == 12


@pytest.mark.parametrize("body,needle", [
    ("timestamp,prompt_tokens,output_tokens\n1,10,x\n", "line 2, column 'output_tokens'"),
    ("timestamp,prompt_tokens,output_tokens\n1,-3,4\n", "line 2, column 'prompt_tokens'"),
    ("timestamp,prompt_tokens,output_tokens\nyesterday,1,2\n", "line 2, column 'timestamp'"),
    ("timestamp,prompt_tokens\n1,2\n", "give both prompt_tokens and output_tokens"),
    ("when,count\n1,2\n", "unknown column"),
    ("timestamp,count\n0,1\n10,1\n25,1\n", "evenly spaced"),
])
def test_generic_errors_name_file_line_column(tmp_path, body, needle):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(T.TraceError) as e:
        T.load(str(p))
    assert needle in str(e.value) and "bad.csv" in str(e.value)


def test_jsonl_error_names_line(tmp_path):
    j = tmp_path / "bad.jsonl"
    j.write_text('{"timestamp": 1}\n{oops\n')
    with pytest.raises(T.TraceError, match="bad.jsonl: line 2"):
        T.load(str(j))


def test_unknown_name():
    with pytest.raises(T.TraceError, match="not a bundled trace"):
        T.load("no-such-trace")


def test_rate_scale_and_slice():
    conv = T.load("azure-2023-conv").sliced(600)
    rng = np.random.default_rng(0)
    up = conv.scaled(2.5, rng)
    assert up.requests == pytest.approx(2.5 * conv.requests, rel=0.03)
    assert np.all(np.diff(up.arrivals) >= 0)
    down = conv.scaled(0.5, rng)
    assert down.requests == pytest.approx(0.5 * conv.requests, rel=0.05)
    week = T.load("azure-2024-week").sliced(3600)
    assert len(week.counts) == 360
    assert week.scaled(2, rng).requests == 2 * week.requests
    with pytest.raises(ValueError, match="--rate-scale"):
        conv.scaled(0, rng)


def test_counts_view_and_requests_view_agree():
    week = T.load("azure-2024-week").sliced(600)
    a, p, o = week.requests_view(np.random.default_rng(1))
    assert len(a) == pytest.approx(week.requests, rel=0.05)
    assert a.min() >= week.start and a.max() < week.start + week.duration


def test_counts_view_rebins_count_traces():
    """A count trace is re-binned to the bin asked for (the week's 10-s bins summed into minutes)."""
    week = T.load("azure-2024-week").sliced(3600)
    c10, _, _ = week.counts_view(10.0)
    c60, pm, om = week.counts_view(60.0)
    assert len(c10) == 360 and len(c60) == 60 and len(pm) == len(om) == 60
    np.testing.assert_allclose(c60, c10.reshape(60, 6).sum(axis=1))
    c5, _, _ = week.counts_view(5.0)           # finer: split evenly
    np.testing.assert_allclose(c5[0::2] + c5[1::2], c10)
    np.testing.assert_allclose(c5[0::2], c10 / 2)
    c7, _, _ = week.counts_view(7.0)           # not a multiple: the total is kept
    assert c7.sum() == pytest.approx(week.requests)
