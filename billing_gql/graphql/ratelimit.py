"""Rate limits on ``/graphql`` (docs/api.md#rate-limits): which bucket a request counts in,
and the 429 answer.

A key counts in its own bucket, a customer session token in its own, anything else (no
credential, a bad one) in its client address's. Keys are unlimited unless
``BILLING_GQL_RATE_LIMIT`` is set; tokens and addresses have a generous default. An operation
made only of entitlement checks is never counted unless
``BILLING_GQL_RATE_LIMIT_ENTITLEMENTS=1``. The counter is one statement in PostgreSQL, shared by
every server process (:mod:`billing_gql.access.rate_limits`).
"""

from __future__ import annotations

import logging

from graphql import FieldNode, OperationDefinitionNode

from billing_gql.access.rate_limits import Decision, hit
from billing_gql.context import ServiceContext
from billing_gql.graphql.context import Viewer
from billing_gql.graphql.errors import GraphQLErrorCode

__all__ = ["RATE_LIMITED", "check_rate_limit", "limited_body"]

log = logging.getLogger(__name__)

RATE_LIMITED = GraphQLErrorCode.RATE_LIMITED.value
ENTITLEMENT_FIELDS = frozenset({"entitlement", "entitlements", "__typename"})


def _entitlement_check(operation: OperationDefinitionNode) -> bool:
    selections = operation.selection_set.selections
    return all(
        isinstance(s, FieldNode) and s.name.value in ENTITLEMENT_FIELDS for s in selections
    ) and any(isinstance(s, FieldNode) and s.name.value != "__typename" for s in selections)


async def check_rate_limit(
    runtime: ServiceContext,
    viewer: Viewer,
    address: str | None,
    operation: OperationDefinitionNode,
) -> Decision | None:
    """Count the request; the refusal when it is over its limit, else ``None``."""
    limits = runtime.settings.limits
    limit = limits.for_principal(viewer.kind in ("admin", "key"))
    if limit is None or (not limits.limit_entitlements and _entitlement_check(operation)):
        return None
    bucket = viewer.bucket or f"addr:{address or 'unknown'}"
    try:
        decision = await hit(runtime.db, bucket, limit)
    except Exception:
        # The counter is a guard, not the service: when it cannot count, the request runs
        # (and meets the same database problem as a GraphQL error, not a bare 500).
        log.exception("could not count a request against its rate limit; letting it through")
        return None
    return None if decision.allowed else decision


def limited_body(decision: Decision) -> dict[str, object]:
    """The GraphQL-shaped error body of a 429."""
    return {
        "errors": [
            {
                "message": f"rate limit exceeded: retry in {decision.retry_after} s",
                "extensions": {"code": RATE_LIMITED, "retryAfter": decision.retry_after},
            }
        ]
    }
