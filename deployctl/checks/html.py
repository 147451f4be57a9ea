"""Self-contained HTML reports: headings, tables and matplotlib figures inlined as SVG.

The page fetches nothing when opened (no scripts, no fonts, no images from elsewhere), so it can be
kept as a CI artifact and opened years later. Figures are drawn on `matplotlib.figure.Figure`
objects directly (no pyplot: no global state, no GUI backend).
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

from deployctl.checks.gates import Gate

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border: 1px solid #ccc; padding: .25rem .6rem; } th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.passed { color: #11702c; font-weight: 600; } .failed { color: #b3141b; font-weight: 600; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
"""


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    """(figure, axes) for one plot, outside pyplot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


class HtmlReport:
    """Build a page section by section, then `render()` it to one HTML string."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{_text(title)}</h1>"]
        if subtitle:
            self.parts.append(f"<p>{_text(subtitle)}</p>")

    def verdict(self, passed: bool, text: str) -> None:
        css = "passed" if passed else "failed"
        self.parts.append(f'<p class="{css}">{_text(text)}</p>')

    def table(self, heading: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        head = "".join(f"<th>{_text(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<h2>{_text(heading)}</h2><table><tr>{head}</tr>{body}</table>")

    def gates(self, gates: Sequence[Gate], heading: str = "Gates") -> None:
        rows = []
        for gate in gates:
            value = "not measured" if gate.value is None else f"{gate.value:g}{gate.unit}"
            verdict = "passed" if gate.passed else "failed"
            rows.append((gate.name, f"{gate.op} {gate.limit:g}{gate.unit}", value, verdict))
        head = "".join(f"<th>{c}</th>" for c in ("gate", "limit", "value", "result"))
        body = "".join(
            f'<tr><td>{_text(n)}</td><td class="num">{_text(limit)}</td><td class="num">{_text(v)}</td>'
            f'<td class="{r}">{r}</td></tr>'
            for n, limit, v, r in rows
        )
        self.parts.append(f"<h2>{_text(heading)}</h2><table><tr>{head}</tr>{body}</table>")

    def figure(self, heading: str, figure: Any) -> None:
        """Inline `figure` as SVG (text kept as paths: no font is needed to view it)."""
        import matplotlib

        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "path"}):
            figure.savefig(buffer, format="svg")
        svg = buffer.getvalue()
        svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: not allowed inside HTML
        self.parts.append(f"<h2>{_text(heading)}</h2><figure>{svg}</figure>")

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_text(self.title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
        )


def _text(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{_text(value)}</td>"
