"""The OpenAPI document as clients see it: every error documented as RFC 9457 problem+json, and every created
resource linked to the operations that take its id."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.core.errors import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `type` is stable per kind of error.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "For 422: each invalid field.",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    "400": "The body could not be read as JSON",
    "401": "Missing, unknown or revoked API key (webhooks: signature not verified)",
    "403": "The key's role may not call this",
    "404": "No such resource, or not the caller's",
    "409": "Conflicts with existing state",
    "413": "The body is larger than this endpoint accepts",
    "422": "Invalid body or parameters",
    "429": "Too many wrong API keys from this address or with this key's prefix; wait `Retry-After` seconds",
    "503": "Not ready",
}


def _problem(code: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[code],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if code == "429":
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        }
    return response


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
            description=app.description,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                # Schemas an operation documents by hand (e.g. a webhook body verified before parsing).
                schemas.update(operation.pop("x-component-schemas", {}))
                responses = operation["responses"]
                codes = set()
                if operation.get("parameters") or operation.get("requestBody"):
                    codes.add("422")
                if operation.get("requestBody"):
                    codes |= {"400", "413"}
                if operation.get("security"):
                    codes |= {"401", "403", "429"}
                if path.startswith("/v1/webhooks/"):
                    codes.add("401")  # signed instead of authenticated
                if path.startswith("/v1/"):
                    codes.add("404")
                if method in ("post", "put"):
                    codes.add("409")
                if "503" in responses:
                    codes.add("503")
                for code in codes:
                    responses[code] = _problem(code)
        _link_created_resources(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_PATH_PARAMETER = re.compile(r"^\{([^{}]+)\}$")
_CREATED = ("201", "202")


def _link_created_resources(document: dict[str, Any]) -> None:
    """OpenAPI links from each `POST /collection` that answers with a new resource's `id` to every operation
    under `/collection/{param}`: the id fills `{param}`, the request's own path parameters fill the others.
    Clients (and schemathesis's stateful phase) follow them: create, then read, update, delete."""
    paths: dict[str, dict[str, Any]] = document.get("paths", {})
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for path, operations in paths.items():
        create = operations.get("post")
        if create is None:
            continue
        for code in _CREATED:
            response = create["responses"].get(code)
            if response is None or "id" not in _response_properties(response, schemas):
                continue
            links = {}
            for target_path, target_operations in paths.items():
                parameter = _item_parameter(path, target_path)
                if parameter is None:
                    continue
                given = set(re.findall(r"\{([^{}]+)\}", path))
                needed = set(re.findall(r"\{([^{}]+)\}", target_path)) - {parameter}
                if not needed <= given:
                    continue  # another id the create operation doesn't know
                for target in target_operations.values():
                    values = {parameter: "$response.body#/id"}
                    values.update({name: f"$request.path.{name}" for name in sorted(needed)})
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": values,
                        "description": f"`{parameter}` is the `id` of the resource just created",
                    }
            if links:
                response["links"] = links


def _item_parameter(collection: str, path: str) -> str | None:
    """`merchant_id` for `/v1/merchants` and `/v1/merchants/{merchant_id}/billing`; otherwise None."""
    if not path.startswith(collection + "/"):
        return None
    segment = path[len(collection) + 1 :].split("/", 1)[0]
    match = _PATH_PARAMETER.match(segment)
    return match.group(1) if match else None


def _response_properties(response: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.removeprefix("#/components/schemas/"), {})
    properties: dict[str, Any] = schema.get("properties", {})
    return properties
