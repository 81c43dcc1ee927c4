"""Small, dependency-free SVG charts for the run report: they render in any browser, with or without
JavaScript, and carry their numbers in <title> tooltips.

Every chart is an ``<svg class="chart" data-marks="N">`` whose marks (bars, points, lines) carry the class
``mark``, so a test can count what was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

BLUE, GREY, RED, GREEN, ORANGE = "#2563eb", "#b8bec8", "#dc2626", "#16a34a", "#ea580c"
PALETTE = (BLUE, ORANGE, GREEN, RED, "#7c3aed", "#0891b2", "#be185d", "#4d7c0f")


def fmt(value: float) -> str:
    """A number as a person reads it on an axis or in a tooltip."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


@dataclass
class Frame:
    """A plotting area with linear scales and a margin for the axes."""

    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 56
    right: int = 16
    top: int = 28
    bottom: int = 40

    def __post_init__(self):
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        if self.y1 == self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def sy(self, y: float) -> float:
        return (
            self.height
            - self.bottom
            - (y - self.y0) / (self.y1 - self.y0) * (self.height - self.top - self.bottom)
        )

    def axes(self, title: str, xlabel: str = "", ylabel: str = "", xticks: bool = True) -> list[str]:
        w, h, b, lft = self.width, self.height, self.bottom, self.left
        out = [
            f'<text x="{w / 2:.0f}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<line x1="{lft}" y1="{h - b}" x2="{w - self.right}" y2="{h - b}" class="axis"/>',
            f'<line x1="{lft}" y1="{self.top}" x2="{lft}" y2="{h - b}" class="axis"/>',
        ]
        for t in nice_ticks(self.y0, self.y1):
            y = self.sy(t)
            out.append(f'<line x1="{lft}" y1="{y:.1f}" x2="{w - self.right}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{lft - 4}" y="{y + 3:.1f}" text-anchor="end">{fmt(t)}</text>')
        if xticks:
            for t in nice_ticks(self.x0, self.x1):
                x = self.sx(t)
                out.append(f'<text x="{x:.1f}" y="{h - b + 13}" text-anchor="middle">{fmt(t)}</text>')
        if xlabel:
            out.append(f'<text x="{w / 2:.0f}" y="{h - 6}" text-anchor="middle">{escape(xlabel)}</text>')
        if ylabel:
            out.append(
                f'<text transform="translate(12,{h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                f"{escape(ylabel)}</text>"
            )
        return out


def _svg(width: int, height: int, body: list[str], marks: int, name: str) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" data-marks="{marks}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">'
        + "".join(body)
        + "</svg>"
    )


def funnel(steps: list[dict], width: int = 760) -> str:
    """Rows kept (blue) and dropped (red) at every step, one horizontal bar each; reasons in the tooltip."""
    row_h, left, top = 22, 190, 28
    height = top + row_h * len(steps) + 34
    peak = max([s["rows_in"] for s in steps] + [1])
    scale = (width - left - 70) / peak
    body = [
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="title">'
        "Rows kept and dropped at each step</text>"
    ]
    marks = 0
    for i, s in enumerate(steps):
        y = top + i * row_h
        dropped = sum(s["dropped"].values())
        kept_w, drop_w = s["rows_out"] * scale, dropped * scale
        reasons = "; ".join(f"{r}: {n:,}" for r, n in s["dropped"].items()) or "none dropped"
        tip = escape(f"{s['label']}: {s['rows_in']:,} in, {s['rows_out']:,} out ({reasons})")
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(s["label"])}</text>')
        body.append(
            f'<rect class="mark" x="{left}" y="{y + 3}" width="{max(kept_w, 0.5):.1f}" height="{row_h - 6}" '
            f'fill="{BLUE}"><title>{tip}</title></rect>'
        )
        marks += 1
        if dropped:
            body.append(
                f'<rect class="mark" x="{left + kept_w:.1f}" y="{y + 3}" width="{max(drop_w, 1):.1f}" '
                f'height="{row_h - 6}" fill="{RED}"><title>{tip}</title></rect>'
            )
            marks += 1
        label = f"{s['rows_out']:,}" + (f"  -{dropped:,}" if dropped else "")
        body.append(f'<text x="{left + kept_w + drop_w + 4:.1f}" y="{y + 15}">{label}</text>')
    body.append(
        f'<text x="{left}" y="{height - 8}"><tspan fill="{BLUE}">&#9632;</tspan> kept  '
        f'<tspan fill="{RED}">&#9632;</tspan> dropped (hover a bar for the reasons)</text>'
    )
    return _svg(width, height, body, marks, "funnel")


