"""A receipt as the buyer reads it: each step of the timeline in words, in the reader's language, with dates."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from app.receipts.schemas import ReceiptOut, ReceiptPackage, TimelineStep
from app.web.i18n import Formatter


@dataclass(frozen=True, slots=True)
class StepView:
    step: str
    state: str  # "done", "next" or "later"
    title: str
    detail: str
    when: str


@dataclass(frozen=True, slots=True)
class PackageView:
    place: str
    grade: str
    share: str
    status: str


@dataclass(frozen=True, slots=True)
class ReceiptView:
    receipt: ReceiptOut
    amount: str
    steps: list[StepView]
    packages: list[PackageView]
    next_step: str | None
    next_detail: str | None


def place(fmt: Formatter, package: ReceiptPackage) -> str:
    if package.country is None:
        return "–"
    country = fmt.country(package.country)
    if package.region is None:
        return country
    return fmt.gettext("%(region)s, %(country)s") % {"region": package.region, "country": country}


@cache
def _titles(language: str) -> dict[str, str]:
    """The steps' names, as a receipt uses them: for a step done and for one to come alike (hence a context of
    their own: the same words elsewhere name stages of money)."""
    fmt = Formatter(language)
    return {
        "pledged": fmt.pgettext("receipt step", "Pledged"),
        "refunded": fmt.pgettext("receipt step", "Refunded"),
        "final": fmt.pgettext("receipt step", "Final"),
        "collected": fmt.pgettext("receipt step", "Collected"),
        "in_pool": fmt.pgettext("receipt step", "In the pool"),
        "packaged": fmt.pgettext("receipt step", "Packed into Love Packages"),
        "shipped": fmt.pgettext("receipt step", "Shipped"),
        "delivered": fmt.pgettext("receipt step", "Delivered"),
        "confirmed": fmt.pgettext("receipt step", "Confirmed by the school"),
    }


def _detail(fmt: Formatter, receipt: ReceiptOut, step: TimelineStep) -> str:
    """What the step means for this donation, done or still to come."""
    money = fmt.money
    total = len(receipt.packages)
    if step.step == "pledged":
        amount = money(receipt.donation.amount, receipt.donation.currency)
        return fmt.gettext("Your order pledged %(amount)s to school supplies.") % {"amount": amount}
    if step.step == "refunded":
        assert step.amount is not None
        amount = money(step.amount.amount, step.amount.currency)
        if receipt.net.amount == 0:
            return fmt.gettext("Refunded: the donation was reversed (%(amount)s).") % {"amount": amount}
        return fmt.gettext("Part of the order was refunded: %(amount)s of the donation was reversed.") % {
            "amount": amount
        }
    if step.step == "final":
        if step.done:
            return fmt.gettext("The return window has closed, so the donation is final.")
        return fmt.gettext("Final once the order's return window closes.")
    if step.step == "collected":
        if step.done:
            return fmt.gettext("The shop paid its donations to the programme.")
        return fmt.gettext("The shop is billed at the programme's next settlement after that, and pays then.")
    if step.step == "in_pool":
        if step.amount is not None:
            amount = money(step.amount.amount, step.amount.currency)
            return fmt.gettext("%(amount)s reached the pool that buys Love Packages.") % {"amount": amount}
        return fmt.gettext("Collected money goes into the pool that buys Love Packages.")
    if step.step == "packaged":
        if total:
            return fmt.ngettext(
                "Your donation is part of %(count)s Love Package of school supplies.",
                "Your donation is part of %(count)s Love Packages of school supplies.",
                total,
            ) % {"count": fmt.count(total)}
        return fmt.gettext(
            "Boxes are packed when the pool holds enough, at the next allocation for a school term."
        )
    if step.step == "shipped":
        if step.packages:
            return fmt.gettext("%(done)s of %(count)s handed to the logistics partner.") % {
                "done": fmt.count(step.packages),
                "count": fmt.count(total),
            }
        return fmt.gettext("The logistics partner picks the boxes up and takes them to the school.")
    if step.step == "delivered":
        delivered = [p for p in receipt.packages if p.delivered_at is not None]
        if delivered:
            first = delivered[0]
            return fmt.gettext("Delivered to a grade-%(grade)s class in %(place)s on %(date)s.") % {
                "grade": first.grade or "–",
                "place": place(fmt, first),
                "date": fmt.day(first.delivered_at) if first.delivered_at else "–",
            }
        return fmt.gettext("Delivery to a school usually takes a few weeks.")
    if step.done or step.packages:
        return fmt.gettext("The school confirmed it received the box.")
    return fmt.gettext("The school confirms it received the boxes.")


@cache
def _statuses(language: str) -> dict[str, str]:
    """A package's status, as the buyer reads it."""
    fmt = Formatter(language)
    return {
        "allocated": fmt.gettext("packed"),
        "shipped": fmt.gettext("on its way"),
        "delivered": fmt.gettext("delivered"),
        "accepted": fmt.gettext("received by the school"),
        "damaged": fmt.gettext("arrived damaged"),
        "missing": fmt.gettext("lost on the way"),
        "in_stock": fmt.gettext("back in stock for another student"),
    }


def receipt_view(receipt: ReceiptOut, fmt: Formatter) -> ReceiptView:
    titles = _titles(fmt.language)
    steps = []
    for step in receipt.timeline:
        if step.done:
            state, when = "done", fmt.day(step.at) if step.at else ""
        else:
            state = "next" if receipt.next is not None and receipt.next.step == step.step else "later"
            when = (
                fmt.gettext("expected by %(date)s") % {"date": fmt.day(step.expected_by)}
                if step.expected_by
                else ""
            )
        steps.append(StepView(step.step, state, titles[step.step], _detail(fmt, receipt, step), when))
    statuses = _statuses(fmt.language)
    packages = [
        PackageView(
            place=place(fmt, p),
            grade=p.grade or "–",
            share=fmt.gettext("%(share)s of a %(cost)s box")
            % {
                "share": fmt.money(p.share.amount, p.share.currency),
                "cost": fmt.money(p.cost.amount, p.cost.currency),
            },
            status=statuses.get(p.status, p.status),
        )
        for p in receipt.packages
    ]
    next_step = titles[receipt.next.step] if receipt.next else None
    next_detail = None
    if receipt.next is not None:
        [upcoming] = [s for s in steps if s.step == receipt.next.step]
        next_detail = upcoming.detail + (f" ({upcoming.when})" if upcoming.when else "")
    return ReceiptView(
        receipt=receipt,
        amount=fmt.money(receipt.net.amount, receipt.net.currency),
        steps=steps,
        packages=packages,
        next_step=next_step,
        next_detail=next_detail,
    )
