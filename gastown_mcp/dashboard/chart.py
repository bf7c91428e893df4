"""Spend over time as an inline SVG drawn on the server: bars for each bucket's USD, a line for the running
total, and the town's USD budget as a dashed line when there is one. No script, no external asset."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from gastown_mcp.town.overview import SpendPoint

WIDTH, HEIGHT, PAD = 640, 180, 36


def spend_chart(points: Sequence[SpendPoint], budget_usd: float | None = None) -> Markup:
    if not points:
        return Markup('<p class="muted">no model spend recorded yet</p>')
    top = max([p.cumulative_usd for p in points] + [budget_usd or 0.0]) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(points), 1)

    def y(value: float) -> float:
        return PAD + inner_h - (value / top) * inner_h

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="USD spent over time, {len(points)} buckets">',
        f'<line class="axis" x1="{PAD}" y1="{PAD + inner_h}" x2="{PAD + inner_w}" y2="{PAD + inner_h}"/>',
    ]
    bar_w = max(step * 0.7, 1.0)
    for i, p in enumerate(points):
        x = PAD + i * step + (step - bar_w) / 2
        h = (p.cost_usd / top) * inner_h
        title = escape(f"{p.bucket}: ${p.cost_usd:.4f}, {p.tokens:,} tokens, ${p.cumulative_usd:.4f} so far")
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{PAD + inner_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
            f"<title>{title}</title></rect>"
        )
    line = " ".join(f"{PAD + i * step + step / 2:.1f},{y(p.cumulative_usd):.1f}" for i, p in enumerate(points))
    parts.append(f'<polyline class="total" points="{line}"/>')
    if budget_usd:
        by = y(budget_usd)
        parts.append(f'<line class="budget" x1="{PAD}" y1="{by:.1f}" x2="{PAD + inner_w}" y2="{by:.1f}"/>')
        parts.append(f'<text x="{PAD + inner_w}" y="{by - 4:.1f}" text-anchor="end">budget ${budget_usd:,.2f}</text>')
    parts.append(f'<text x="{PAD}" y="{PAD - 8}">${top:,.4f}</text>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 8}">{escape(points[0].bucket)}</text>')
    parts.append(f'<text x="{PAD + inner_w}" y="{HEIGHT - 8}" text-anchor="end">{escape(points[-1].bucket)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
