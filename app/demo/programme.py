"""The demo's programme: who takes part, and what happens to them. Plain data and pure functions of the seed, so
`--seed S` plans the same orders, amounts, refunds and shipment stories every time (the run's own ids aside)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

PLATFORM_NAME = "Demo Marketplace"
RECEIVER_PATH = "/g4g-demo/events"
# Rates in force for the run, base units (USD) per unit of each currency; set through the FX API every run.
FX_RATES = {"CNY": "0.1385", "JPY": "0.0066", "IDR": "0.000061", "KRW": "0.00071"}


@dataclass(frozen=True)
class Product:
    sku: str
    low: int
    high: int
    """Unit price range in minor units of the catalogue's currency."""


@dataclass(frozen=True)
class MerchantPlan:
    external_id: str
    name: str
    country: str
    rule: dict[str, Any]
    """The body of `PUT /v1/merchants/{id}/donation-rule`."""
    catalogue: dict[str, tuple[Product, ...]]
    """What it sells, per currency it sells in."""
    weight: int
    """How many of the orders are its, relatively."""


MERCHANTS: tuple[MerchantPlan, ...] = (
    MerchantPlan(
        "demo-tea-house",
        "Hangzhou Tea House",
        "CN",
        {"rate_bps": 200, "fixed_per_unit": [{"amount": 50, "currency": "CNY"}]},
        {
            "CNY": (Product("LONGJING-250G", 9_800, 32_000), Product("TEA-SET-6", 18_800, 68_000)),
            "USD": (Product("LONGJING-250G", 1_500, 4_500),),
        },
        weight=5,
    ),
    MerchantPlan(
        "demo-kyoto-ceramics",
        "Kyoto Ceramics",
        "JP",
        {"rate_bps": 300},
        {"JPY": (Product("CUP-RAKU", 2_400, 9_800), Product("BOWL-KIYOMIZU", 6_500, 28_000))},
        weight=3,
    ),
    MerchantPlan(
        "demo-batik-nusantara",
        "Batik Nusantara",
        "ID",
        {"rate_bps": 250, "fixed_per_unit": [{"amount": 100_000, "currency": "IDR"}]},
        {"IDR": (Product("BATIK-SHIRT", 15_000_000, 65_000_000), Product("SARONG", 9_000_000, 30_000_000))},
        weight=3,
    ),
    MerchantPlan(
        "demo-pacific-outfitters",
        "Pacific Outfitters",
        "US",
        {
            "rate_bps": 150,
            "fixed_per_unit": [{"amount": 25, "currency": "USD"}],
            # Gift cards give nothing: the sale that spends them does.
            "sku_overrides": [{"sku": "GIFT-CARD", "excluded": True}],
        },
        {"USD": (Product("RAIN-JACKET", 7_900, 24_900), Product("GIFT-CARD", 2_500, 10_000))},
        weight=4,
    ),
    MerchantPlan(
        "demo-seoul-beauty",
        "Seoul Beauty Lab",
        "KR",
        {"rate_bps": 250},
        {"KRW": (Product("SERUM-30ML", 18_000, 52_000), Product("MASK-10", 9_000, 25_000))},
        weight=2,
    ),
)


@dataclass(frozen=True)
class PartnerPlan:
    name: str
    country: str


PARTNERS: tuple[PartnerPlan, ...] = (
    PartnerPlan("Himalaya Express", "NP"),
    PartnerPlan("Mekong Freight", "KH"),
    PartnerPlan("Irrawaddy Logistics", "MM"),
)


@dataclass(frozen=True)
class SchoolPlan:
    name: str
    country: str
    region: str
    teacher: str
    phone: str
    """As dialled in the school's country."""
    students: int
    code_prefix: str
    gps: tuple[float, float]