def histogram(
    name: str, edges: list[float], pool: list[int], selected: list[int] | None, w: int = 250, h: int = 150
) -> str:
    """One score's distribution over the rows it was computed on (grey) and over the selected rows (blue)."""
    peak = max([*pool, *(selected or []), 1])
    f = Frame(w, h, edges[0], edges[-1], 0, peak, left=36, bottom=30, top=24)
    body = f.axes(name)
    marks = 0
    for series, color, label in ((pool, GREY, "scored"), (selected, BLUE, "selected")):
        if not series:
            continue
        for i, c in enumerate(series):
            if not c:
                continue
            x0, x1 = f.sx(edges[i]), f.sx(edges[i + 1])
            y = f.sy(c)
            inset = 0 if color == GREY else (x1 - x0) * 0.25
            tip = escape(f"{label}: {c:,} rows in [{fmt(edges[i])}, {fmt(edges[i + 1])})")
            bw = max(x1 - x0 - 2 * inset, 0.8)
            body.append(
                f'<rect class="mark" x="{x0 + inset:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                f'height="{f.sy(0) - y:.1f}" fill="{color}"><title>{tip}</title></rect>'
            )
            marks += 1
    return _svg(w, h, body, marks, f"hist:{name}")


def scatter(
    points: list[tuple[float, float, int, str]], title: str, width: int = 640, height: int = 480
) -> str:
    """A 2-D map: grey pool points, blue selected points on top; each point's tooltip shows its text."""
    if not points:
        return _svg(width, height, [], 0, "map")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    padx, pady = 0.05 * (max(xs) - min(xs) or 1), 0.05 * (max(ys) - min(ys) or 1)
    f = Frame(width, height, min(xs) - padx, max(xs) + padx, min(ys) - pady, max(ys) + pady)
    body = f.axes(title, "first principal component", "second principal component")
    marks = 0
    for selected in (0, 1):
        cls = "mark sel" if selected else "mark pool"
        color, r = (BLUE, 3.2) if selected else (GREY, 2.4)
        for x, y, s, text in points:
            if s != selected:
                continue
            body.append(
                f'<circle class="{cls}" cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="{r}" fill="{color}">'
                f"<title>{escape(text)}</title></circle>"
            )
            marks += 1
    return _svg(width, height, body, marks, "map")


def lines(
    series: dict[str, list[tuple[float, float, str]]],
    title: str,
    xlabel: str,
    ylabel: str,
    name: str,
    width: int = 640,
    height: int = 360,
    connect: bool = True,
) -> str:
    """Labelled points per series, joined by a line when ``connect`` (a curve or a table made visible)."""
    pts = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return _svg(width, height, [], 0, name)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    span = (max(ys) - min(ys)) or abs(max(ys)) or 1
    # Several series get a legend on the right; one series labels its points when they do not collide.
    legend = len(series) > 1
    right = 10 + 7 * max(len(k) for k in series) + 24 if legend else 16
    f = Frame(
        width,
        height,
        min(0, min(xs)),
        max(xs) * 1.08 or 1,
        min(ys) - 0.1 * span,
        max(ys) + 0.1 * span,
        right=right,
    )
    body = f.axes(title, xlabel, ylabel)
    label_points = not legend and len(pts) <= 12 and len({p[0] for p in pts}) == len(pts)
    marks = 0
    for k, (label, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        s = [p for p in s if p[1] is not None and math.isfinite(p[1])]
        if connect and len(s) > 1:
            d = " ".join(
                f"{'M' if i == 0 else 'L'}{f.sx(x):.1f},{f.sy(y):.1f}" for i, (x, y, _) in enumerate(s)
            )
            body.append(f'<path class="mark" d="{d}" fill="none" stroke="{color}" stroke-width="1.6"/>')
            marks += 1
        for x, y, point_label in s:
            tip = escape(f"{point_label or label}: {fmt(y)} at {fmt(x)}")
            body.append(
                f'<circle class="mark" cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="4.5" fill="{color}" '
                f'fill-opacity="0.85"><title>{tip}</title></circle>'
            )
            if point_label and label_points:
                body.append(f'<text x="{f.sx(x) + 7:.1f}" y="{f.sy(y) - 7:.1f}">{escape(point_label)}</text>')
            marks += 1
        if legend:
            body.append(
                f'<text x="{width - right + 12}" y="{f.top + 12 + 14 * k}" fill="{color}">'
                f"&#9679; {escape(label)}</text>"
            )
    return _svg(width, height, body, marks, name)
