"""``llmlab demo``: the whole loop offline, in under a minute."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import click

DEMO_PROMPTS = [
    "Explain how photosynthesis works.",
    "What causes a rainbow?",
    "Describe how a computer stores data.",
    "Why do we need sleep?",
]


#: per-token delay of the embedded model in the demo, so latency and TTFT look like a real endpoint's
DEFAULT_DELAY_MS = 4.0


def run_demo(home: str | None, out: Path, delay_ms: float | None = None) -> None:
    """Sweep 4 prompts × 2 local models × 3 temperatures × 2 top_p, trace to the embedded
    collector, read the spans back over DQL, print a summary and write HTML charts.

    ``delay_ms`` (the per-token delay) wins over ``LLMLAB_LOCAL_DELAY_MS``, which wins over
    :data:`DEFAULT_DELAY_MS`. Ctrl-C stops the sweep and the demo (exit code 130).
    """
    import pandas as pd

    import llmlab as ll
    from llmlab.config import LLMLAB_LOCAL_DELAY_MS
    from llmlab.errors import ConfigError
    from llmlab.pricing import format_usd
    from llmlab.text import is_finite_number

    if delay_ms is not None and (not is_finite_number(delay_ms) or delay_ms < 0):
        raise ConfigError(f"--delay-ms={delay_ms!r}: must be a non-negative, finite number of milliseconds")
    if delay_ms is not None:
        os.environ[LLMLAB_LOCAL_DELAY_MS] = str(delay_ms)
    else:
        os.environ.setdefault(LLMLAB_LOCAL_DELAY_MS, str(DEFAULT_DELAY_MS))
    config = ll.configure(home=home, datakit="embedded") if home else ll.configure(datakit="embedded")
    click.echo(f"llmlab demo — home {config.home}, traces to the embedded DataKit-compatible collector")
    sweep = ll.Sweep(
        prompts=DEMO_PROMPTS,
        models=["local/tiny", "local/small"],
        temperature=[0.0, 0.7, 1.2],
        top_p=[1.0, 0.9],
        max_tokens=48,
        seed=7,
        name="demo",
    )
    plan = sweep.plan()
    click.echo(f"plan: {plan.attrs['calls']} calls, estimated cost ${plan.attrs['est_cost_usd']} (demo prices)")
    t0 = time.perf_counter()
    res = sweep.run(concurrency=8, display=True)
    click.echo(f"ran {res!r} in {time.perf_counter() - t0:.1f}s")
    if res.stopped == "cancelled":
        click.echo("Cancelled.", err=True)
        raise click.exceptions.Exit(130)

    from llmlab.tracing import flush
    from llmlab.tracing.export import drain

    flush()
    delivered = drain(config)
    df = ll.spans(sweep_id=res.sweep_id, source="datakit")
    click.echo(f"read back {len(df)} spans from the collector over DQL ({delivered['pending']} pending export)")
    if df.empty:
        df = res.df
    table = ll.summary(df, by=["model", "temperature", "top_p"])
    cols = [
        c
        for c in (
            "model",
            "temperature",
            "top_p",
            "calls",
            "latency_mean",
            "latency_p50",
            "ttft_p50",
            "output_tokens",
            "cost_usd",
        )
        if c in table
    ]
    fmt: dict[str, Callable[[float], str]] = dict.fromkeys(("latency_mean", "latency_p50", "ttft_p50"), "{:.1f}".format)
    fmt["cost_usd"] = format_usd  # one money format everywhere: µ$ for the demo's tiny sums
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        click.echo(table[cols].to_string(index=False, formatters=fmt))
    out.mkdir(parents=True, exist_ok=True)
    df = df.assign(
        setting=df["model"].astype(str) + " T=" + df["temperature"].astype(str) + " p=" + df["top_p"].astype(str)
    )
    charts = {
        "latency_by_setting.html": ll.charts.latency(df, by="setting"),
        "ttft_by_model.html": ll.charts.ttft(df, by="model"),
        "cost_by_model.html": ll.charts.cost(df, by="model"),
        "latency_heatmap.html": ll.charts.heatmap(df, x="temperature", y="top_p", value="latency_ms"),
    }
    for name, fig in charts.items():
        fig.write_html(out / name, include_plotlyjs=True, full_html=True)
    click.echo(f"charts written to {out.resolve()}: {', '.join(charts)}")