SCHOOLS: tuple[SchoolPlan, ...] = (
    SchoolPlan(
        "Shree Janata Secondary School",
        "NP",
        "Bagmati",
        "Sita Sharma",
        "01-4412345",
        24,
        "NP-SJ",
        (27.671, 85.430),
    ),
    SchoolPlan(
        "Shree Saraswati Primary School",
        "NP",
        "Gandaki",
        "Ram Gurung",
        "061-521234",
        18,
        "NP-SS",
        (28.209, 83.986),
    ),
    SchoolPlan(
        "Wat Bo Primary School",
        "KH",
        "Siem Reap",
        "Sokha Chan",
        "023 881 234",
        22,
        "KH-WB",
        (13.357, 103.861),
    ),
    SchoolPlan(
        "Kampong Cham Primary School",
        "KH",
        "Kampong Cham",
        "Dara Kim",
        "012 345 678",
        16,
        "KH-KC",
        (11.993, 105.464),
    ),
    SchoolPlan(
        "Basic Education Primary School No. 4",
        "MM",
        "Yangon",
        "Aye Aye Mon",
        "01 254 123",
        20,
        "MM-B4",
        (16.840, 96.173),
    ),
    SchoolPlan(
        "Inle Lake Primary School",
        "MM",
        "Shan",
        "Khin Maung Win",
        "09 420 123 456",
        14,
        "MM-IL",
        (20.577, 96.912),
    ),
)

PACKAGE_KIND: dict[str, Any] = {
    "name": "Love Package: primary school",
    "contents": [
        {"item": "Exercise book", "quantity": 6},
        {"item": "Pencil", "quantity": 8},
        {"item": "Eraser", "quantity": 2},
        {"item": "Ruler", "quantity": 1},
        {"item": "Colour pencils (12)", "quantity": 1},
        {"item": "Backpack", "quantity": 1},
    ],
    "unit_cost": {"amount": 1500, "currency": "USD"},
    "countries": ["KH", "MM", "NP"],
    "grades": ["1", "2", "3", "4", "5", "6"],
}


def students_of(school: SchoolPlan) -> list[dict[str, str]]:
    """The school's roster: the same codes and grades on every run (a re-import changes nothing)."""
    grades = random.Random(school.code_prefix)  # the school's own, whatever the seed
    return [
        {"roster_code": f"{school.code_prefix}-{n:04d}", "grade": str(grades.randint(1, 6))}
        for n in range(1, school.students + 1)
    ]


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    amount: int


@dataclass(frozen=True)
class PlannedOrder:
    number: int
    merchant: str
    """The platform's id for the merchant (`external_id`)."""
    currency: str
    lines: tuple[Line, ...]
    resent: bool
    """The platform sends it again under a new webhook id (after a timeout, say): a duplicate, applied once."""
    refund: int | None
    """A partial refund of this many minor units."""
    cancelled: bool

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines)


def plan_orders(seed: int, count: int) -> list[PlannedOrder]:
    """`count` orders drawn from the seed: merchant, currency, lines, and what happens to each afterwards."""
    draw = random.Random(seed)
    weights = [m.weight for m in MERCHANTS]
    orders = []
    for number in range(1, count + 1):
        merchant = draw.choices(MERCHANTS, weights)[0]
        currency = draw.choice(sorted(merchant.catalogue))
        lines = []
        for product in draw.sample(
            merchant.catalogue[currency], draw.randint(1, len(merchant.catalogue[currency]))
        ):
            quantity = draw.choice((1, 1, 1, 2, 2, 3))
            lines.append(Line(product.sku, quantity, quantity * draw.randint(product.low, product.high)))
        fate = draw.random()
        subtotal = sum(line.amount for line in lines)
        refund = max(1, subtotal * draw.randint(10, 60) // 100) if fate < 0.08 else None
        orders.append(
            PlannedOrder(
                number=number,
                merchant=merchant.external_id,
                currency=currency,
                lines=tuple(lines),
                resent=draw.random() < 0.03,
                refund=refund,
                cancelled=0.08 <= fate < 0.12,
            )
        )
    return orders


@dataclass(frozen=True)
class ShipmentStory:
    """How one school's shipment travels: the detours it takes, and what the school finds in each box."""

    customs_hold: bool
    failed_attempt: bool
    outcomes: tuple[str, ...]
    """`accepted`, `damaged` or `missing`, one per box in the shipment's order."""


def shipment_story(seed: int, school: str, boxes: int) -> ShipmentStory:
    draw = random.Random(f"{seed}:{school}")
    customs = draw.random() < 0.4
    failed = draw.random() < 0.3
    outcomes = tuple(draw.choices(("accepted", "damaged", "missing"), (94, 4, 2))[0] for _ in range(boxes))
    return ShipmentStory(customs, failed, outcomes)
