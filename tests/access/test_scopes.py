"""Every operation declares the API key scope it needs, and keys are held to it."""

from __future__ import annotations

from access_helpers import make_key
from billing_helpers import db_rows, make_customer, make_plan
from strawberry.schema.schema_converter import GraphQLCoreConverter

from billing_gql.core.scopes import PUBLIC, Scope, effective_scopes
from billing_gql.graphql.schema import build_schema
from billing_gql.graphql.scopes import declared_scope
from billing_gql.graphql.types.entitlements import ENTITLEMENT_SCOPE
from billing_gql.graphql.types.usage import RECORD_USAGE_SCOPE
from billing_gql.testing import ApiClient, TestDatabase


def _root_fields() -> dict[tuple[str, str], object]:
    """Each root field of the schema as served (graphql-core's), with its declared scope."""
    schema = build_schema()._schema
    found = {}
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        assert root is not None
        for name, field in root.fields.items():
            definition = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
            found[(root.name, name)] = declared_scope(definition)
    return found


def test_every_operation_declares_a_scope() -> None:
    found = _root_fields()
    missing = sorted(f"{root}.{name}" for (root, name), scope in found.items() if scope is None)
    assert not missing, f"declare scope= on these operations (graphql.typed): {missing}"
    assert len(found) > 40  # the walk saw the whole schema


def test_the_walk_fails_on_an_operation_without_a_scope() -> None:
    import strawberry

    from billing_gql.graphql import typed

    @strawberry.type
    class Query:
        @typed.field(scope=Scope.READ)
        def declared(self) -> int:
            return 1

        @strawberry.field
        def forgotten(self) -> int:
            return 2

    schema = strawberry.Schema(query=Query)
    definition = schema.get_type_by_name("Query")
    scopes = {f.name: declared_scope(f) for f in definition.fields}  # type: ignore[union-attr]
    assert scopes == {"declared": Scope.READ, "forgotten": None}


def test_the_declared_scopes_of_key_operations() -> None:
    found = _root_fields()
    assert found[("Query", "plans")] is PUBLIC
    assert found[("Query", "subscriptions")] is Scope.READ
    assert found[("Query", "entitlement")] is Scope.ENTITLEMENTS_READ is ENTITLEMENT_SCOPE
    assert found[("Mutation", "recordUsage")] is Scope.USAGE_WRITE is RECORD_USAGE_SCOPE
    assert found[("Mutation", "createWebhookEndpoint")] is Scope.WEBHOOKS_MANAGE
    assert found[("Mutation", "createPlan")] is Scope.ADMIN
    assert found[("Mutation", "createApiKey")] is Scope.ADMIN
    assert found[("Query", "auditLog")] is Scope.ADMIN
    assert found[("SubscriptionRoot", "checkoutUpdated")] is Scope.READ


def test_scope_implications() -> None:
    assert effective_scopes(["admin"]) == frozenset(Scope)
    assert effective_scopes(["read"]) == {Scope.READ, Scope.ENTITLEMENTS_READ}
    assert effective_scopes(["usage:write", "nonsense"]) == {Scope.USAGE_WRITE}


ENTITLEMENT = (
    'query($c: String!) { entitlement(externalCustomerId: $c, feature: "seats") { enabled limit } }'
)
RECORD = """mutation($input: RecordUsageInput!) { recordUsage(input: $input) {
  accepted userErrors { code } } }"""


