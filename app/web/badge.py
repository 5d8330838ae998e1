"""A merchant's badge for product pages, in words in the reader's language, and as a small SVG."""

from __future__ import annotations

from html import escape

from app.merchants.profile import PublicFigures
from app.web.i18n import Formatter


def gives(figures: PublicFigures, fmt: Formatter) -> str:
    """What the shop gives, e.g. "5% of this shop's sales buy school supplies"."""
    if figures.rate_bps:
        return fmt.gettext("%(rate)s of this shop's sales buy school supplies") % {
            "rate": fmt.percent_bps(figures.rate_bps)
        }
    if figures.fixed_per_unit:
        first = figures.fixed_per_unit[0]
        return fmt.gettext("Every item sold here gives %(amount)s for school supplies") % {
            "amount": fmt.money(first.amount, first.currency)
        }
    return fmt.gettext("This shop gives part of its sales for school supplies")


def so_far(figures: PublicFigures, fmt: Formatter) -> str:
    """How many Love Packages it has paid for so far; a small number is not given exactly."""
    count = figures.packages_funded
    if isinstance(count, str):
        return fmt.gettext("fewer than 5 Love Packages so far")
    if count == 0:
        return fmt.gettext("its first Love Package is on its way")
    return fmt.ngettext("%(count)s Love Package so far", "%(count)s Love Packages so far", count) % {
        "count": fmt.count(count)
    }


def sentence(figures: PublicFigures, fmt: Formatter) -> str:
    return fmt.gettext("%(gives)s; %(so_far)s.") % {
        "gives": gives(figures, fmt),
        "so_far": so_far(figures, fmt),
    }


def svg(figures: PublicFigures, fmt: Formatter) -> str:
    """A 360 × 56 badge: the programme's name, what the shop gives, and the packages so far."""
    title = escape(fmt.gettext("Goods for Good"))
    line1 = escape(gives(figures, fmt))
    line2 = escape(so_far(figures, fmt))
    label = escape(sentence(figures, fmt))
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="360" height="56" viewBox="0 0 360 56" role="img" \
aria-label="{label}" lang="{escape(fmt.language)}">
<title>{label}</title>
<rect width="360" height="56" rx="8" fill="#0b7a5c"/>
<g fill="#ffffff" font-family="system-ui, 'Noto Sans CJK SC', 'Noto Sans', 'Segoe UI', sans-serif">
<text x="12" y="17" font-size="11" font-weight="700" opacity="0.85">{title}</text>
<text x="12" y="33" font-size="12.5" textLength="336" lengthAdjust="spacingAndGlyphs">{line1}</text>
<text x="12" y="49" font-size="12.5">{line2}</text>
</g>
</svg>
"""
