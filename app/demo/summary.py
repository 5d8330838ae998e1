"""The closing summary: the programme's money by stage and currency (from `GET /v1/funds`), what this run did,
the events the platform received, and where to look next."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from iso4217 import Currency
from rich.console import Console
from rich.table import Table

STAGES = ("pledged", "final", "billed", "collected", "reversed")


def format_amount(amount: int, currency: str) -> str:
    """Minor units as the currency's amount: 196 CNY → `1.96`, 2958 JPY → `2,958`."""
    exponent = Currency(currency).exponent or 0
    return f"{Decimal(amount).scaleb(-exponent):,.{exponent}f}"


def format_money(amount: int, currency: str) -> str:
    return f"{format_amount(amount, currency)} {currency}"


@dataclass
class Summary:
    base_url: str
    seed: int
    run_tag: str
    term: str
    orders_planned: int
    platform_id: str = ""
    merchants: dict[str, str] = field(default_factory=dict)
    """Our ids (`mer_…`) by the platform's ids for them."""
    orders_applied: int = 0
    duplicates: int = 0
    refunds: int = 0
    cancellations: int = 0
    settlement_run: str | None = None
    statements: list[dict[str, Any]] = field(default_factory=list)
    carried_forward: int = 0
    allocation_run: str | None = None
    package_cost: dict[str, Any] | None = None
    packages: int = 0
    students_served: int = 0
    students_waiting: int = 0
    pool_before: dict[str, Any] | None = None
    money_spent: dict[str, Any] | None = None
    shipments: int = 0
    shipments_delivered: int = 0
    boxes: dict[str, int] = field(default_factory=dict)
    """This run's packages by status, as `GET /v1/packages?run_id=` answers."""
    events_sent: int = 0
    """Deliveries the service lists for the platform's endpoint."""
    events_received: int = 0
    events_verified: dict[str, int] = field(default_factory=dict)
    funds: dict[str, Any] = field(default_factory=dict)
    """`GET /v1/funds` at the end of the run."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sign_in_key: str = field(default="", repr=False)
    """A merchant's key for the dashboard: shown on a terminal only, never written anywhere."""

    def as_json(self) -> dict[str, Any]:
        figures = asdict(self)
        del figures["sign_in_key"]
        return figures

    def render(self, console: Console) -> None:
        funds = self.funds
        console.print()
        console.rule("[bold]Goods for Good: the demo programme")
        table = Table(title="The programme's money by stage and currency (GET /v1/funds)")
        table.add_column("currency")
        for stage in STAGES:
            table.add_column(stage, justify="right")
        for row in funds.get("stages", []):
            table.add_row(row["currency"], *(format_amount(row[s], row["currency"]) for s in STAGES))
        console.print(table)
        packaged = funds.get("packages", {})
        if funds:
            console.print(
                f"Pool: [bold]{_money(funds['pool'])}[/bold]    in Love Packages: {_money(packaged['allocated'])} "
                f"(in transit {_money(packaged['in_transit'])}, delivered {_money(packaged['delivered'])}, "
                f"written off {_money(packaged['written_off'])}, in stock {_money(packaged['in_stock'])})"
            )
            console.print(
                "Collected money went into the pool, converted at the FX rates; what the pool no longer holds "
                "is the money in Love Packages (the line above)."
            )
        console.print()
        console.print(f"[bold]This run[/bold] (seed {self.seed}, tag {self.run_tag}, {self.seconds} s)")
        lines = [
            f"orders: {self.orders_applied} applied of {self.orders_planned} planned, {self.duplicates} resent "
            f"as duplicates, {self.refunds} partial refunds, {self.cancellations} cancellations",
            f"statements: {len(self.statements)} paid by bank transfer"
            + (f", {self.carried_forward} carried forward" if self.carried_forward else ""),
            f"Love Packages: {self.packages}, students reached: {self.students_served} "
            f"({self.students_waiting} still waiting), term {self.term}"
            + (f", {_money(self.money_spent)} spent" if self.money_spent else ""),
            f"shipments: {self.shipments_delivered} of {self.shipments} delivered; boxes "
            + (", ".join(f"{n} {status}" for status, n in sorted(self.boxes.items())) or "none"),
            f"events to the platform's endpoint: {self.events_sent} sent, {self.events_received} received, "
            f"{sum(self.events_verified.values())} verified ("
            + ", ".join(f"{n} {t}" for t, n in sorted(self.events_verified.items()))
            + ")",
        ]
        for line in lines:
            console.print(f"  • {line}")
        for note in self.notes:
            console.print(f"  [yellow]! {note}[/yellow]")
        console.print()
        console.print("[bold]Look at[/bold]")
        console.print(f"  {self.base_url}/            the public transparency page")
        console.print(f"  {self.base_url}/merchant    a merchant's dashboard")
        if self.sign_in_key:
            console.print(f"  sign in as Hangzhou Tea House with the key [bold]{self.sign_in_key}[/bold]")
        else:
            console.print("  (a merchant key to sign in with is made and shown only when run on a terminal)")


def _money(money: dict[str, Any] | None) -> str:
    return format_money(money["amount"], money["currency"]) if money else "-"
