"""The server-drawn charts show the figures they claim: bars in proportion, stacks that add up, a funnel that
narrows, and nothing drawn for a hidden count."""

from __future__ import annotations

import pytest

from app.web.charts import BAR_WIDTH, BarItem, Series, Table, bar_chart, funnel, nice_axis, stacked_columns

TABLE = Table("caption", ["a", "b"], [])


def test_bars_are_in_proportion_and_hidden_counts_draw_nothing() -> None:
    chart = bar_chart(
        "c",
        "t",
        [BarItem("big", 200, "200"), BarItem("half", 100, "100"), BarItem("hidden", None, "<5")],
        TABLE,
    )
    widths = {r.title.split(":")[0]: r.width for r in chart.rects}
    assert widths == {"big": BAR_WIDTH, "half": BAR_WIDTH / 2}
    assert [label.text for label in chart.labels] == ["big", "200", "half", "100", "hidden", "<5"]
    assert all(r.x + r.width <= chart.width for r in chart.rects)
    assert bar_chart("c", "t", [], TABLE).empty


def test_stacked_columns_add_up_on_a_labelled_axis() -> None:
    chart = stacked_columns(
        "c",
        "t",
        ["Jan", "Feb"],
        [Series("final", "s1", [300, 0]), Series("pledged", "s5", [100, 700])],
        str,
        TABLE,
    )
    jan = [r for r in chart.rects if r.title.startswith("Jan")]
    feb = [r for r in chart.rects if r.title.startswith("Feb")]
    assert [r.title for r in jan] == ["Jan · final: 300", "Jan · pledged: 100"]
    assert len(feb) == 1  # an empty series draws nothing
    jan_height, feb_height = sum(r.height for r in jan), sum(r.height for r in feb)
    assert jan_height / feb_height == pytest.approx(400 / 700)
    ticks = [label.text for label in chart.labels if label.css == "tick" and label.anchor == "end"]
    assert ticks == ["0", "200", "400", "600", "800"]  # the axis reaches past the tallest column
    assert [item.name for item in chart.legend] == ["final", "pledged"]
    assert stacked_columns("c", "t", ["Jan"], [Series("x", "s0", [0])], str, TABLE).empty


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (211_857, ["0", "50000", "100000", "150000", "200000", "250000"]),  # $2,118.57: to $2,500, not $4,000
        (4000, ["0", "1000", "2000", "3000", "4000"]),
        (7, ["0", "2", "4", "6", "8"]),
        (1, ["0", "1"]),
    ],
)
def test_the_value_axis_stops_at_the_next_round_step(top: int, ticks: list[str]) -> None:
    chart = stacked_columns("c", "t", ["Jan"], [Series("x", "s0", [top])], str, TABLE)
    assert [label.text for label in chart.labels if label.css == "tick" and label.anchor == "end"] == ticks
    step, count = nice_axis(top)
    assert (count - 1) * step < top <= count * step and count <= 5


def test_a_funnel_narrows_around_its_centre() -> None:
    chart = funnel("c", "t", [BarItem("raised", 1000, "10"), BarItem("pooled", 250, "2.5")], TABLE)
    raised, pooled = chart.rects
    assert raised.width == BAR_WIDTH and pooled.width == BAR_WIDTH / 4
    assert pooled.x + pooled.width / 2 == pytest.approx(raised.x + raised.width / 2)
    assert funnel("c", "t", [BarItem("raised", 0, "0")], TABLE).empty
