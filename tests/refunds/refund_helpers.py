"""GraphQL documents and an event recorder shared by the refund tests."""

from __future__ import annotations

from typing import Any

from billing_gql import DomainEvent, hookimpl
from billing_gql.testing import ApiClient

REFUND_FIELDS = """id amount { amount currency } status reason origin providerRefundId
  reference failureReason creditNote { id number }
  payment { id status amount { amount currency } amountRefunded { amount currency } }"""

REFUND = f"""mutation($input: RefundPaymentInput!) {{ refundPayment(input: $input) {{
  refund {{ {REFUND_FIELDS} }} userErrors {{ field message code }} }} }}"""

PAYMENTS = f"""query($c: ID) {{ payments(customerId: $c) {{ nodes {{
  id status provider providerRef amount {{ amount currency }} amountRefunded {{ amount currency }}
  refunds {{ {REFUND_FIELDS} }} }} }} }}"""


class Recorder:
    """An observer plugin keeping every domain event emitted."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[DomainEvent]:
        return [e for e in self.events if e.type == kind]


async def refund(api: ApiClient, **input: Any) -> dict[str, Any]:
    """``refundPayment`` as admin: the payload (refund and userErrors)."""
    result = await api.gql(REFUND, {"input": input}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["refundPayment"]
    return payload


async def payments(api: ApiClient, customer_id: str | None = None) -> list[dict[str, Any]]:
    data = await api.admin(PAYMENTS, {"c": customer_id})
    nodes: list[dict[str, Any]] = data["payments"]["nodes"]
    return nodes


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["userErrors"]]
