"""Charts, checked through the figures' data (hand-computed values)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from llmlab.analysis import charts
from llmlab.errors import ValidationError
from llmlab.schema import coerce


def frame(**cols):
    return coerce(pd.DataFrame(cols))


@pytest.fixture
def grid():
    return frame(
        model=["m"] * 6,
        temperature=[0.0, 0.0, 0.7, 0.7, 0.7, 0.0],
        top_p=[1.0, 0.9, 1.0, 0.9, 0.9, 1.0],
        latency_ms=[100.0, 200.0, 300.0, 400.0, 500.0, 9000.0],
        ttft_ms=[10.0, 20.0, 30.0, 40.0, 50.0, None],
        cost_usd=[0.1, 0.2, 0.3, 0.4, 0.5, 0.0],
        prompt=["What is the capital of France? " * 5] * 6,
        completion=["Paris", "Paris", "Lyon", "Paris", "Paris", None],
        status=["ok", "ok", "ok", "ok", "ok", "error"],
    )


def _notes(fig):
    return " ".join(a.text for a in fig.layout.annotations)


def test_latency_groups_values_labels_and_hover(grid):
    fig = charts.latency(grid, by="temperature")
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    box = fig.data[0]
    assert list(box.x) == [
        "temperature=0.0",
        "temperature=0.0",
        "temperature=0.7",
        "temperature=0.7",
        "temperature=0.7",
    ]
    assert list(box.y) == [100.0, 200.0, 300.0, 400.0, 500.0]  # the error row is left out
    assert fig.layout.yaxis.title.text == "latency (ms)"
    assert "Latency" in fig.layout.title.text and "1 error or cached row(s) left out" in _notes(fig)
    assert box.text[0].startswith("prompt: What is the capital") and box.text[0].endswith("completion: Paris")
    assert len(box.text[0].split("<br>")[0]) <= len("prompt: ") + 80


def test_ttft_one_setting(grid):
    fig = charts.ttft(grid.iloc[:2], by="model")
    assert list(fig.data[0].x) == ["model=m", "model=m"] and list(fig.data[0].y) == [10.0, 20.0]
    assert fig.layout.yaxis.title.text == "time to first token (ms)"


def test_large_frames_are_aggregated():
    n = charts.LARGE + 1000
    df = frame(temperature=[0.0, 1.0] * (n // 2), latency_ms=[float(i % 101) for i in range(n)], status=["ok"] * n)
    fig = charts.latency(df)
    assert len(fig.data) == 1 and fig.data[0].y is None
    assert list(fig.data[0].x) == ["temperature=0.0", "temperature=1.0"]
    assert fig.data[0].median[0] == pytest.approx(50.0, abs=1.0)


def test_empty_frames_say_no_data():
    empty = coerce(pd.DataFrame())
    for fig in (
        charts.latency(empty),
        charts.ttft(empty),
        charts.cost(empty),
        charts.heatmap(empty),
        charts.pareto(empty),
        charts.diversity(empty),
    ):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0 and "no data" in _notes(fig)


def test_error_only_frames_say_why_there_is_nothing_to_plot():
    df = frame(
        model=["m"] * 3,
        temperature=[0.0, 0.7, 0.7],
        top_p=[1.0] * 3,
        latency_ms=[None, None, 5.0],
        status=["error", "error", "ok"],
        error=["HTTP 500: upstream down", "HTTP 500", ""],
        cached=[False, False, True],
    )
    for fig in (charts.latency(df), charts.ttft(df), charts.heatmap(df)):
        assert len(fig.data) == 0
        assert "2 of 3 calls failed (e.g. HTTP 500: upstream down); 1 cache hit(s) have no timing" in _notes(fig)
    assert _notes(charts.latency(df.iloc[:2])).endswith("2 of 2 calls failed (e.g. HTTP 500: upstream down)")
    scored = df.iloc[:2].assign(score=pd.array([None, None], dtype="Float64"))
    pareto = charts.pareto(scored, quality="score")
    assert (
        len(pareto.data) == 0
        and _notes(pareto) == "no score values: 2 of 2 calls failed (e.g. HTTP 500: upstream down)"
    )


def test_cost_bars_and_na_note():
    df = frame(model=["a", "a", "b", "c", "c"], cost_usd=[0.1, 0.2, None, 0.5, None], status=["ok"] * 5)
    fig = charts.cost(df, by="model")
    bar = fig.data[0]
    assert list(bar.x) == ["model=a", "model=b", "model=c"]
    assert bar.y[0] == pytest.approx(0.3) and bar.y[1] is None and bar.y[2] == pytest.approx(0.5)
    assert fig.layout.yaxis.title.text == "cost (USD)"
    notes = _notes(fig)
    assert (
        "cost unknown (no price, or no token counts): model=b" in notes and "model=c (1 of 2 calls unpriced)" in notes
    )


def test_heatmap_mean_grid(grid):
    fig = charts.heatmap(grid, x="temperature", y="top_p", value="latency_ms", agg="mean")
    hm = fig.data[0]
    assert list(hm.x) == ["temperature=0.0", "temperature=0.7"] and list(hm.y) == ["top_p=0.9", "top_p=1.0"]
    assert [list(r) for r in hm.z] == [[200.0, 450.0], [100.0, 300.0]]
    assert charts.heatmap(grid, agg="count").data[0].z[0][1] == 2
    sparse = charts.heatmap(grid.iloc[[0, 3]], x="temperature", y="top_p")
    assert [list(r) for r in sparse.data[0].z] == [[None, 400.0], [100.0, None]]
    with pytest.raises(ValidationError):
        charts.heatmap(grid, agg="mode")


def test_pareto_front_and_dominated():
    df = frame(
        model=["a", "a", "b", "b", "c", "c"],
        score=[1.0, 0.8, 0.5, 0.5, 0.9, 0.9],
        cost_usd=[0.2, 0.2, 0.1, 0.1, 0.3, 0.3],
        latency_ms=[100.0, 100.0, 100.0, 100.0, 100.0, 100.0],
        status=["ok"] * 6,
    )
    fig = charts.pareto(df, quality="score")
    dominated, front = fig.data
    assert front.name == "Pareto front" and dominated.name == "dominated"
    # per setting: a = (cost 0.2, score 0.9), b = (0.1, 0.5), c = (0.3, 0.9) → c is dominated by a
    assert list(front.text) == ["model=b", "model=a"] and list(front.x) == [pytest.approx(0.1), pytest.approx(0.2)]
    assert list(front.y) == [pytest.approx(0.5), pytest.approx(0.9)]
    assert list(dominated.text) == ["model=c"]
    assert fig.layout.xaxis.title.text == "cost per call (USD)"
    with pytest.raises(ValidationError, match="score"):
        charts.pareto(df.drop(columns=["score"]), quality="score")


def test_pareto_unknown_cost_falls_back_to_latency():
    df = frame(
        temperature=[0.0, 0.7], score=[0.9, 0.8], cost_usd=[0.1, None], latency_ms=[100.0, 50.0], status=["ok", "ok"]
    )
    fig = charts.pareto(df)
    assert fig.layout.xaxis.title.text == "latency (ms)"
    assert sorted(fig.data[1].text) == ["temperature=0.0", "temperature=0.7"]
    assert "cost is unknown for some settings" in _notes(fig)


def test_pareto_many_settings_uses_webgl():
    n = 1200
    df = frame(
        temperature=[i / n for i in range(n)],
        score=[(i % 7) / 7 for i in range(n)],
        cost_usd=[float(i) for i in range(n)],
        status=["ok"] * n,
    )
    fig = charts.pareto(df)
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert len(fig.data) == 2


def test_diversity_from_repeats():
    df = frame(
        temperature=[0.0] * 4 + [1.0] * 4,
        prompt_id=["p1", "p1", "p2", "p2"] * 2,
        prompt=["q1", "q1", "q2", "q2"] * 2,
        completion=["a b", "a b", "x", "x", "a b", "a c", "x y", "z"],
        status=["ok"] * 8,
    )
    fig = charts.diversity(df, by="temperature")
    assert list(fig.data[0].x) == ["temperature=0.0", "temperature=1.0"]
    assert list(fig.data[0].y) == [pytest.approx(0.5), pytest.approx(1.0)]
    # temperature 1.0: p1 {a,b} vs {a,c} → 1 - 1/3; p2 {x,y} vs {z} → 1.0; mean = 5/6
    assert list(fig.data[1].y) == [pytest.approx(0.0), pytest.approx(5 / 6)]
    single = charts.diversity(df.iloc[[0, 2]])
    assert "repeats" in _notes(single)


def test_pareto_labels_never_overlap_or_leave_the_plot():
    from llmlab.analysis.charts import _CHAR_W, _LINE_H, _PLOT_H, _PLOT_W, MAX_LABELS, _label_box

    n = 15  # a crowded front: every setting trades a little cost for a little quality
    df = frame(
        model=[f"a-rather-long-model-name-{i:02d}" for i in range(n)] * 2,
        score=[0.5 + 0.01 * i for i in range(n)] * 2,
        cost_usd=[0.001 * (1 + 0.05 * i) for i in range(n)] * 2,
        status=["ok"] * (2 * n),
    )
    fig = charts.pareto(df, quality="score")
    front = fig.data[1]
    assert len(front.x) == n
    xr, yr = fig.layout.xaxis.range, fig.layout.yaxis.range
    boxes = []
    for x, y, text, pos in zip(front.x, front.y, front.text, front.textposition):
        if not text:
            continue
        px = (x - xr[0]) / (xr[1] - xr[0]) * _PLOT_W
        py = (y - yr[0]) / (yr[1] - yr[0]) * _PLOT_H
        boxes.append(_label_box(px, py, _CHAR_W * len(text), pos))
    assert 2 <= len(boxes) <= MAX_LABELS
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert x0 >= 0 and y0 >= 0 and x1 <= _PLOT_W and y1 <= _PLOT_H  # inside the plot: nothing clipped
        assert y1 - y0 == _LINE_H
        for bx0, by0, bx1, by1 in boxes[i + 1 :]:
            assert not (x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1)  # no two labels overlap
    # every setting, labelled or not, is named in the hover text
    assert all(h.startswith("model=a-rather-long-model-name-") for h in front.hovertext)
    assert fig.layout.width and fig.layout.height
