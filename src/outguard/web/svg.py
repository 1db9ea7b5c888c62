"""Charts as inline SVG, drawn on the server: a sparkline and a horizontal bar chart.

Place in the data flow: the routes of `outguard.web.app` pass figures in, the templates place
the returned markup. No script draws anything (the page's CSP allows only its own file), and
every label is escaped here, since the templates mark the SVG as safe: a process path or a
name can hold `<`. Colours are presentation attributes, not style attributes (CSP).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def sparkline(values: Sequence[int], *, width: int = 160, height: int = 28,
              label: str = "") -> Markup:
    """A polyline of `values` (oldest first), scaled to the largest; flat when all are 0."""
    title = escape(label)
    if len(values) < 2:
        return Markup(f'<svg class="spark" width="{width}" height="{height}" role="img"'
                      f' aria-label="{title}"><title>{title}: no samples yet</title></svg>')
    top = max(values) or 1
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{title}">'
        f"<title>{title}: {sum(values)} packets, at most {max(values)} per sample</title>"
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{points}"/></svg>')


def bars(rows: Sequence[tuple[str, int]], *, width: int = 640, bar: int = 18,
         label_width: int = 320) -> Markup:
    """One bar per (label, value), longest first as given; the label and value beside it."""
    if not rows:
        return Markup('<p class="empty">nothing blocked in this window</p>')
    top = max(v for _l, v in rows) or 1
    room = width - label_width - 70
    height = len(rows) * (bar + 6) + 4
    out = [f'<svg class="bars" width="{width}" height="{height}" role="img"'
           f' aria-label="bar chart">']
    for i, (text, value) in enumerate(rows):
        y = 2 + i * (bar + 6)
        length = max(1.0, value / top * room)
        shown = text if len(text) <= 48 else text[:22] + "…" + text[-24:]
        out.append(
            f'<g><title>{escape(text)}: {value}</title>'
            f'<text x="{label_width - 6}" y="{y + bar - 5}" text-anchor="end"'
            f' font-size="12">{escape(shown)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}"'
            f' fill="#c0392b"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + bar - 5}" font-size="12">'
            f"{value}</text></g>")
    out.append("</svg>")
    return Markup("".join(out))
