"""Charts drawn on the server as SVG (no script, nothing for the CSP to allow), each with the table of the
figures it shows. A builder returns the shapes; `templates/charts.html` draws them and the table beside.

Three kinds cover the pages: `bar_chart` (one value per row: money per currency, packages per country),
`stacked_columns` (series over time: money by stage per month) and `funnel` (steps that can only shrink: money
on its way to the pool; later allocated → shipped → delivered → accepted). A new section is a builder call in
`service.py` and `{{ chart(the_chart) }}` in a template."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Drawing units. An SVG scales to its box, so these are small enough that text stays readable on a phone.
BAR_WIDTH = 360
COLUMNS_WIDTH = 400
ROW = 48  # a bar row: its label and value on one line, the bar under them
BAR = 16


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    head: list[str]
    rows: list[list[str]]
    foot: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = "label"


@dataclass(frozen=True, slots=True)
class Rule:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str = "grid"


@dataclass(frozen=True, slots=True)
class LegendItem:
    name: str
    css: str


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    kind: str  # bars | columns | funnel: the page styles each kind's size
    title: str
    width: int
    height: int
    table: Table
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    empty: bool = False


@dataclass(frozen=True, slots=True)
class BarItem:
    label: str
    value: int | None
    """None: not shown (a hidden small count); the row keeps its label and `display`."""
    display: str
    css: str | None = None


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str
    values: list[int]


def _bar_rows(
    items: Sequence[BarItem], *, top: int, centred: bool, css: str
) -> tuple[list[Rect], list[Label], int]:
    rects, labels = [], []
    for row, item in enumerate(items):
        y = row * ROW
        labels.append(Label(0, y + 17, item.label))
        labels.append(Label(BAR_WIDTH, y + 17, item.display, "end", "value"))
        length = BAR_WIDTH * (item.value or 0) / top if top else 0
        if item.value:
            x = (BAR_WIDTH - length) / 2 if centred else 0
            rects.append(
                Rect(x, y + 24, max(length, 2), BAR, item.css or css, f"{item.label}: {item.display}")
            )
    return rects, labels, len(items) * ROW


def bar_chart(chart_id: str, title: str, items: Sequence[BarItem], table: Table, *, css: str = "s0") -> Chart:
    """One horizontal bar per item, longest for the largest value; a value of None draws no bar."""
    top = max((item.value or 0 for item in items), default=0)
    rects, labels, height = _bar_rows(items, top=top, centred=False, css=css)
    return Chart(chart_id, "bars", title, BAR_WIDTH, height, table, rects, labels, empty=not items)


def nice_axis(top: int, most_ticks: int = 5) -> tuple[int, int]:
    """The value axis for a largest value of `top` (> 0): a round step (1, 2, 2.5 or 5 times a power of ten, whole
    units only) and how many of them, at most `most_ticks`, reach just above it — $2,118 gets 0 to 2,500 in steps
    of 500, not 0 to 4,000."""
    scale = 1
    while True:
        for multiple in (10, 20, 25, 50):
            step = multiple * scale
            if step % 10:
                continue
            step //= 10
            ticks = -(-top // step)
            if ticks <= most_ticks:
                return step, max(ticks, 1)
        scale *= 10


def stacked_columns(
    chart_id: str,
    title: str,
    periods: Sequence[str],
    series: Sequence[Series],
    display: Callable[[int], str],
    table: Table,
) -> Chart:
    """One column per period, its series stacked bottom-up in the order given, on a labelled value axis."""
    width, height, axis, bottom, top_pad = COLUMNS_WIDTH, 260, 84, 28, 10
    plot_w, plot_h = width - axis, height - bottom - top_pad
    totals = [sum(s.values[i] for s in series) for i in range(len(periods))]
    top = max(totals, default=0)
    step, ticks = nice_axis(top) if top > 0 else (1, 4)
    ceiling = step * ticks
    rects, labels, rules = [], [], []
    for tick in range(ticks + 1):
        y = top_pad + plot_h - plot_h * tick / ticks
        rules.append(Rule(axis, y, width, y, "grid" if tick else "axis"))
        labels.append(Label(axis - 6, y + 4, display(step * tick), "end", "tick"))
    slot = plot_w / max(len(periods), 1)
    column = min(slot * 0.7, 56)
    every = max(1, -(-len(periods) // 6))  # at most 6 period labels, so they never overlap
    for i, period in enumerate(periods):
        x = axis + slot * i + (slot - column) / 2
        y = top_pad + plot_h
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / ceiling
            y -= h
            rects.append(Rect(x, y, column, h, s.css, f"{period} · {s.name}: {display(value)}"))
        if i % every == 0:
            labels.append(Label(x + column / 2, height - 8, period, "middle", "tick"))
    return Chart(
        chart_id,
        "columns",
        title,
        width,
        height,
        table,
        rects,
        labels,
        rules,
        [LegendItem(s.name, s.css) for s in series],
        empty=top == 0,
    )


def funnel(chart_id: str, title: str, steps: Sequence[BarItem], table: Table, *, css: str = "s0") -> Chart:
    """Steps as centred bars, each as wide as its share of the first step."""
    first = steps[0].value if steps and steps[0].value else 0
    rects, labels, height = _bar_rows(steps, top=first, centred=True, css=css)
    return Chart(chart_id, "funnel", title, BAR_WIDTH, height, table, rects, labels, empty=first == 0)
