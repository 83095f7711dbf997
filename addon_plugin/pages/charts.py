"""Bar charts as inline SVG, drawn on the server: no script, scales to any width
(``viewBox``), a title and description for screen readers, and the same
numbers as a table (:func:`bar_chart` returns both)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from flask import render_template
from markupsafe import Markup

__all__ = ["bar_chart"]

_WIDTH, _HEIGHT, _LEFT, _RIGHT, _BOTTOM, _TOP = 600, 220, 56, 24, 30, 12


def _nice_top(largest: Decimal) -> Decimal:
    """A round axis maximum at or above ``largest`` (1, 2 or 5 times a power of ten)."""
    if largest <= 0:
        return Decimal(1)
    magnitude = Decimal(10) ** (len(str(int(largest))) - 1)
    for step in (1, 2, 5, 10):
        if largest <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _number(value: Decimal) -> str:
    """An axis label: no trailing zeros, no exponent (``100``, ``2.5``)."""
    return f"{value.normalize():f}"


def bar_chart(chart_id: str, title: str, days: list[date], series: list[tuple[str, str, list[Any]]],
              unit: str) -> Markup:
    """Grouped daily bars: ``series`` is ``(label, css class, values per day)``.
    Renders ``addons/pages/_chart.html`` (the SVG, a legend and a data table)."""
    values = [Decimal(str(v)) for _, _, row in series for v in row]
    top = _nice_top(max(values, default=Decimal(0)))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.8 / max(len(series), 1), 1)
    bars = []
    for index, (label, css, row) in enumerate(series):
        for n, value in enumerate(row):
            height = float(Decimal(str(value)) / top) * plot_h
            if height <= 0:
                continue
            x = _LEFT + n * slot + slot * 0.1 + index * bar_w
            bars.append({"x": round(x, 2), "y": round(_TOP + plot_h - height, 2),
                         "w": round(bar_w, 2), "h": round(height, 2), "css": css,
                         "label": f"{days[n]:%d %b}: {value} {unit} {label.lower()}"})
    ticks = [{"y": round(_TOP + plot_h - plot_h * f, 2), "value": _number(top * Decimal(str(f)))}
             for f in (0, 0.5, 1)]
    labels = [{"x": round(_LEFT + n * slot + slot / 2, 2), "text": f"{day:%d %b}"}
              for n, day in enumerate(days) if n % 7 == (len(days) - 1) % 7]
    total = {label: sum(Decimal(str(v)) for v in row) for label, _, row in series}
    summary = "; ".join(f"{label}: {total[label]} {unit} in {len(days)} days" for label, _, _ in series)
    rows = [(day, [row[n] for _, _, row in series]) for n, day in enumerate(days)]
    return Markup(render_template("addons/pages/_chart.html", chart_id=chart_id, title=title, summary=summary,
                                  width=_WIDTH, height=_HEIGHT, left=_LEFT, right=_WIDTH - _RIGHT,
                                  bars=bars, ticks=ticks, labels=labels,
                                  series=series, rows=rows, unit=unit, baseline=_TOP + plot_h))
