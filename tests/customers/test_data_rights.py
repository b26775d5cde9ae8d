"""Data rights over GraphQL: exportCustomerData (everything held, as JSON) and deleteCustomer
(personal data erased, financial records kept anonymized, sessions revoked; refused while a
subscription is live)."""

from __future__ import annotations

from typing import Any

from billing_helpers import (
    CANCEL,
    RECORD,
    USER_ERRORS,
    checkout_ok,
    make_customer,
    make_usd_plan,
    meter,
    session_for,
    subscribe,
)

from billing_gql.testing import ApiClient

EXPORT = """query($id: ID!) { exportCustomerData(customerId: $id) }"""
DELETE = f"""mutation($id: ID!) {{ deleteCustomer(customerId: $id) {{
  customer {{ id externalId email name country currency metadata deletedAt }} {USER_ERRORS} }} }}"""
CUSTOMER = """query($id: ID!) { customer(id: $id) {
  id externalId email name country metadata deletedAt } }"""
PAYMENTS = (
    """query($c: ID) { payments(customerId: $c) { nodes { id amount { amount currency } } } }"""
)


async def _customer_with_history(api: ApiClient) -> tuple[str, dict[str, Any]]:
    await make_usd_plan(api, "pro")
    await make_usd_plan(api, "extra")
    customer = await make_customer(
        api, "usr_gone", email="ann@example.com", name="Ann", country="US", metadata={"k": "v"}
    )
    sub = await subscribe(api, customer, "pro")
    await meter(api, "calls")
    events = [{"id": f"e{i}", "meter": "calls", "customerId": customer} for i in range(3)]
    await api.admin(RECORD, {"input": {"events": events}})
    return customer, sub


async def test_export_holds_everything_about_the_customer(api: ApiClient) -> None:
    customer, sub = await _customer_with_history(api)
    await session_for(api, customer)
    data = (await api.admin(EXPORT, {"id": customer}))["exportCustomerData"]
    assert data["customer"]["email"] == "ann@example.com"
    assert data["customer"]["metadata"] == {"k": "v"}
    assert [s["id"] for s in data["subscriptions"]] == [sub["id"]]
    assert len(data["checkouts"]) == 1 and data["checkouts"][0]["status"] == "COMPLETED"
    assert [p["amount_minor"] for p in data["payments"]] == [2900]
    assert data["usage"] == [
        {
            "meter": "calls",
            "events": 3,
            "total": "3",
            "first": data["usage"][0]["first"],
            "last": data["usage"][0]["last"],
        }
    ]
    assert len(data["sessions"]) == 1 and set(data["sessions"][0]) == {
        "id",
        "created_at",
        "expires_at",
    }
    assert data["webhookDeliveries"] == []
    assert (await api.admin(EXPORT, {"id": "00000000-0000-0000-0000-000000000000"}))[
        "exportCustomerData"
    ] is None


async def test_export_and_delete_are_admin_only(api: ApiClient) -> None:
    customer = await make_customer(api, "usr_self")
    token = await session_for(api, customer)
    export = await api.gql(EXPORT, {"id": customer}, token=token)
    assert export.error_codes == ["FORBIDDEN"]
    delete = await api.gql(DELETE, {"id": customer}, token=token)
    assert delete.error_codes == ["FORBIDDEN"]


async def test_delete_is_refused_while_a_subscription_is_live(api: ApiClient) -> None:
    customer, sub = await _customer_with_history(api)
    refused = (await api.gql(DELETE, {"id": customer}, admin=True)).data["deleteCustomer"]
    assert [e["code"] for e in refused["userErrors"]] == ["CUSTOMER_HAS_LIVE_SUBSCRIPTION"]
    assert refused["customer"] is None
    still = (await api.admin(CUSTOMER, {"id": customer}))["customer"]
    assert (still["email"], still["deletedAt"]) == ("ann@example.com", None)

    # Canceling at the period end is not the end yet.
    ends = {"input": {"subscriptionId": sub["id"], "atPeriodEnd": True}}
    await api.admin(CANCEL, ends)
    again = (await api.gql(DELETE, {"id": customer}, admin=True)).data["deleteCustomer"]
    assert [e["code"] for e in again["userErrors"]] == ["CUSTOMER_HAS_LIVE_SUBSCRIPTION"]


async def test_delete_erases_personal_data_and_keeps_the_payments(api: ApiClient) -> None:
    customer, sub = await _customer_with_history(api)
    token = await session_for(api, customer)
    open_checkout = await checkout_ok(api, customerId=customer, planCode="extra", provider="manual")
    await api.admin(CANCEL, {"input": {"subscriptionId": sub["id"], "atPeriodEnd": False}})

    deleted = (await api.admin(DELETE, {"id": customer}))["deleteCustomer"]["customer"]
    assert deleted["deletedAt"] is not None
    assert deleted["externalId"] == f"deleted:{customer}"
    assert (deleted["email"], deleted["name"], deleted["metadata"]) == (None, None, None)
    assert deleted["country"] == "US"  # kept for tax records

    shown = (await api.admin(CUSTOMER, {"id": customer}))["customer"]
    assert shown == {k: deleted[k] for k in shown}
    assert shown["email"] is None and shown["deletedAt"] == deleted["deletedAt"]
    payments = (await api.admin(PAYMENTS, {"c": customer}))["payments"]["nodes"]
    assert [p["amount"] for p in payments] == [{"amount": "29.00", "currency": "USD"}]

    # Its session tokens are revoked, and no new one is issued; nothing more is sold to it.
    assert (await api.gql(CUSTOMER, {"id": customer}, token=token)).error_codes == [
        "UNAUTHENTICATED"
    ]
    session = await api.gql(
        "mutation($id: ID!) { createCustomerSession(customerId: $id) { token userErrors { code } } }",
        {"id": customer},
        admin=True,
    )
    assert [e["code"] for e in session.data["createCustomerSession"]["userErrors"]] == [
        "INVALID_STATE"
    ]
    export = (await api.admin(EXPORT, {"id": customer}))["exportCustomerData"]
    statuses = {c["id"]: c["status"] for c in export["checkouts"]}
    assert statuses[open_checkout["id"]] == "EXPIRED"
    assert export["sessions"] == []
    # The old externalId is free: upserting it makes a new customer.
    fresh = await make_customer(api, "usr_gone", email="new@example.com")
    assert fresh != customer
