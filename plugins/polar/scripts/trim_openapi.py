"""Cut Polar's OpenAPI document down to what the plugin uses, for the fake and the tests.

Keeps the endpoints the plugin calls, the webhooks it reads (and a few it ignores), every
component schema those reference (transitively) and the security schemes; drops descriptions,
examples and vendor extensions to keep the file small. The result is shipped as
``billing_gql_polar/openapi-2026-10.json``.

Usage::

    python plugins/polar/scripts/trim_openapi.py polar-openapi-2026-10.json \
        > plugins/polar/billing_gql_polar/openapi-2026-10.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

PATHS: dict[str, tuple[str, ...]] = {
    "/v1/checkouts/": ("post",),
    "/v1/checkouts/{id}": ("get",),
    "/v1/subscriptions/{id}": ("get", "patch", "delete"),
    "/v1/customer-sessions/": ("post",),
    "/v1/events/ingest": ("post",),
    "/v1/customers/{id}/state": ("get",),
    "/v1/customers/external/{external_id}/state": ("get",),
    "/v1/products/{id}": ("get",),
    "/v1/meters/{id}": ("get",),
    "/v1/refunds/": ("get", "post"),
}

WEBHOOKS = (
    "checkout.created",
    "checkout.updated",
    "checkout.expired",
    "customer.created",
    "customer.state_changed",
    "order.created",
    "order.updated",
    "order.paid",
    "order.refunded",
    "subscription.created",
    "subscription.updated",
    "subscription.active",
    "subscription.canceled",
    "subscription.uncanceled",
    "subscription.cycled",
    "subscription.revoked",
    "subscription.past_due",
    "subscription.paused",
    "subscription.resumed",
    "benefit_grant.created",
    "benefit_grant.updated",
    "benefit_grant.cycled",
    "benefit_grant.revoked",
    "refund.created",
    "refund.updated",
)

_DOCS = {"description", "examples", "example", "summary"}


def _strip(node: Any) -> Any:
    """``node`` without documentation strings and vendor extensions (a property that is
    *named* ``description`` is a schema, a dict, and stays)."""
    if isinstance(node, dict):
        return {
            key: _strip(value)
            for key, value in node.items()
            if not key.startswith("x-") and not (key in _DOCS and not isinstance(value, dict))
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                _refs(schemas[name], schemas, seen)
        for value in node.values():
            _refs(value, schemas, seen)
    elif isinstance(node, list):
        for value in node:
            _refs(value, schemas, seen)


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``spec`` the plugin needs."""
    schemas = spec["components"]["schemas"]
    paths: dict[str, Any] = {}
    for path, methods in PATHS.items():
        item = spec["paths"][path]
        paths[path] = {m: item[m] for m in methods}
        if "parameters" in item:
            paths[path]["parameters"] = item["parameters"]
    webhooks = {name: spec["webhooks"][name] for name in WEBHOOKS}
    seen: set[str] = set()
    _refs(paths, schemas, seen)
    _refs(webhooks, schemas, seen)
    # Operation and response objects keep their (required) descriptions; schemas lose theirs.
    return {
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "servers": [{"url": server["url"]} for server in spec["servers"]],
        "paths": _strip_extensions(paths),
        "webhooks": _strip_extensions(webhooks),
        "components": {
            "schemas": {name: _strip(schemas[name]) for name in sorted(seen)},
            "securitySchemes": spec["components"]["securitySchemes"],
        },
    }


def _strip_extensions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_extensions(v) for k, v in node.items() if not k.startswith("x-")}
    if isinstance(node, list):
        return [_strip_extensions(v) for v in node]
    return node


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    json.dump(trim(spec), sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