async def test_keys_reach_only_what_their_scopes_allow(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    await make_plan(api, "pro")
    await make_customer(api, "usr_1")
    await api.admin(
        'mutation { createMeter(input: {code: "calls", name: "Calls", aggregation: COUNT}) '
        "{ userErrors { code } } }"
    )
    _, reader = await make_key(api, "READ")
    _, checker = await make_key(api, "ENTITLEMENTS_READ")
    _, writer = await make_key(api, "USAGE_WRITE")

    # read: every query, no mutation.
    ok = await api.gql(
        '{ subscriptions { nodes { id } } customer(externalId: "usr_1") { id } }', token=reader
    )
    assert ok.ok()["customer"]["id"]
    refused = await api.gql(
        'mutation { archivePlan(code: "pro") { userErrors { code } } }', token=reader
    )
    assert refused.error_codes == ["FORBIDDEN"]
    assert "'admin' scope" in refused.errors[0]["message"]
    assert refused.data == {"archivePlan": None} or refused.data is None
    assert (await api.gql(ENTITLEMENT, {"c": "usr_1"}, token=reader)).ok()  # read implies it

    # entitlements:read: the entitlement check (its fast path too), nothing else.
    assert (await api.gql(ENTITLEMENT, {"c": "usr_1"}, token=checker)).ok() == {
        "entitlement": {"enabled": False, "limit": "0"}
    }
    denied = await api.gql("{ subscriptions { nodes { id } } }", token=checker)
    assert denied.error_codes == ["FORBIDDEN"]
    events = {"events": [{"id": "e1", "meter": "calls", "externalCustomerId": "usr_1"}]}
    denied = await api.gql(RECORD, {"input": events}, token=checker)
    assert denied.error_codes == ["FORBIDDEN"]
    # The bulk path did not store the batch before the refusal.
    assert await db_rows(clean_database.url, "SELECT event_id FROM usage_events") == []

    # usage:write: recordUsage only.
    assert (await api.gql(RECORD, {"input": events}, token=writer)).ok()["recordUsage"] == {
        "accepted": 1,
        "userErrors": [],
    }
    denied = await api.gql(ENTITLEMENT, {"c": "usr_1"}, token=writer)
    assert denied.error_codes == ["FORBIDDEN"]
    assert "'entitlements:read' scope" in denied.errors[0]["message"]

    # Public fields answer every key, as they answer anyone.
    for key in (reader, checker, writer):
        assert (await api.gql("{ plans { code } }", token=key)).ok() == {"plans": [{"code": "pro"}]}


async def test_webhooks_manage_and_the_bootstrap_key(api: ApiClient) -> None:
    _, manager = await make_key(api, "WEBHOOKS_MANAGE")
    delete = 'mutation { deleteWebhookEndpoint(id: "00000000-0000-0000-0000-000000000000") { userErrors { code } } }'
    answer = await api.gql(delete, token=manager)
    assert answer.data == {"deleteWebhookEndpoint": {"userErrors": [{"code": "NOT_FOUND"}]}}
    assert (await api.gql("{ webhookEndpoints { id } }", token=manager)).ok() == {
        "webhookEndpoints": []
    }
    assert (await api.gql("{ meters { code } }", token=manager)).error_codes == ["FORBIDDEN"]
    # BILLING_GQL_ADMIN_KEYS still bootstraps: admin, everything.
    assert (await api.gql(delete, admin=True)).data["deleteWebhookEndpoint"]["userErrors"]
    assert (await api.gql("{ apiKeys { id } }", admin=True)).ok()["apiKeys"]


async def test_customer_tokens_keep_their_rules(api: ApiClient) -> None:
    customer = await make_customer(api, "usr_1")
    other = await make_customer(api, "usr_2")
    token = (
        await api.admin(
            "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }",
            {"id": customer},
        )
    )["createCustomerSession"]["token"]
    own = await api.gql(
        '{ viewer { externalId } entitlements(externalCustomerId: "usr_1") { feature } }',
        token=token,
    )
    assert own.ok()["viewer"] == {"externalId": "usr_1"}
    theirs = await api.gql(
        "query($id: ID!) { customer(id: $id) { id } }", {"id": other}, token=token
    )
    assert theirs.error_codes == ["FORBIDDEN"]
    assert (await api.gql("{ apiKeys { id } }", token=token)).error_codes == ["FORBIDDEN"]
