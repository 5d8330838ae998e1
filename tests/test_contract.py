"""The committed OpenAPI document is the contract: it matches the app, and the running service keeps it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from alembic import command
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CHECKS, load_all_checks, not_a_server_error
from schemathesis.core.parameters import ParameterLocation

from app.core.errors import PROBLEM_BASE
from app.core.migrations import alembic_config
from app.core.money import MAX_ORDER_MINOR_UNITS
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import DATA_KEY
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import roster_code

OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
COMMITTED = json.loads(OPENAPI.read_text())


def test_committed_openapi_matches_the_app(tmp_path: Path) -> None:
    app = create_app(Settings(database_url="postgresql://unused/db", data_key=DATA_KEY, data_dir=tmp_path))
    assert app.openapi() == COMMITTED, "openapi/openapi.json is stale: run `make openapi` and commit it"


def test_operation_ids_are_stable_names() -> None:
    ids = [op["operationId"] for ops in COMMITTED["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(op_id.replace("_", "").isalpha() and op_id.islower() for op_id in ids)


def test_created_resources_link_to_what_takes_their_id() -> None:
    def links(path: str, code: str) -> dict[str, Any]:
        return dict(COMMITTED["paths"][path]["post"]["responses"][code].get("links", {}))

    merchant = links("/v1/merchants", "201")
    assert merchant["get_merchant"]["parameters"] == {"merchant_id": "$response.body#/id"}
    assert {"set_donation_rule", "list_merchant_donations", "get_billing_profile"} <= set(merchant)
    assert {"get_webhook_endpoint", "update_webhook_endpoint", "delete_webhook_endpoint"} <= set(
        links("/v1/webhook-endpoints", "201")
    )
    assert set(links("/v1/settlement-runs", "202")) == {"get_settlement_run"}
    # A dry run stores nothing, so its 200 links nowhere; an operation the new id can't fill isn't linked.
    assert links("/v1/allocation-runs", "200") == {}
    assert "complete_billing_setup_intent" not in merchant


def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises if autogenerate would produce any change


@pytest.fixture(scope="module")
def live_api(pg_server: TestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import asyncio

    name = f"{pg_server.prefix}_contract"
    url = asyncio.run(pg_server.create_database(name, template=pg_server.template))
    tmp = tmp_path_factory.mktemp("contract")
    env = g4g_env(
        DATABASE_URL=url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp),
        STRIPE_WEBHOOK_SECRET="whsec_fuzz",
        # Schemathesis sends wrong keys on purpose, hundreds a minute, and expects each one's 401.
        G4G_AUTH_FAILURES_PER_ADDRESS="1000000",
        G4G_AUTH_FAILURES_PER_KEY="1000000",
    )
    token = run_g4g("create-api-key", "--role", "admin", "--name", "schemathesis", env=env).stdout.strip()
    server = LiveServer(env, tmp / "serve.log")
    try:
        platform = httpx.post(
            server.url + "/v1/platforms", json={"name": "Fuzz"}, headers=_auth(token)
        ).json()
        partner = httpx.post(
            server.url + "/v1/logistics-partners", json={"name": "Fuzz freight"}, headers=_auth(token)
        ).json()
        yield {
            "base_url": server.url,
            "token": token,
            "platform_id": platform["id"],
            "partner_id": partner["id"],
        }
    finally:
        server.stop()
        asyncio.run(pg_server.drop_database(name))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Its own copy of the document: the stateful phase adds the links it infers to the schema it was given.
schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))


def test_every_check_is_on() -> None:
    """`call_and_validate` and the state machine run the checks the configuration enables: all of them, so a
    schemathesis.toml that turns one off fails here rather than passing quietly."""
    load_all_checks()
    names = [check.__name__ for check in CHECKS.get_all()]
    for operation in (None, schema["/v1/merchants"]["POST"]):
        for phase in (None, "fuzzing", "stateful"):
            config = schema.config.checks_config_for(operation=operation, phase=phase)
            assert [n for n in names if not config.get_by_name(name=n).enabled] == []
    assert {"positive_data_acceptance", "negative_data_rejection", "use_after_free"} <= set(names)
    assert {"ensure_resource_availability", "ignored_auth", "missing_required_header"} <= set(names)


_fuzz = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


@schema.parametrize()
@_fuzz
def test_api_conforms_with_an_admin_key(
    case: schemathesis.Case, live_api: dict[str, str], request: pytest.FixtureRequest
) -> None:
    request.node.uses_postgres = True
    _meet_rules_the_schema_cannot_state(case, live_api["platform_id"], live_api["partner_id"])
    headers = _admin_headers(case, live_api["token"])
    response = case.call(base_url=live_api["base_url"], headers=headers)
    case.validate_response(
        response,
        headers=headers,
        excluded_checks=_checks_this_deployment_cannot_pass(response),
        transport_kwargs={"base_url": live_api["base_url"], "headers": headers},
    )


def _checks_this_deployment_cannot_pass(response: schemathesis.Response) -> list[Any]:
    """The service under test has no Stripe, on purpose (no network here): an operation that needs it answers
    its documented 503 `stripe-not-configured`, which is right for this deployment and no server error. Any
    other 5xx still fails `not_a_server_error`."""
    if response.status_code == 503 and _problem_type(response) == PROBLEM_BASE + "stripe-not-configured":
        return [not_a_server_error]
    return []


def _problem_type(response: schemathesis.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None


def _admin_headers(case: schemathesis.Case, token: str) -> dict[str, str] | None:
    # A case whose headers were made invalid on purpose (e.g. Authorization left out) is sent as generated.
    headers_mangled = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    return None if headers_mangled else _auth(token)


def _unique_by(items: list[Any], field: str) -> list[Any]:
    seen: set[Any] = set()
    kept = []
    for item in items:
        key = json.dumps(item.get(field), sort_keys=True, default=str) if isinstance(item, dict) else None
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _meet_rules_the_schema_cannot_state(case: schemathesis.Case, platform_id: str, partner_id: str) -> None:
    """Rules JSON Schema can't express (a field required for one role, one amount per currency, a time not in
    the past) are enforced with a 422 the fuzzer would count as "valid data rejected". Bring a generated case
    within them; anything else it sends goes out as generated. (Schemathesis re-checks a modified case.)"""
    label = case.operation.label
    invalid = (
        {where for where, part in case.meta.components.items() if part.mode.is_negative}
        if case.meta
        else set()
    )
    if invalid - {ParameterLocation.HEADER}:
        return  # a body, query or path invalid on purpose: sent as generated, and must be refused
    # Only a header may be invalid (or none): the body and query still have to meet the rules, or a case whose
    # header the test then replaces (`Idempotency-Key`, stateful phase) would go out valid but with, say, a
    # logistics partner that doesn't exist, and its 422 would count as valid data refused.
    if label in ("POST /v1/merchants", "POST /v1/quotes") and isinstance(case.body, dict):
        if case.body.get("platform_id") is None:
            case.body["platform_id"] = platform_id
    if (
        label == "POST /v1/quotes"
        and isinstance(case.body, dict)
        and isinstance(case.body.get("items"), list)
    ):
        # Each line's amount is bounded in the schema; their total (at most MAX_ORDER_MINOR_UNITS) is a sum
        # JSON Schema can't state: keep the lines within it.
        budget = MAX_ORDER_MINOR_UNITS
        for line in case.body["items"]:
            if isinstance(line, dict) and isinstance(line.get("amount"), int | float):
                line["amount"] = min(line["amount"], budget)
                budget -= line["amount"]
    if label == "POST /v1/settlement-runs" and isinstance(case.body, dict):
        case.body.pop("as_of", None)  # never in the future: the fuzzer can't know "now"
    if label == "GET /v1/orders/{order_id}" and "platform_id" not in (case.query or {}):
        case.query = {**(case.query or {}), "platform_id": platform_id}
    if label == "PUT /v1/merchants/{merchant_id}/donation-rule" and isinstance(case.body, dict):
        case.body.pop("effective_from", None)
        if isinstance(case.body.get("fixed_per_unit"), list):
            case.body["fixed_per_unit"] = _unique_by(case.body["fixed_per_unit"], "currency")
        if isinstance(case.body.get("sku_overrides"), list):
            overrides = _unique_by(case.body["sku_overrides"], "sku")
            for override in overrides:
                if not isinstance(override, dict):
                    continue
                if override.get("excluded"):
                    override.pop("rate_bps", None)
                    override.pop("fixed_per_unit", None)
                elif override.get("rate_bps") is None and override.get("fixed_per_unit") is None:
                    override["rate_bps"] = 0
                if isinstance(override.get("fixed_per_unit"), list):
                    override["fixed_per_unit"] = _unique_by(override["fixed_per_unit"], "currency")
            case.body["sku_overrides"] = overrides
    if label in ("POST /v1/package-kinds", "PUT /v1/package-kinds/{kind_id}") and isinstance(case.body, dict):
        if isinstance(case.body.get("unit_cost"), dict):
            case.body["unit_cost"]["currency"] = "USD"  # the base currency, a setting
        if isinstance(case.body.get("contents"), list):
            items = [i for i in case.body["contents"] if isinstance(i, dict)]
            for item in items:
                item["item"] = str(item.get("item", "")).casefold()
            case.body["contents"] = _unique_by(items, "item")
    if label == "POST /v1/schools/{school_id}/students" and case.media_type == "text/csv":
        # The CSV's grammar (RFC 4180 quoting, the two columns in any order and case, each code once) is more
        # than a JSON Schema `pattern` can say without refusing files the service reads: send a well-formed one.
        case.body = f"roster_code,grade\n{roster_code()},3\n"
    if label in ("POST /v1/schools", "PATCH /v1/schools/{school_id}") and isinstance(case.body, dict):
        if label == "POST /v1/schools" or "logistics_partner_id" in case.body:
            case.body["logistics_partner_id"] = partner_id  # must exist
        contact = case.body.get("teacher_contact")
        if isinstance(contact, dict):
            # A real number and a deliverable-looking address, not just their shapes.
            if contact.get("phone") is not None:
                contact["phone"] = "+977 1 4412345"
            if contact.get("email") is not None:
                contact["email"] = "teacher@example.org"


@schema.parametrize()
@_fuzz
def test_api_conforms_without_credentials(
    case: schemathesis.Case, live_api: dict[str, str], request: pytest.FixtureRequest
) -> None:
    request.node.uses_postgres = True
    case.call_and_validate(base_url=live_api["base_url"])


# The stateful phase: sequences that follow the document's links (create → read, update, list, delete) and the
# ones schemathesis infers, every check after every step, including those that need the sequence
# (`use_after_free`: a deleted resource answers 404; `ensure_resource_availability`: a created one is there).
_STATEFUL_SCENARIOS = 60
_STATEFUL_STEPS = 10


def _stateful_schema() -> schemathesis.schemas.BaseSchema:
    """The document plus links into request bodies: a new platform's id as the `platform_id` of a merchant.
    The document's own links fill path parameters only, the one reading every OpenAPI tool shares; a link's
    object `requestBody` holding expressions is schemathesis's reading (merged into the generated body), and
    its inference misses this one (it looks for a `Platform` schema; ours is `PlatformWithSecret`)."""
    document = json.loads(OPENAPI.read_text())
    created = document["paths"]["/v1/platforms"]["post"]["responses"]["201"]
    created["links"]["create_merchant_on_it"] = {
        "operationId": "create_merchant",
        "requestBody": {"platform_id": "$response.body#/id"},
    }
    return schemathesis.openapi.from_dict(document)


def test_api_keeps_its_word_across_linked_calls(
    live_api: dict[str, str], request: pytest.FixtureRequest
) -> None:
    request.node.uses_postgres = True
    base_url, token = live_api["base_url"], live_api["token"]
    followed: list[str] = []  # linked steps that reached a resource made earlier in the scenario

    class Scenario(_stateful_schema().as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            _meet_rules_the_schema_cannot_state(case, live_api["platform_id"], live_api["partner_id"])
            # Every step is a new request: a generated `Idempotency-Key` would repeat in a later scenario (the
            # draws are derandomized), making it a retry, which a call that shows a secret once answers with a
            # 409 the first run didn't get; Hypothesis then sees the same draws behave differently. Retries are
            # tested on their own (tests/core/test_idempotency.py).
            for name in list(case.headers or {}):
                if name.lower() == "idempotency-key":
                    case.headers[name] = uuid.uuid4().hex

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base_url, "headers": _admin_headers(case, token)}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            if self.recorder.find_parent(case_id=case.id) is not None and response.status_code < 300:
                followed.append(case.operation.label)

        def validate_response(
            self,
            response: schemathesis.Response,
            case: schemathesis.Case,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            # The key is passed as the caller's own header, so `ignored_auth` knows it is a real one and probes
            # the operation without it and with a wrong one.
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=_checks_this_deployment_cannot_pass(response),
                headers=kwargs.get("headers"),
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    Scenario.run(
        settings=settings(
            max_examples=_STATEFUL_SCENARIOS,
            stateful_step_count=_STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            # No shrinking: a shrink replays a scenario against a server whose state has moved on since (ids,
            # conflicts), so its steps can draw differently and Hypothesis reports that as flaky generation
            # rather than the failure found. A failing scenario is reported as found, with every step.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        )
    )
    # Not a vacuous pass: scenarios did reach resources they had created (links resolved, ids real).
    assert len(followed) >= _STATEFUL_SCENARIOS // 4, followed
