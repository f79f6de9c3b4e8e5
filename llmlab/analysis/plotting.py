"""Plotly helpers shared by the charts (``ll.charts.*``) and the traffic dashboard.

They live apart from both so that :mod:`llmlab.analysis.charts` can show :func:`~llmlab.analysis.dashboard.dashboard`
as ``ll.charts.dashboard`` by a plain import at the top, with no import circle between the two.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["empty_figure", "say_empty"]


def say_empty(fig: go.Figure, message: str = "no data") -> go.Figure:
    """Write ``message`` across the middle of ``fig`` (a figure with nothing to draw) and return it."""
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 16})
    return fig


def empty_figure(title: str, message: str = "no data") -> go.Figure:
    """A figure with no axes saying why there is nothing to plot: an empty frame gives this, not an exception."""
    fig = go.Figure()
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    return say_empty(fig, message)
