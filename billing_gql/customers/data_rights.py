"""Data rights: everything held about a customer (:func:`export_customer_data`) and erasing its
personal data while the financial records stay, anonymized (:func:`delete_customer`).

Personal data is the customer row's identifying columns (:data:`PERSONAL_COLUMNS`: email, name,
metadata, and addresses and tax ids where the table has such columns), its ``externalId``
(your app's id for the person; replaced by ``deleted:<id>``) and its session tokens. What the
law requires to be kept stays, pointing at the anonymized row: payments, checkouts,
subscriptions, invoice items, usage, and the provider's customer id (a pseudonymous id at the
provider, needed to reconcile what it reports). Country and currency stay: tax and accounting.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.core.customers import Customer, customer_from_row
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError
from billing_gql.events.notify import SESSION_CHANNEL
from billing_gql.store.checkouts_sql import expire_customer_checkouts

__all__ = ["PERSONAL_COLUMNS", "delete_customer", "export_customer_data"]

PERSONAL_COLUMNS = (
    "email",
    "name",
    "metadata",
    "phone",
    "address",
    "billing_address",
    "shipping_address",
    "tax_id",
    "tax_ids",
)
"""Columns of ``customers`` erased by :func:`delete_customer`, those the table has."""

_ENDED = ("CANCELED", "EXPIRED")


def _plain(value: Any) -> Any:
    """A database value as JSON holds it (ids and times as strings, amounts exact)."""
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value  # JSON columns arrive decoded (the pool's codecs)


def _rows(rows: list[asyncpg.Record], *, leave: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items() if k not in leave} for r in rows]


async def export_customer_data(db: Database, customer_id: UUID | None) -> dict[str, Any] | None:
    """Everything held about the customer, as JSON; ``None`` when there is no such customer."""
    if customer_id is None:
        return None
    async with db.transaction() as conn:
        # One snapshot: every part is read at the same moment.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        customer = await conn.fetchrow("SELECT * FROM customers WHERE id = $1", customer_id)
        if customer is None:
            return None
        one = (customer_id,)
        subs = await conn.fetch(
            "SELECT * FROM subscriptions WHERE customer_id = $1 ORDER BY created_at", *one
        )
        checkouts = await conn.fetch(
            "SELECT * FROM checkouts WHERE customer_id = $1 ORDER BY created_at", *one
        )
        sub_ids = [r["id"] for r in subs]
        data: dict[str, Any] = {
            "customer": _rows([customer])[0],
            "providerAccounts": _rows(
                await conn.fetch(
                    "SELECT provider, provider_customer_id, created_at "
                    "FROM customer_provider_accounts WHERE customer_id = $1",
                    *one,
                )
            ),
            "subscriptions": _rows(subs),
            "checkouts": _rows(checkouts, leave=("session_claim", "session_claimed_at")),
            "payments": _rows(
                await conn.fetch(
                    "SELECT * FROM payments WHERE customer_id = $1 ORDER BY created_at", *one
                )
            ),
            "invoiceItems": _rows(
                await conn.fetch(
                    "SELECT * FROM invoice_items WHERE subscription_id = ANY($1::uuid[]) "
                    "ORDER BY created_at",
                    sub_ids,
                )
            ),
            "usage": _rows(
                await conn.fetch(
                    "SELECT m.code AS meter, count(*) AS events, sum(u.value) AS total, "
                    "min(u.ts) AS first, max(u.ts) AS last FROM usage_events u "
                    "JOIN meters m ON m.id = u.meter_id WHERE u.customer_id = $1 "
                    "GROUP BY m.code ORDER BY m.code",
                    *one,
                )
            ),
            "grants": _rows(
                await conn.fetch("SELECT * FROM provider_grants WHERE customer_id = $1", *one)
            ),
            "planAccess": _rows(
                await conn.fetch(
                    "SELECT p.code AS plan, a.created_at FROM plan_access a "
                    "JOIN plans p ON p.id = a.plan_id WHERE a.customer_id = $1",
                    *one,
                )
            ),
            "trials": _rows(
                await conn.fetch(
                    "SELECT p.code AS plan, t.created_at FROM trial_redemptions t "
                    "JOIN plans p ON p.id = t.plan_id WHERE t.customer_id = $1",
                    *one,
                )
            ),
            # Tokens themselves are never stored; their hashes are not the customer's data.
            "sessions": _rows(
                await conn.fetch(
                    "SELECT id, created_at, expires_at FROM customer_sessions "
                    "WHERE customer_id = $1 ORDER BY created_at",
                    *one,
                )
            ),
        }
        data["webhookDeliveries"] = await _deliveries(conn, customer, subs, checkouts)
    return data


async def _deliveries(
    conn: asyncpg.Connection,
    customer: asyncpg.Record,
    subs: list[asyncpg.Record],
    checkouts: list[asyncpg.Record],
) -> list[dict[str, Any]]:
    """Provider deliveries whose body names the customer: its id, its checkouts' and
    subscriptions' ids (ours and the provider's), its provider customer ids, its bank transfer
    references."""
    needles = {str(customer["id"])}
    needles |= {str(r["id"]) for r in [*subs, *checkouts]}
    needles |= {r["provider_subscription_id"] for r in subs if r["provider_subscription_id"]}
    needles |= {r["provider_checkout_id"] for r in checkouts if r["provider_checkout_id"]}
    needles |= {r["payment_reference"] for r in checkouts if r["payment_reference"]}
    accounts = await conn.fetch(
        "SELECT provider_customer_id FROM customer_provider_accounts WHERE customer_id = $1",
        customer["id"],
    )
    needles |= {r["provider_customer_id"] for r in accounts}
    rows = await conn.fetch(
        "SELECT id, provider, event_id, event_type, status, received_at, applied_at, body "
        "FROM webhook_deliveries d WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) n "
        "WHERE position(convert_to(n, 'UTF8') in d.body) > 0) ORDER BY received_at",
        sorted(needles),
    )
    return _rows(rows)


async def delete_customer(db: Database, customer_id: UUID | None, now: datetime) -> Customer:
    """Erase the customer's personal data, keep its financial records (anonymized), revoke
    its sessions and expire its open checkouts, in one transaction.

    :raises UserInputError: NOT_FOUND; CUSTOMER_HAS_LIVE_SUBSCRIPTION while a subscription of
        the customer has not ended (cancel it first; one canceling at its period end counts
        until then).
    """
    async with db.transaction() as conn:
        row = (
            await conn.fetchrow("SELECT * FROM customers WHERE id = $1 FOR UPDATE", customer_id)
            if customer_id is not None
            else None
        )
        if row is None:
            raise UserInputError("NOT_FOUND", "no such customer", ["customerId"])
        live = await conn.fetchval(
            "SELECT count(*) FROM subscriptions WHERE customer_id = $1 "
            "AND NOT (status = ANY($2::text[]))",
            customer_id,
            list(_ENDED),
        )
        if live:
            raise UserInputError(
                "CUSTOMER_HAS_LIVE_SUBSCRIPTION",
                f"the customer has {live} subscription(s) that have not ended; cancel them first",
                ["customerId"],
            )
        present = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'customers'"
            )
        }
        erase = ", ".join(f"{c} = NULL" for c in PERSONAL_COLUMNS if c in present)
        row = await conn.fetchrow(
            f"UPDATE customers SET {erase}, external_id = 'deleted:' || id::text, "  # noqa: S608
            "deleted_at = COALESCE(deleted_at, $2), updated_at = $2 WHERE id = $1 RETURNING *",
            customer_id,
            now,
        )
        await conn.execute("DELETE FROM customer_sessions WHERE customer_id = $1", customer_id)
        await conn.execute("SELECT pg_notify($1, $2)", SESSION_CHANNEL, str(customer_id))
        await expire_customer_checkouts(conn, customer_id, now)
    return customer_from_row(row)
