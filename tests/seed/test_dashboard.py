"""``ll.charts.dashboard``: the numbers in the figure's data against a frame computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis.dashboard import MAX_BUCKETS, PANELS, choose_interval, dashboard_frame
from llmlab.errors import ValidationError
from llmlab.schema import frame

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _call(service, model, t, latency, ttft, tin, tout, cost, status="ok", cached=False):
    start = T0 + pd.Timedelta(seconds=t)
    return {
        "service": service,
        "model": model,
        "start_time": start,
        "end_time": start + pd.Timedelta(milliseconds=latency),
        "latency_ms": latency,
        "ttft_ms": ttft,
        "input_tokens": tin,
        "output_tokens": tout,
        "cost_usd": cost,
        "status": status,
        "error": "boom" if status == "error" else "",
        "cached": cached,
        "trace_id": f"{int(t * 10):032x}",
        "span_id": f"{int(t * 10):016x}",
    }


CALLS = frame(
    [
        _call("a", "m1", 0.2, 100.0, 10.0, 10, 20, 0.001),
        _call("a", "m1", 3.0, 300.0, 30.0, 10, 30, 0.002),
        _call("a", "m2", 7.5, 200.0, 20.0, 5, 5, 0.0005),
        _call("a", "m2", 8.0, 900.0, None, None, None, None, status="error"),
        _call("a", "m1", 25.0, 400.0, 40.0, 1, 2, 0.003, cached=True),  # counted, but no timing (cache hit)
        _call("b", "m1", 1.0, 50.0, 5.0, 3, 4, 0.0001),
        _call("b", "m1", 12.0, 70.0, 7.0, 3, 6, 0.0002),
    ]
)
NAN = float("nan")
# by hand, 10 s intervals starting at T0, T0+10s, T0+20s; p95 of [100, 200, 300] = 200 + 0.9 * 100
EXPECTED = {
    "a": {
        "requests": [4, 0, 1],
        "errors": [1, 0, 0],
        "error_rate": [0.25, NAN, 0.0],
        "latency_p50": [200.0, NAN, NAN],
        "latency_p95": [290.0, NAN, NAN],
        "ttft_p50": [20.0, NAN, NAN],
        "ttft_p95": [29.0, NAN, NAN],
        "input_tokens": [25, 0, 1],
        "output_tokens": [55, 0, 2],
        "cum_cost_usd": [0.0035, 0.0035, 0.0065],
    },
    "b": {
        "requests": [1, 1, 0],
        "errors": [0, 0, 0],
        "error_rate": [0.0, 0.0, NAN],
        "latency_p50": [50.0, 70.0, NAN],
        "latency_p95": [50.0, 70.0, NAN],
        "ttft_p50": [5.0, 7.0, NAN],
        "ttft_p95": [5.0, 7.0, NAN],
        "input_tokens": [3, 3, 0],
        "output_tokens": [4, 6, 0],
        "cum_cost_usd": [0.0001, 0.0003, 0.0003],
    },
}
TRACE_OF = {  # (panel, stat) → column of EXPECTED
    ("requests", "requests"): "requests",
    ("latency", "p50"): "latency_p50",
    ("latency", "p95"): "latency_p95",
    ("ttft", "p50"): "ttft_p50",
    ("ttft", "p95"): "ttft_p95",
    ("tokens", "input"): "input_tokens",
    ("tokens", "output"): "output_tokens",
    ("cost", "cum_cost_usd"): "cum_cost_usd",
    ("error_rate", "error_rate"): "error_rate",
}


def _same(actual, expected):
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        if isinstance(e, float) and math.isnan(e):
            assert a is None or (isinstance(a, float) and math.isnan(a)), (actual, expected)
        else:
            assert a == pytest.approx(e), (actual, expected)


def test_figure_data_match_the_hand_computed_frame():
    fig = ll.charts.dashboard(CALLS, interval="10s", by="service")
    assert fig.layout.meta["interval"] == "10s"
    seen = set()
    for trace in fig.data:
        panel, group, stat = trace.meta["panel"], trace.meta["group"], trace.meta["stat"]
        column = TRACE_OF[(panel, stat)]
        assert list(pd.to_datetime(trace.x, utc=True)) == [T0, T0 + pd.Timedelta("10s"), T0 + pd.Timedelta("20s")]
        _same(list(trace.y), EXPECTED[group][column])
        seen.add((panel, group, stat))
    assert seen == {(p, g, s) for (p, s) in TRACE_OF for g in ("a", "b")}
    assert {t.meta["panel"] for t in fig.data} == set(PANELS)


def test_frame_errors_and_by_model():
    f = dashboard_frame(CALLS, interval="10s", by="model")
    m2 = f[f["group"] == "m2"]
    assert m2["requests"].tolist() == [2, 0, 0] and m2["errors"].tolist() == [1, 0, 0]
    assert m2["latency_p50"].iloc[0] == 200.0  # the error's 900 ms is not a latency of the endpoint
    whole = dashboard_frame(CALLS, interval="1min", by=None)
    assert whole["group"].tolist() == ["all"] and whole["requests"].tolist() == [7]
    assert whole["cum_cost_usd"].iloc[-1] == pytest.approx(0.0068)
    assert whole["error_rate"].iloc[0] == pytest.approx(1 / 7)


def test_interval_is_chosen_from_the_span_and_settable():
    assert dashboard_frame(CALLS).attrs["interval"] == "1s"  # 25 s of data → 26 one-second intervals
    for span, alias in [("25s", "1s"), ("3min", "5s"), ("10min", "15s"), ("2h", "5min"), ("3D", "2h"), ("30D", "1D")]:
        got = choose_interval(T0, T0 + pd.Timedelta(span))
        assert got == alias, (span, got)
        n = (T0 + pd.Timedelta(span)).floor(got) - T0.floor(got)
        assert 20 <= n / pd.Timedelta(got) + 1 <= MAX_BUCKETS
    assert ll.charts.dashboard(CALLS, interval=pd.Timedelta("5s")).layout.meta["interval"] == "0 days 00:00:05"
    assert len(dashboard_frame(CALLS, interval="5s", by="service")) == 2 * 6


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"interval": "soon"}, "interval='soon'"),
        ({"interval": "-5s"}, "positive"),
        ({"by": "colour"}, "by='colour'"),
        ({"interval": "1ms"}, "longer one"),
    ],
)
def test_bad_input_is_named(kwargs, needle):
    with pytest.raises(ValidationError, match=needle):
        ll.charts.dashboard(CALLS, **kwargs)


def test_empty_and_wrong_frames():
    fig = ll.charts.dashboard(CALLS.iloc[0:0])
    assert "no data" in [a.text for a in fig.layout.annotations]
    with pytest.raises(ValidationError, match="start_time"):
        ll.charts.dashboard(pd.DataFrame({"x": [1]}))
